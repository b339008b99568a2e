"""ipguard_fast: fast IPGuard fingerprinting of image classifiers.

    fps = ipguard_fast.extract_fingerprints(model, 100, k=10, input_shape=(3, 32, 32))
    fps.save("owner.fingerprints.safetensors")
    verdict = ipguard_fast.verify(suspect, ipguard_fast.FingerprintSet.load("owner.fingerprints.safetensors"))
"""

__version__ = "0.1.0"

from . import ops, reference
from ._extension import has_extension
from .evaluation.pipeline import evaluate
from .fingerprints import FingerprintFileError, FingerprintSet
from .search import IncompleteFingerprintsWarning, IPGuard, extract_fingerprints
from .verify import Verdict, calibrate_threshold, matching_rate, verify
from .zoo import Normalized

__all__ = [
    "__version__", "has_extension", "ops", "reference",
    "extract_fingerprints", "IPGuard", "IncompleteFingerprintsWarning",
    "FingerprintSet", "FingerprintFileError",
    "matching_rate", "verify", "Verdict", "calibrate_threshold",
    "evaluate", "Normalized",
]
