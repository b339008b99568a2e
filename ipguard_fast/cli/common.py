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
                        help="TorchScript file, torch.export .pt2 file, package.module:factory, or (for "
                             "verify and serve) an .onnx file")
    parser.add_argument("--weights", metavar="FILE",
                        help="state_dict (.safetensors, or a torch file loaded with weights_only) "
                             "for a package.module:factory model")


def model_from_args(args, device: str = "cpu"):
    return load_model(args.model, weights=args.weights, device=device)


class DistributedRun:
    """Under torchrun (WORLD_SIZE > 1): joins the process group for the command's
    duration (gloo on CPU, nccl on GPU) and picks this rank's device. A rank that
    fails exits non-zero, and torchrun then stops the others, so a run never
    leaves a partial file (files are written by rank 0, atomically)."""

    def __init__(self, device: str | None):
        import os

        import torch
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        self.started = False
        if self.world > 1 and not dist.is_initialized():
            use_cuda = (device is None or device.startswith("cuda")) and torch.cuda.is_available()
            if use_cuda:
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = f"cuda:{local}"
            dist.init_process_group("nccl" if use_cuda else "gloo")
            self.started = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist
            dist.destroy_process_group()
