"""ipguard evaluate: robustness/uniqueness of an owner's fingerprints, with ARUC and plots.

Under torchrun the ranks share the extraction and the suspects' scoring; every
rank builds the same (seeded) suspects, and rank 0 writes the report.
"""
from __future__ import annotations

from .common import DistributedRun, add_count_argument, add_model_arguments, check_margins, floats_arg


def add_arguments(p) -> None:
    from ..data import DATA_SPECS

    add_model_arguments(p)
    p.add_argument("--data", default="digits",
                   help=f"training data of the owner: {DATA_SPECS} (local folders only; nothing is downloaded)")
    p.add_argument("--test-data", default=None, help="same forms as --data, for accuracies (default: digits test split)")
    p.add_argument("--negative-arch", default="digits_cnn,digits_mlp",
                   help="architectures trained independently as negatives (registry names: digits_cnn, digits_mlp, "
                        "resnet20, wrn28_10, tv:<name>, timm:<name>)")
    p.add_argument("--negatives", nargs="*", default=[], metavar="M",
                   help="already trained independent models (TorchScript/.pt2 files), used as negatives too")
    p.add_argument("--negative-epochs", type=int, default=5)
    p.add_argument("--k", type=floats_arg, default=[1.0, 3.0, 10.0])
    add_count_argument(p, 100, "fingerprints per k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="the wider grid of post-processing attacks")
    p.add_argument("--out", required=True, help="output folder for results.json/.md and plots")


def run(args) -> int:
    from .._validate import positive_int

    check_margins("--k", args.k)  # before minutes of training
    positive_int("-n", args.n)
    with DistributedRun("cpu") as ranks:
        return _run(args, ranks)


def _run(args, ranks) -> int:
    import torch

    from ..data import load_data
    from ..evaluation import build_suspects, evaluate, summary_table, write_report
    from ..evaluation.suspects import Suspect
    from ..io import load_model
    from ..models import build_model

    owner = load_model(args.model, args.weights)
    if isinstance(owner, torch.jit.ScriptModule) or args.model.endswith(".pt2"):
        raise ValueError("--model: evaluate fine-tunes and prunes copies of the owner, so it needs a trainable "
                         "model: give package.module:factory with --weights, not a TorchScript/.pt2 file")
    train_set = load_data(args.data, "train")
    test_set = load_data(args.test_data or args.data, "test") if (args.test_data or args.data == "digits") else None
    shape = tuple(train_set[0][0].shape)
    with torch.no_grad():
        num_classes = owner(train_set[0][0][None]).shape[1]
    factories = {name: (lambda name=name: build_model(name, num_classes, shape))
                 for name in filter(None, args.negative_arch.split(","))}
    suspects = None
    if args.negatives:  # the given negatives join the built suspects
        suspects = build_suspects(owner, train_set, negative_factories=factories,
                                  negative_epochs=args.negative_epochs, seed=args.seed,
                                  quick=not args.full) if factories else []
        suspects += [Suspect(str(path), "independent-given", "negative", load_model(path)) for path in args.negatives]
    result = evaluate(owner, train_set, input_shape=shape, negative_factories=factories,
                      negative_epochs=args.negative_epochs, quick=not args.full, ks=args.k, n=args.n,
                      test_set=test_set, owner_name=args.model, seed=args.seed, suspects=suspects)
    result["settings"]["command"] = "ipguard evaluate"
    if not ranks.is_main:
        return 0
    paths = write_report(result, args.out)
    print(summary_table(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
