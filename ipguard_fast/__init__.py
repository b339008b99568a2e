"""ipguard_fast: fast IPGuard fingerprinting of image classifiers."""

__version__ = "0.1.0"

from ._extension import has_extension
from . import ops, reference

__all__ = ["__version__", "has_extension", "ops", "reference"]
