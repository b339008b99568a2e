"""Fingerprint selection: keep the IPGuard fingerprints that copies of the owner keep and
independent models do not, judged by reference models; and protect(), the owner's
whole job (references, pool, selection, threshold) in one call.

Selection is a stage on top of extract_fingerprints: select_fingerprints keeps the
pool's own points, unchanged, and plain IPGuard is untouched. protect() then refines
the top candidates against its references by default (refine.py; refine=False keeps
the pool's points), and says so in meta["selection"]["refined"].
"""
from .cache import CacheLocation
from .pool import extract_pool, k_grid, median_margin, merge_pools
from .config import ProtectConfig
from .plan import Plan
from .protect import ProtectResult, plan_protect, protect, protect_parts, run_protect
from .refine import RefineConfig, refine_points
from .recipe import RECIPE, ReferenceKind
from .references import protect_seed
from .report import ProtectReport
from .scores import SCORES, reference_outputs, separation_scores
from .select import select_fingerprints, top_n

__all__ = ["RECIPE", "SCORES", "CacheLocation", "Plan", "ProtectConfig", "ProtectReport", "ProtectResult",
           "ReferenceKind", "RefineConfig", "extract_pool", "k_grid", "median_margin", "merge_pools", "plan_protect",
           "protect", "protect_parts", "protect_seed", "reference_outputs", "run_protect", "refine_points", "select_fingerprints",
           "separation_scores", "top_n"]
