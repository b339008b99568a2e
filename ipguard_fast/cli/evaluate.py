"""ipguard evaluate: robustness/uniqueness of an owner's fingerprints, with ARUC and plots.

--methods ipguard,selected adds the fingerprints protect() selects, judged by the same
suspects; --bed hard trains the independents like the owner and uses the wider attack
grid; --bed foreign trains them by recipes protect() never uses. Every bed also builds the
field's hard families (extraction students, adversarial fine-tuning, preprocessing) on
the attacker's data (--attacker-data, default a seeded half of --data). Under torchrun
the ranks share the extraction, and the suspects: each rank trains and scores its share
(the same seeded models as one process; --negatives files are loaded by every rank, their
scoring shared); they run protect together, and rank 0 writes the report.
Each suspect is kept in --suspect-cache (default OUT/suspects) as soon as it is trained:
a rerun of the same command after an interruption trains only the missing ones.
"""
from __future__ import annotations

from .common import (DistributedRun, add_count_argument, add_model_arguments, add_selection_arguments, budget_arg,
                     check_margins, floats_arg, load_negative_models, named_as_options, one_line_warnings,
                     significance_arg)
from .family_args import add_families_argument, families_arg, listed
from .protect import data_arg
from .refine_args import refine_arg


def add_arguments(p) -> None:
    from ..data import DATA_SPECS

    add_model_arguments(p)
    p.add_argument("--data", default="digits",
                   help=f"training data of the owner: {DATA_SPECS} (local folders only; nothing is downloaded)")
    p.add_argument("--test-data", default=None, help="same forms as --data, for accuracies (default: digits test split)")
    p.add_argument("--negative-arch", default=None,
                   help="architectures trained independently as negatives (registry names: digits_cnn, digits_mlp, "
                        "resnet20, wrn28_10, tv:<name>, timm:<name>; default: the bed's, for digits)")
    p.add_argument("--negatives", nargs="*", default=[], metavar="M",
                   help="already trained independent models (TorchScript/.pt2 files, or package.module:factory=WEIGHTS), "
                        "used as negatives too")
    p.add_argument("--negative-epochs", type=int, default=None,
                   help="epochs of each independent model (default 5; --bed hard: the owner's, known for digits)")
    p.add_argument("--negative-lr", type=float, default=None,
                   help="Adam lr of the independent models (default 1e-3; --bed hard: the owner's, known for digits)")
    p.add_argument("--attacker-data", default=None,
                   help="same forms as --data: the attacker's own data, on which extraction students and other-data "
                        "fine-tuning train (default: a seeded half of --data)")
    p.add_argument("--bed", default="demo",
                   help="demo (the short attack grid, independents trained briefly), foreign (independents trained "
                        "by recipes protect never uses: SGD with momentum, augmentation, other widths) or hard "
                        "(the wider grid incl. "
                        "RTAL for 10 epochs and 80%% pruning; independents trained like the owner)")
    add_families_argument(p)
    p.add_argument("--methods", default="ipguard",
                   help="ipguard (plain, at each --k), selected (protect's selection) and/or mistakes (the owner's "
                        "held-out mistakes, the baseline; needs test data), comma-separated")
    add_selection_arguments(p, "selected: ")
    p.add_argument("--cache", default=None,
                   help="selected: folder for protect's reference models (default: OUT/references)")
    p.add_argument("--suspect-cache", default=None, metavar="DIR",
                   help="folder where each suspect is kept as soon as it is trained (authenticated like --cache), "
                        "so that a rerun after an interruption trains only the missing ones (default: OUT/suspects)")
    p.add_argument("--no-suspect-cache", action="store_true", help="build the suspects in memory only")
    p.add_argument("--k", type=floats_arg, default=[1.0, 3.0, 10.0])
    add_count_argument(p, 100, "fingerprints per k")
    p.add_argument("--seed", type=int, default=0,
                   help="the suspects' and the search's seed (default 0); the independents take seeds "
                        "SEED+1..SEED+3, so pass the owner's own training seed (an independent with that seed "
                        "would start from the owner's initial weights)")
    p.add_argument("--full", action="store_true", help="the wider grid of post-processing attacks")
    p.add_argument("--out", required=True, help="output folder for results.json/.md and plots")


def run(args) -> int:
    from .._files import check_output_folder
    from .._validate import ArgumentError, positive_int
    from ..evaluation.beds import check_bed

    check_output_folder("--out", args.out)   # everything before minutes of training
    check_margins("--k", args.k)
    positive_int("-n", args.n)
    with named_as_options(_OPTIONS):
        check_bed(args.bed)
        families_arg(args)
        _check_settings(args)
    repeated = next((spec for spec in args.negatives if args.negatives.count(spec) > 1), None)
    if repeated is not None:   # a suspect's rate is reported by its name, here the spec
        raise ArgumentError("--negatives", f"{repeated} is given more than once")
    negatives = load_negative_models(args.negatives)
    with DistributedRun("cpu") as ranks:
        return _run(args, ranks, negatives)


