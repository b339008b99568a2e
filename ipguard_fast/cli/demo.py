"""ipguard demo: the whole IPGuard workflow on the embedded digits data, in minutes on a CPU.

Trains the owner (a small CNN), positive suspects (fine-tuned, retrained,
pruned, quantised and distilled copies) and negative suspects (independently
trained CNNs and MLPs), extracts fingerprints at several k, verifies every
suspect, and writes the table, ARUC and plots.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import add_count_argument, check_margins, floats_arg


def add_arguments(p) -> None:
    p.add_argument("--out", default="ipguard-demo", help="output folder (default ./ipguard-demo)")
    add_count_argument(p, 100, "fingerprints per k")
    p.add_argument("--k", type=floats_arg, default=[1.0, 3.0, 5.0, 10.0], help="margins to sweep (default 1,3,5,10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="the wider grid of post-processing attacks (slower)")


def check_arguments(args) -> None:
    from .._files import check_writable_output
    from .._validate import positive_int

    positive_int("-n", args.n)
    check_margins("--k", args.k)
    check_writable_output("--out", args.out)


def run(args) -> int:
    from ..data import digits_input_shape, load_digits
    from ..evaluation import build_suspects, evaluate, summary_table, write_report
    from ..io import save_torchscript
    from ..models import DIGITS_ARCHITECTURES, DigitsMLP, train_digits_model
    from ..search import extract_fingerprints
    from ..train import accuracy
    from ..verify import calibrate_threshold, verify

    check_arguments(args)  # all of them, before minutes of training
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = digits_input_shape()
    train_set, test_set = load_digits("train"), load_digits("test")
    owner = train_digits_model("cnn", seed=args.seed)
    print(f"owner DigitsCNN: test accuracy {accuracy(owner, test_set):.4f}")
    save_torchscript(owner, train_set.tensors[0][:2], out / "owner.pt")

    suspects = build_suspects(owner, train_set, negative_factories=DIGITS_ARCHITECTURES, negative_epochs=5,
                              small_factory=DigitsMLP, seed=args.seed, quick=not args.full)
    result = evaluate(owner, suspects=suspects, input_shape=shape, ks=args.k, n=args.n, test_set=test_set,
                      owner_name="DigitsCNN (digits, seed 0)", seed=args.seed)
    result["settings"]["command"] = "ipguard demo"
    paths = write_report(result, out)
    print()
    print(summary_table(result))
    best = max(result["runs"], key=lambda r: r["aruc"])
    arucs = ", ".join(f"k={r['k']:g}: {r['aruc']:.3f}" for r in result["runs"])
    print(f"ARUC: {arucs} (best k={best['k']:g})")

    # The owner's workflow after release: fingerprints at the best k, a threshold
    # calibrated on the independent models, a file, then verdicts on new suspects.
    fps = extract_fingerprints(owner, args.n, k=best["k"], input_shape=shape, seed=args.seed, progress=False)
    negatives = [s.model for s in suspects if s.role == "negative"]
    fps.meta["threshold"] = calibrate_threshold(negatives, fps, false_positive_rate=0.01)
    fp_path = fps.save(out / f"fingerprints_k{best['k']:g}.safetensors")
    stolen = next(s for s in suspects if s.family == "FTAL")
    fresh_independent = train_digits_model("mlp", seed=99)
    print(f"\nfingerprints (k={best['k']:g}, threshold {fps.meta['threshold']:.2f} calibrated on "
          f"{len(negatives)} independent models): {fp_path}")
    print(f"  owner model ({out / 'owner.pt'}): {verify(owner, fps)}")
    print(f"  stolen copy {stolen.name}: {verify(stolen.model, fps)}")
    print(f"  a new independent model: {verify(fresh_independent, fps)}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0
