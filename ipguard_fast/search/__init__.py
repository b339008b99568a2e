"""The boundary search: extract_fingerprints(), its ExtractConfig, and the torchattacks-style IPGuard class."""
from .api import Extraction, IncompleteFingerprintsWarning, extract_fingerprints, run_extraction
from .acceptance import accept, owner_label_margin
from .attack import IPGuard
from .config import AMP_DTYPES, ExtractConfig
from .engine import SearchStats

__all__ = ["AMP_DTYPES", "ExtractConfig", "Extraction", "IPGuard", "IncompleteFingerprintsWarning", "SearchStats",
           "accept", "extract_fingerprints", "owner_label_margin", "run_extraction"]