def _check_settings(args) -> None:
    """--methods, --pool-factor, --replicas, --budget, --threshold-significance, the refinement's
    options, the selected method's --cache and --suspect-cache (its folder and key), as evaluate()
    takes them, before minutes of training."""
    from .._validate import ArgumentError
    from ..evaluation import EvaluationConfig
    from ..selection import ProtectConfig
    from ..selection.cache import cache_secret, check_cache_dir

    methods = listed(args.methods)
    protect = ProtectConfig(n=args.n, pool_factor=args.pool_factor, replicas=args.replicas, refine=refine_arg(args),
                            budget=budget_arg(args), epoch_cap=args.epoch_cap,
                            threshold_significance=significance_arg(args))
    EvaluationConfig(ks=args.k, n=args.n, methods=methods, protect=protect)
    if "mistakes" in methods and not (args.test_data or args.data == "digits"):
        raise ValueError("--methods: mistakes takes the owner's mistakes on held-out data: give --test-data")
    if "selected" in methods:
        check_cache_dir(args.cache or f"{args.out}/references")
    if args.no_suspect_cache and args.suspect_cache:
        raise ValueError("--no-suspect-cache: leave out --suspect-cache, or this")
    if _suspect_cache(args) is not None:
        check_cache_dir(_suspect_cache(args), argument="suspect_cache")
        try:   # the key that authenticates its manifest, made or refused before any training
            cache_secret()
        except ArgumentError as exc:
            problem = exc.problem.split("; give another key file")[0]
            raise ValueError(f"--suspect-cache: {problem}; fix the key, or cache nothing (--no-suspect-cache)") from None


def _run(args, ranks, negatives) -> int:
    import torch

    from ..evaluation import evaluate, make_bed, summary_table, write_report
    from ..evaluation.suspects import Suspect
    from ..io import load_trainable_model
    from ..selection.cache import ReferenceCacheWarning
    from ..selection.inputs import checked_labels

    methods = listed(args.methods)
    owner = load_trainable_model(args.model, args.weights, "--model")
    train_set = data_arg("--data", args.data, "train")
    test_set = (data_arg("--test-data" if args.test_data else "--data", args.test_data or args.data, "test")
                if (args.test_data or args.data == "digits") else None)
    shape = tuple(train_set[0][0].shape)
    with torch.no_grad():
        num_classes = owner(train_set[0][0][None]).shape[1]
    checked_labels(train_set, num_classes, "--data")   # labels past the owner's classes: before any training
    if test_set is not None:
        _same_shape("--test-data" if args.test_data else "--data", test_set, shape)
        checked_labels(test_set, num_classes, "--test-data" if args.test_data else "--data")
    architectures = None if args.negative_arch is None else list(filter(None, args.negative_arch.split(",")))
    with named_as_options(_OPTIONS):
        bed = make_bed(args.bed, digits=args.data == "digits", input_shape=shape, num_classes=num_classes,
                       architectures=architectures, negative_epochs=args.negative_epochs,
                       negative_lr=args.negative_lr, full=args.full)
    attacker = data_arg("--attacker-data", args.attacker_data, "train") if args.attacker_data else None
    if attacker is not None:
        _same_shape("--attacker-data", attacker, shape)
        checked_labels(attacker, num_classes, "--attacker-data")
    with one_line_warnings("evaluate", ReferenceCacheWarning):
        suspects = bed.suspects(owner, train_set, seed=args.seed, attacker_data=attacker,
                                suspect_cache=_suspect_cache(args),
                                families=families_arg(args),
                                share=(ranks.rank, ranks.world) if ranks.world > 1 else None)
    suspects += [Suspect(path, "independent-given", "negative", model) for path, model in negatives]
    with named_as_options(_OPTIONS):
        result = evaluate(owner, train_set, input_shape=shape, ks=args.k, n=args.n, test_set=test_set,
                          owner_name=args.model, seed=args.seed, suspects=suspects, methods=methods,
                          selection_options={"pool_factor": args.pool_factor, "replicas": args.replicas,
                                             "refine": refine_arg(args), "budget": budget_arg(args),
                                             "epoch_cap": args.epoch_cap,
                                             "threshold_significance": significance_arg(args),
                                             "cache_dir": args.cache or f"{args.out}/references"})
    result.settings.update(command="ipguard evaluate", bed=bed.name,
                           negatives=sorted({group.label for group in bed.negatives}))
    if not ranks.is_main:
        return 0
    paths = write_report(result, args.out)
    print(summary_table(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _suspect_cache(args):
    """Where the suspects are kept: --suspect-cache, else OUT/suspects; None with --no-suspect-cache."""
    return None if args.no_suspect_cache else args.suspect_cache or f"{args.out}/suspects"


def _same_shape(option: str, data, shape: tuple) -> None:
    """Data of another image shape than --data's, refused before the suspects train (the owner
    failed on it only after every suspect was built)."""
    got = tuple(data[0][0].shape)
    if got != shape:
        raise ValueError(f"{option}: holds images of shape {got}; --data's (the owner's) are {shape}")


# the library's argument names -> the options that set them
_OPTIONS = {"bed": "--bed", "negative_lr": "--negative-lr", "negative_epochs": "--negative-epochs",
            "methods": "--methods", "ks": "--k", "test_set": "--test-data", "n": "-n", "pool_factor": "--pool-factor",
            "replicas": "--replicas", "held_out_data": "--test-data", "cache_dir": "--cache", "name": "--negative-arch",
            "seed": "--seed", "suspect_cache": "--suspect-cache", "epoch_cap": "--epoch-cap", "families": "--families"}

