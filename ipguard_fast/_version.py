"""The library's version, recorded in every fingerprint file (kept here so any layer can read it)."""
__version__ = "0.2.0"
