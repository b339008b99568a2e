"""The boundary search: extract_fingerprints() and the torchattacks-style IPGuard class."""
from .api import IncompleteFingerprintsWarning, extract_fingerprints, frozen
from .attack import IPGuard

__all__ = ["extract_fingerprints", "IPGuard", "IncompleteFingerprintsWarning", "frozen"]
