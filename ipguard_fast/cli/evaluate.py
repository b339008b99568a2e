"""ipguard evaluate: robustness/uniqueness of an owner's fingerprints, with ARUC and plots.

Under torchrun the ranks share the extraction and the suspects' scoring; every
rank builds the same (seeded) suspects, and rank 0 writes the report.
"""
from __future__ import annotations

import torch

from ..evaluation import evaluate, write_report
from ..evaluation.report import summary_table
from ..evaluation.variants import Suspect
from ..model_io import load_model
from ..zoo import build_model, load_cifar, load_digits, load_imagefolder
from .common import DistributedRun, add_model_arguments, floats_arg, model_from_args


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--data", default="digits",
                   help="training data of the owner: digits, cifar10:ROOT, cifar100:ROOT or imagefolder:ROOT "
                        "(local folders only; nothing is downloaded)")
    p.add_argument("--test-data", default=None, help="same forms as --data, for accuracies (default: digits test split)")
    p.add_argument("--negative-arch", default="digits_cnn,digits_mlp",
                   help="architectures trained independently as negatives (zoo names: digits_cnn, digits_mlp, "
                        "resnet20, wrn28_10, tv:<name>)")
    p.add_argument("--negatives", nargs="*", default=[], metavar="M",
                   help="already trained independent models (TorchScript/.pt2 files), used as negatives too")
    p.add_argument("--negative-epochs", type=int, default=5)
    p.add_argument("--k", type=floats_arg, default=[1.0, 3.0, 10.0])
    p.add_argument("-n", "--n", dest="n", type=int, default=100, help="fingerprints per k (-n under torchrun)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="the wider grid of post-processing attacks")
    p.add_argument("--out", required=True, help="output folder for results.json/.md and plots")


def load_data(spec: str, split: str):
    name, _, root = spec.partition(":")
    if name == "digits":
        return load_digits(split)
    if name in ("cifar10", "cifar100"):
        return load_cifar(root, split, which=name)
    if name == "imagefolder":
        return load_imagefolder(root)
    raise ValueError(f"--data: expected digits, cifar10:ROOT, cifar100:ROOT or imagefolder:ROOT, got {spec!r}")


def run(args) -> int:
    ranks = DistributedRun("cpu")
    try:
        return _run(args, ranks)
    finally:
        ranks.close()


def _run(args, ranks) -> int:
    owner = model_from_args(args)
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
    result = evaluate(owner, train_set, input_shape=shape, negative_factories=factories,
                      negative_epochs=args.negative_epochs, quick=not args.full, ks=args.k, n=args.n,
                      test_set=test_set, owner_name=args.model, seed=args.seed,
                      suspects=_with_given_negatives(owner, train_set, factories, args) if args.negatives else None)
    result["settings"]["command"] = "ipguard evaluate"
    if not ranks.is_main:
        return 0
    paths = write_report(result, args.out)
    print(summary_table(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _with_given_negatives(owner, train_set, factories, args):
    from ..evaluation import build_suspects
    suspects = build_suspects(owner, train_set, negative_factories=factories, negative_epochs=args.negative_epochs,
                              seed=args.seed, quick=not args.full) if factories else []
    for path in args.negatives:
        suspects.append(Suspect(str(path), "independent-given", "negative", load_model(path)))
    return suspects
