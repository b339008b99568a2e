"""ipguard calibrate: a fingerprint file's threshold from independent models the owner has.

A file from `ipguard extract` carries no threshold, and `verify` gives it no verdict: how
many plain points an innocent model keeps depends on the owner, k and the task. This
command runs each independent model file (in a confined worker unless --no-isolate),
measures its matching rate and writes a copy of the file whose threshold is the highest
rate plus the sampling noise of the file's n points (selection/calibration.py). The
given file is never changed.
"""
from __future__ import annotations

from .common import add_isolation_arguments, isolation_from_args, named_as_options, one_line_warnings


def add_arguments(p) -> None:
    from ..selection.significance import SIGNIFICANCE

    p.add_argument("--fingerprints", required=True, help="fingerprint file (from `ipguard extract` or `protect`)")
    p.add_argument("--negatives", required=True, nargs="+", metavar="M",
                   help="model files trained independently of the owner (TorchScript, .pt2, ONNX): three or more, "
                        "of the owner's architecture and training recipe among them")
    p.add_argument("--out", required=True, help="the calibrated fingerprint file to write (never the given one)")
    p.add_argument("--significance", type=float, default=SIGNIFICANCE,
                   help="the threshold is the smallest rate a model agreeing at the highest independent's rate "
                        f"reaches with probability at most this (default {SIGNIFICANCE})")
    p.add_argument("--batch-size", type=int, default=256)
    add_isolation_arguments(p, "seconds a worker may take to load a model, and again for each batch (default 60)")


def run(args) -> int:
    from .._files import check_writable_output
    from ..fingerprints import FingerprintSet
    from ..selection.calibration import calibrate_fingerprints

    isolation = isolation_from_args(args)
    check_writable_output("--out", args.out, [args.fingerprints, *args.negatives])
    fingerprints = FingerprintSet.load(args.fingerprints)
    with named_as_options(_OPTIONS), one_line_warnings("calibrate", UserWarning):
        calibrated = calibrate_fingerprints(fingerprints, args.negatives, significance=args.significance,
                                            batch_size=args.batch_size,
                                            isolate=False if isolation is None else isolation)
    record = calibrated.meta["calibration"]
    for entry in record["negatives"]:
        print(f"  {entry['model']}: matching rate {entry['matching_rate']:.4f}")
    path = calibrated.save(args.out)
    kept = record["previous_threshold"] is not None and calibrated.meta["threshold"] == record["previous_threshold"]
    print(f"highest independent rate {record['level']:.4f} -> threshold {calibrated.meta['threshold']:.4f}"
          + (" (the file's own, which is higher, kept)" if kept else "")
          + ("" if calibrated.meta["threshold_shown"] else "; no rate shows a copy: verdicts are inconclusive"))
    print(f"wrote {path}")
    return 0


_OPTIONS = {"fingerprints": "--fingerprints", "negatives": "--negatives", "significance": "--significance",
            "batch_size": "--batch-size", "suspect": "--negatives"}
