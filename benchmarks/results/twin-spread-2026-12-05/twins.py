"""How many points innocents trained exactly like a bed's closest innocent keep, seed after seed.

The three beds judge one draw of each innocent. This trains the draw's recipe again at
eight more seeds (1000-1007) and asks how many of protect's selected points each keeps,
against the file's stored threshold: the chance that such an innocent is accused, not
one coin. It trains them on all of the owner's data (as the beds' innocents) and on the
90 % split protect's negatives train on, and protect's own converged threshold recipes
beside them.

    python benchmarks/results/twin-spread-2026-12-05/twins.py foreign 1 OUT.json [--converged-selection]
    python benchmarks/results/twin-spread-2026-12-05/twins.py hard 1 OUT.json [--converged-selection]
    python benchmarks/results/twin-spread-2026-12-05/twins.py foreign 1 OUT.json --owner-recipe

foreign: the foreign owner (owner's half of the digits, FOREIGN_OWNER_RECIPE) and its
bed's like-owner recipe on the owner's architecture; hard: the demo owner and the hard
bed's 64-wide CNN trained like it (5 epochs of Adam at 3e-3). protect as three_beds.py
runs it (default recipe, held-out mistakes), with --converged-selection and
--owner-recipe (protect given the owner's training recipe, `train_recipe=`) as there.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # benchmarks/, for three_beds' recipe
from three_beds import _recipe  # noqa: E402

from ipguard_fast.attacks import AttackContext, Independent, run_attack  # noqa: E402
from ipguard_fast.data import load_digits  # noqa: E402
from ipguard_fast.evaluation.beds import owner_half  # noqa: E402
from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE, FOREIGN_RECIPES  # noqa: E402
from ipguard_fast.models import DigitsCNN, train_digits_model  # noqa: E402
from ipguard_fast.nn import seeded  # noqa: E402
from ipguard_fast.selection import run_protect  # noqa: E402
from ipguard_fast.selection.config import ProtectConfig  # noqa: E402
from ipguard_fast.selection.holdout import holdout_split  # noqa: E402
from ipguard_fast.selection.recipe import THRESHOLD_NEGATIVES  # noqa: E402
from ipguard_fast.models.digits import DIGITS_EPOCHS, DIGITS_LR  # noqa: E402
from ipguard_fast.train import TrainRecipe, train_model  # noqa: E402

SEEDS = range(1000, 1008)
# protect's converged threshold recipes on the owner's architecture, as its recipe defines them
PROTECT_CONVERGED = {k.kind.replace("independent-", "protect-"): k.settings for k in THRESHOLD_NEGATIVES
                     if k.settings.arch == "owner" and not k.kind.endswith("-twin1")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bed", choices=("foreign", "hard"))
    p.add_argument("seed", type=int)
    p.add_argument("out")
    p.add_argument("--converged-selection", action="store_true")
    p.add_argument("--owner-recipe", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    train, test = load_digits("train"), load_digits("test")
    if args.bed == "foreign":
        data = owner_half(train, args.seed)
        owner = train_model(seeded(DigitsCNN, args.seed), data, FOREIGN_OWNER_RECIPE, seed=args.seed)
        like_owner = Independent(DigitsCNN, **FOREIGN_RECIPES["sgd-aug-e40"])
        owner_recipe = FOREIGN_OWNER_RECIPE
    else:
        data = train
        owner = train_digits_model("cnn", seed=args.seed)
        like_owner = Independent(lambda: DigitsCNN(width=64), epochs=DIGITS_EPOCHS, lr=DIGITS_LR)
        owner_recipe = TrainRecipe(epochs=DIGITS_EPOCHS, lr=DIGITS_LR)   # what train_digits_model does
    config = ProtectConfig(n=100, seed=args.seed, recipe=_recipe("", 0, owner_recipe if args.owner_recipe else None,
                                                                   converged_selection=args.converged_selection))
    fps = run_protect(owner, data, config, progress=False, log=lambda *a: None, held_out=test).fingerprints
    threshold = fps.meta["threshold"]
    print(f"{args.bed} seed {args.seed}: stored threshold {threshold}", flush=True)
    kinds = {"like-owner": like_owner, **PROTECT_CONVERGED}
    part = holdout_split(data, 12345)[0]
    rows = {}
    for name, settings in kinds.items():
        for split, d in (("all", data), ("90%", part)):
            rates = []
            for s in SEEDS:
                model = run_attack("independent", settings, AttackContext(owner, d, s, batch_size=64))[-1].eval()
                with torch.no_grad():
                    matches = int((model(fps.images).argmax(1) == fps.labels).sum())
                rates.append(matches / len(fps.labels))   # as verify counts: exact, not float32
            above = sum(r >= threshold for r in rates)
            rows[f"{name}/{split}"] = {"rates": rates, "mean": sum(rates) / len(rates), "at_or_above_threshold": above}
            print(f"{name:34} {split:4} " + " ".join(f"{r:.2f}" for r in rates)
                  + f"  mean {sum(rates) / len(rates):.3f}, {above} of {len(rates)} >= {threshold}", flush=True)
    Path(args.out).write_text(json.dumps({"bed": args.bed, "seed": args.seed, "threshold": threshold,
                                          "converged_selection": args.converged_selection,
                                          "owner_recipe": args.owner_recipe, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
