"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import argparse

from ..model_io import load_model


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes like 1,8,8, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return shape


def floats_arg(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, flag: str = "--model") -> None:
    parser.add_argument(flag, required=required, metavar="M",
                        help="TorchScript file, torch.export .pt2 file, or package.module:factory")
    parser.add_argument("--weights", metavar="FILE",
                        help="state_dict (.safetensors, or a torch file loaded with weights_only) "
                             "for a package.module:factory model")


def model_from_args(args, device: str = "cpu"):
    return load_model(args.model, weights=args.weights, device=device)
