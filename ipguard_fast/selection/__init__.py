"""Fingerprint selection: keep the IPGuard fingerprints that copies of the owner keep and
independent models do not, judged by reference models; and protect(), the owner's
whole job (references, pool, selection, threshold) in one call.

Selection is a stage on top of extract_fingerprints: the fingerprints it keeps are
the pool's own, unchanged, and plain IPGuard is untouched.
"""
from .pool import extract_pool, k_grid, median_margin, merge_pools
from .protect import protect
from .references import protect_seed
from .scores import SCORES, reference_outputs, separation_scores
from .select import select_fingerprints, top_n

__all__ = ["SCORES", "extract_pool", "k_grid", "median_margin", "merge_pools", "protect", "protect_seed",
           "reference_outputs", "select_fingerprints", "separation_scores", "top_n"]
