"""The boundary search: extract_fingerprints(), its ExtractConfig, and the torchattacks-style IPGuard class."""
from .api import IncompleteFingerprintsWarning, extract_fingerprints, run_extraction
from .acceptance import accept
from .attack import IPGuard
from .config import AMP_DTYPES, ExtractConfig

__all__ = ["AMP_DTYPES", "ExtractConfig", "IPGuard", "IncompleteFingerprintsWarning", "accept", "extract_fingerprints",
           "run_extraction"]
