"""benchmarks/three_beds.py with a generic conv net (models.generic.GenericCNN) among
protect's negatives: two selecting kinds (Adam without, SGD with augmentation, trained
until they match the owner, as the owner's architecture is) and the same two trained to
convergence as threshold negatives. Every argument is three_beds.py's."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import three_beds  # noqa: E402

from ipguard_fast.attacks import Independent  # noqa: E402
from ipguard_fast.selection import recipe as recipe_module  # noqa: E402

_original = three_beds._recipe


def _with_generic_cnn(*args, **kwargs):
    r = recipe_module
    extra = (r._negative("generic-cnn", r._ADAM, False), r._negative("generic-cnn", r._SGD, True))
    extra += tuple(r.ReferenceKind(f"independent-generic-cnn-{opt['optimizer']}{'-aug' if aug else ''}-converged",
                                   "negative", "independent",
                                   Independent("generic-cnn", epochs=r._CAP, augment=aug, until_converged=True, **opt),
                                   threshold_only=True)
                   for opt, aug in ((r._ADAM, False), (r._SGD, True)))
    return _original(*args, **kwargs) + extra


three_beds._recipe = _with_generic_cnn

if __name__ == "__main__":
    sys.exit(three_beds.main())
