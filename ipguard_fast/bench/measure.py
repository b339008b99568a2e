"""Measurement helpers of the benchmark: device-honest timers, the bare-model floor, peak
memory, and a description of the machine."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import threading
import time

import torch

from .._extension import has_extension
from .._version import __version__
from ..modules import frozen

__all__ = ["PeakMemory", "env", "machine_info", "make_floor", "median_floor", "slug", "step_stats", "timed"]


def timed(fn, device) -> float:
    """Seconds one call of fn takes on the device (CUDA events, or perf_counter on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_floor(model, input_shape, batch, num_classes, device, amp_dtype=None, channels_last=False):
    """The bare model's forward + torch.autograd.grad w.r.t. the input (weights frozen by the caller)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(1)).to(device)
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    g = torch.randn(batch, num_classes, generator=torch.Generator().manual_seed(2)).to(device)

    def floor():
        with torch.enable_grad():
            with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()):
                logits = model(x)
            torch.autograd.grad(logits, x, g.to(logits.dtype))

    return floor


def median_floor(model, input_shape, batch, num_classes, device, reps, warmup=2, **kw) -> float:
    with frozen(model):
        floor = make_floor(model, input_shape, batch, num_classes, device, **kw)
        for _ in range(warmup):
            floor()
        return statistics.median(timed(floor, device) for _ in range(reps))


def _malloc_in_use():
    """glibc's bytes in use (mallinfo2: arena chunks in use + mmapped blocks), or None."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = Mallinfo2

    def in_use() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return in_use


class PeakMemory:
    """Peak memory above the level at entry. CUDA: torch.cuda.max_memory_allocated. CPU:
    bytes malloc'd (glibc mallinfo2; PyTorch's CPU tensors come from malloc), else the
    resident set size, sampled every 5 ms by a thread (ru_maxrss is a process-lifetime
    high-water mark, useless for one method; RSS keeps freed heap, so later methods
    would read 0)."""

    _in_use = None

    def __init__(self, device):
        self.device = device
        self.bytes = None
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated above the allocation at the method's start"
            return
        if PeakMemory._in_use is None:
            PeakMemory._in_use = _malloc_in_use() or False
        if PeakMemory._in_use:
            self.kind = ("CPU: peak bytes malloc'd (glibc mallinfo2, sampled every 5 ms) above the level at "
                         "the method's start")
            self._read = PeakMemory._in_use
        else:
            self.kind = "CPU: peak resident set size (sampled every 5 ms) above its value at the method's start"
            self._read = self._rss

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._read())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = self._read()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.bytes = max(self._peak, self._read()) - self._base
        return False

    def record(self) -> dict:
        return {"bytes": self.bytes, "kind": self.kind}


@contextlib.contextmanager
def env(variables: dict[str, str]):
    """The environment switches of a mode set (IPGUARD_FAST_FORCE_REFERENCE) for the
    duration, every other one unset, all restored afterwards."""
    names = ("IPGUARD_FAST_FORCE_REFERENCE", *variables)
    old = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def step_stats(steps: torch.Tensor) -> dict | None:
    if steps.numel() == 0:
        return None
    s = steps.double()
    return {"mean": float(s.mean()), "median": float(s.median()), "p95": float(torch.quantile(s, 0.95)),
            "max": float(s.max())}


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as lines:
        for line in lines:
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "hostname": platform.node(), "device": str(device), "compiled_ops": has_extension(),
            "ipguard_fast": __version__}
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        # The search (engine and peers alike) runs with these; acceptance always turns TF32 off.
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


