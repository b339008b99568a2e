"""ipguard extract: fingerprints of a model, written as a safetensors file.

The model file is run by a confined worker process (io/sandbox) unless --no-isolate: the
owner's file is usually the owner's own, but extract also reads files of unknown origin (a
model bought, downloaded, or sent for an audit), and a TorchScript or .pt2 file runs code
of its author's. Isolated, the search runs in the worker and gives the same fingerprints as
in-process at one thread (the worker's); a model that loops, allocates without bound or
crashes ends in one line and exit 1.

Under `torchrun --nproc_per_node=N -m ipguard_fast extract ... --no-isolate` the ranks share
the candidate stream and rank 0 writes the one file (the ranks run the model in-process).
"""
from __future__ import annotations

from .common import (DistributedRun, add_count_argument, add_isolation_arguments, add_model_arguments,
                     isolation_from_args, named_as_options, one_line_warnings, shape_arg)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--input-shape", type=shape_arg, required=True, help="e.g. 1,8,8 or 3,224,224")
    add_count_argument(p, 100, "fingerprints to extract")
    p.add_argument("--k", type=float, required=True, help="logit margin of the search (e.g. 5 for digits, 10 for CIFAR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--max-candidates", type=int, default=None, help="default 10 n")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--labels", choices=["random", "least_likely", "predicted"], default="random")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the model's)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed-precision search (float32 acceptance)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--result-rule", choices=["index", "completion"], default="index",
                   help="index (default): the first n accepted by candidate index, the same set for any batch "
                        "size or number of ranks; completion: the first n to be accepted, sooner, but schedule-"
                        "dependent")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="output .safetensors file")
    add_isolation_arguments(p, "seconds the worker may take to load the model, then between two reports of progress "
                               "(one at least after every search step; default 60)")
    p.add_argument("--checkpoint", default=None,
                   help="resume file (default OUT.checkpoint): finished candidates are saved there every "
                        "30 s and on Ctrl-C; rerunning the same command resumes; removed on success")


# ExtractConfig's field names -> the options that set them
_OPTIONS = {"n": "-n", "k": "--k", "input_shape": "--input-shape", "seed": "--seed", "lr": "--lr",
            "max_steps": "--max-steps", "max_candidates": "--max-candidates", "batch_size": "--batch-size",
            "labels": "--labels", "device": "--device", "model": "--model", "checkpoint": "--checkpoint"}


def config_from_args(args):
    from ..search import ExtractConfig

    with named_as_options(_OPTIONS):
        return ExtractConfig(n=args.n, k=args.k, input_shape=args.input_shape, seed=args.seed, lr=args.lr,
                             max_steps=args.max_steps, max_candidates=args.max_candidates,
                             batch_size=args.batch_size, labels=args.labels, amp=args.amp,
                             channels_last=args.channels_last, result_rule=args.result_rule)


def run(args) -> int:
    from .._files import check_writable_output
    from ..search import IncompleteFingerprintsWarning
    from ..search.api import compute_device
    from ..search.checkpoint import remove_checkpoint

    config = config_from_args(args)  # every setting checked before the model is loaded
    isolation = isolation_from_args(args)
    checkpoint_path = args.checkpoint or f"{args.out}.checkpoint"
    check_writable_output("--out", args.out, [args.model, args.weights, checkpoint_path])
    check_writable_output("--checkpoint", checkpoint_path, [args.model, args.weights])
    if args.device is not None:   # a device this machine lacks is the option's fault, not the model file's
        with named_as_options(_OPTIONS):
            compute_device("device", args.device)
    with DistributedRun(args.device) as ranks, one_line_warnings("extract", IncompleteFingerprintsWarning):
        checkpoint = None if ranks.world > 1 else checkpoint_path
        fps = _extract(args, config, ranks, isolation, checkpoint)
        if ranks.is_main:
            path = fps.save(args.out)
            remove_checkpoint(checkpoint)
            print(f"wrote {len(fps)} fingerprints (of {args.n} requested, {fps.meta['candidates_tried']} "
                  f"candidates tried on {fps.meta['world_size']} rank(s)) to {path}")
            print("no threshold yet: `ipguard verify` gives this file inconclusive verdicts until it is calibrated "
                  "against independent models (`ipguard calibrate --negatives ...`) or given --threshold")
    return 0 if fps.complete else 1


def _extract(args, config, ranks, isolation, checkpoint):
    """The fingerprints, found by a confined worker (``isolation``) or, with --no-isolate, here."""
    from .._validate import ArgumentError
    from ..io import load_model, run_isolated_extraction
    from ..search import run_extraction

    progress = not args.no_progress
    if isolation is None:
        model = load_model(args.model, args.weights, device=ranks.device or "cpu")
        with named_as_options(_OPTIONS):
            return run_extraction(model, config, device=ranks.device, progress=progress,
                                  checkpoint=checkpoint).fingerprints
    if ranks.world > 1:
        raise ArgumentError("--no-isolate", f"under torchrun each of the {ranks.world} ranks runs the model in its "
                                            "own process: give --no-isolate (for a model file you trust)")
    with named_as_options(_OPTIONS):
        return run_isolated_extraction(args.model, config, weights=args.weights, device=args.device,
                                       isolation=isolation, checkpoint=checkpoint, progress=progress)
