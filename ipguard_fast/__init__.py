"""ipguard_fast: fast IPGuard fingerprinting of image classifiers.

    fps = ipguard_fast.extract_fingerprints(model, 100, k=10, input_shape=(3, 32, 32))
    fps = ipguard_fast.calibrate_fingerprints(fps, independent_models)   # a threshold: verify needs one
    fps.save("owner.fingerprints.safetensors")
    verdict = ipguard_fast.verify(suspect, ipguard_fast.FingerprintSet.load("owner.fingerprints.safetensors"))

(or ``ipguard_fast.protect``, which selects the points and calibrates the threshold itself;
``ipguard_fast.protect_parts`` adds the student part, for ``verify_parts``).

Importing the package loads the core only (ops, search, fingerprints, verification and
model I/O; torch, numpy and safetensors). The evaluation -- ``evaluate`` and its plots,
which need the ``eval`` extra (scikit-learn, matplotlib) -- and fingerprint selection
(``select_fingerprints``, ``protect``, ``protect_parts``, ``run_protect``, ``calibrate_fingerprints`` and their
configs) load on first use.
"""

from ._startup import quiet_interrupts_while_starting

quiet_interrupts_while_starting()   # first: Ctrl-C while the `ipguard` command imports torch is one line, exit 130

from . import ops, reference
from ._version import __version__
from ._extension import has_extension
from .fingerprints import FingerprintFileError, FingerprintSet
from .io import calibrate_threshold, load_model, load_suspect, matching_rate, verify, verify_parts
from .nn import Normalized
from .search import ExtractConfig, IncompleteFingerprintsWarning, IPGuard, extract_fingerprints
from .verdicts import PartsVerdict, Verdict

__all__ = [
    "__version__", "has_extension", "ops", "reference",
    "extract_fingerprints", "ExtractConfig", "IPGuard", "IncompleteFingerprintsWarning",
    "FingerprintSet", "FingerprintFileError",
    "matching_rate", "verify", "Verdict", "verify_parts", "PartsVerdict", "calibrate_threshold", "load_model", "load_suspect",
    "evaluate", "run_evaluation", "EvaluationConfig", "select_fingerprints", "protect", "protect_parts",
    "run_protect", "ProtectConfig", "calibrate_fingerprints", "Normalized",
]

# name -> (module, attribute), imported on first use so `import ipguard_fast` stays light.
_LAZY = {"evaluate": ("ipguard_fast.evaluation.pipeline", "evaluate"),
         "run_evaluation": ("ipguard_fast.evaluation.pipeline", "run_evaluation"),
         "EvaluationConfig": ("ipguard_fast.evaluation.config", "EvaluationConfig"),
         "select_fingerprints": ("ipguard_fast.selection.select", "select_fingerprints"),
         "protect": ("ipguard_fast.selection.protect", "protect"),
         "protect_parts": ("ipguard_fast.selection.protect", "protect_parts"),
         "run_protect": ("ipguard_fast.selection.protect", "run_protect"),
         "ProtectConfig": ("ipguard_fast.selection.config", "ProtectConfig"),
         "calibrate_fingerprints": ("ipguard_fast.selection.calibration", "calibrate_fingerprints")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ipguard_fast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
