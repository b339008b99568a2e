"""Builds ipguard_fast and its compiled ops (ipguard_fast._C).

CPU kernels are always built. CUDA kernels are built when torch sees a GPU or
when FORCE_CUDA=1 (CI sets it so every run compiles the CUDA code too). With no
GPU visible, TORCH_CUDA_ARCH_LIST defaults to 9.0 (Hopper). Torch must already be
installed (`pip install --no-build-isolation .`): the build never downloads it.

On x86-64, the sources in csrc/cpu/avx2/ are compiled on their own with AVX2 flags
(setuptools gives one extension one set of flags, so _BuildExt compiles them first and
links their objects in); the library picks them at run time by the CPU's features.
"""
import glob
import os
import platform

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - a setup-time message, not a code path
    raise SystemExit(
        "ipguard_fast needs PyTorch installed first, then "
        "`pip install --no-build-isolation .` (see README.md)"
    ) from exc

ROOT = os.path.dirname(os.path.abspath(__file__))
# Compiled with these flags on top of the extension's own (CMakeLists.txt passes the same).
AVX2_FLAGS = ["-mavx2", "-mf16c"]


def _avx2_sources():
    """The AVX2 kernels, where the target is x86-64 and the compiler takes GCC's flags."""
    if platform.machine().lower() not in ("x86_64", "amd64") or os.name == "nt":
        return []
    return sorted(glob.glob(os.path.join("csrc", "cpu", "avx2", "*.cpp")))


class _BuildExt(BuildExtension):
    """BuildExtension that first compiles each extension's `avx2_sources` with AVX2_FLAGS."""

    def build_extension(self, ext):
        sources = getattr(ext, "avx2_sources", [])
        if sources:
            args = dict(ext.extra_compile_args)
            args["cxx"] = list(args["cxx"]) + AVX2_FLAGS
            objects = self.compiler.compile(
                sources, output_dir=os.path.join(self.build_temp, "avx2"), macros=ext.define_macros,
                include_dirs=ext.include_dirs, extra_postargs=args, depends=ext.depends)
            ext.extra_objects = [o for o in ext.extra_objects if o not in objects] + objects
        super().build_extension(ext)


def _extension():
    ext = _base_extension()
    ext.avx2_sources = _avx2_sources()
    if ext.avx2_sources:
        ext.define_macros.append(("IPGUARD_CPU_AVX2_KERNELS", "1"))
    # Rebuild when a header or an AVX2 source changes (setuptools only watches `sources`).
    ext.depends = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)) + ext.avx2_sources
    return ext


def _base_extension():
    sources = [os.path.join("csrc", "ipguard.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fno-math-errno lets GCC vectorise sqrtf in the Adam loop (nothing here reads errno).
    # -fopenmp: at::parallel_for is a header template that only runs in parallel when the
    # extension itself is compiled with OpenMP (measured: without it the CPU kernels ran
    # single-threaded and lost to the reference on a 16-core machine).
    cxx_flags = ["-O3", "-fno-math-errno", "-fopenmp", "-DIPGUARD_PYTHON_MODULE"]
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = (torch.cuda.is_available() or force_cuda) and CUDA_HOME is not None
    if force_cuda and CUDA_HOME is None:
        raise SystemExit("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME (e.g. /usr/local/cuda)")
    if not with_cuda:
        return CppExtension("ipguard_fast._C", sources, extra_compile_args={"cxx": cxx_flags},
                            extra_link_args=["-fopenmp"])
    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    # Torch's CUDA headers include cusparse.h, cublas.h...: a minimal CUDA toolkit
    # may lack them, but the nvidia-* wheels installed beside torch ship them.
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    wheel_includes = sorted(glob.glob(os.path.join(site_packages, "nvidia", "*", "include")))
    return CUDAExtension(
        "ipguard_fast._C",
        sources,
        include_dirs=wheel_includes,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-DIPGUARD_PYTHON_MODULE"]},
        extra_link_args=["-fopenmp"],
    )


def _extras():
    eval_ = ["scikit-learn", "matplotlib"]        # the evaluation, its plots, the digits demo
    onnx = ["onnx", "onnxruntime"]                # ONNX export and ONNX suspects
    remote = ["httpx>=0.27", "uvicorn>=0.30"]     # the label-only HTTP API: client and server
    bench = ["torchattacks"] + eval_              # the benchmark's CW peer, digits-trained models, charts
    timm = ["timm"]                               # timm architectures by name
    test = ["pytest", "pytest-benchmark", "expecttest", "cmake>=3.30"]
    return {"eval": eval_, "onnx": onnx, "remote": remote, "bench": bench, "timm": timm,
            "all": sorted(set(eval_ + onnx + remote + bench + timm)),
            "test": sorted(set(test + eval_ + onnx + remote + bench))}


def _version():
    scope = {}
    exec(open(os.path.join(ROOT, "ipguard_fast", "_version.py")).read(), scope)
    return scope["__version__"]


setup(
    name="ipguard_fast",
    version=_version(),
    description="Fast IPGuard fingerprinting of image classifiers: fused C++/CUDA boundary search",
    packages=find_packages(include=["ipguard_fast", "ipguard_fast.*"]),
    python_requires=">=3.10",
    # The core (ops, search, fingerprints, verification, model I/O) needs only these.
    install_requires=["torch", "numpy", "safetensors", "tqdm"],
    extras_require=_extras(),
    entry_points={"console_scripts": ["ipguard=ipguard_fast.cli:main"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExt},
    zip_safe=False,
)
