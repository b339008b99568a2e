"""--families (evaluate and demo) and the comma-separated lists evaluate's options take."""
from __future__ import annotations

FAMILIES_HELP = ("build only the copies of these families, comma-separated (the paper's: "
                 "FTLL, FTAL, RTLL, RTAL, prune, quant-int8, fp16, distill, distill-small; the field's: "
                 "extract-labels, extract-probabilities, adversarial-ft, preprocess, fine-tune-other-data); "
                 "every independent is still built (default: every family of the bed)")


def listed(text: str) -> tuple[str, ...]:
    """A comma-separated option's names, empty entries dropped (--methods and --families alike:
    "FTLL," is FTLL)."""
    return tuple(name for name in text.split(",") if name)


def add_families_argument(parser) -> None:
    parser.add_argument("--families", default=None, metavar="F1,F2", help=FAMILIES_HELP)


def families_arg(args) -> tuple[str, ...] | None:
    """--families checked against the families any bed builds (None: every family of the bed);
    an unknown or empty list is refused naming --families before any training."""
    from .._validate import ArgumentError
    from ..evaluation.beds import check_families

    if args.families is None:
        return None
    try:
        return check_families(listed(args.families))
    except ArgumentError as exc:
        raise exc.renamed("--families") from None
