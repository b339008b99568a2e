"""ipguard verify: does a suspect match the owner's fingerprints? A local model file (run by a
confined worker process unless --no-isolate), or a label-only HTTP endpoint (resumable with
--progress)."""
from __future__ import annotations

import json
import sys

from .common import (add_isolation_arguments, add_model_arguments, add_token_arguments, isolation_from_args,
                     named_as_options, resolve_token)

DEFAULT_BATCH_SIZE = 256
ENDPOINT_TIMEOUT = 30.0
ENDPOINT_RETRIES = 5
ENDPOINT_DEADLINE = 3600.0


def add_arguments(p) -> None:
    p.add_argument("--fingerprints", required=True, help="fingerprint file from `ipguard extract`")
    p.add_argument("--student-part", metavar="FILE", default=None,
                   help="the student part protect wrote beside --fingerprints (`ipguard protect --students`): each "
                        "file judged at its own threshold, the suspect a copy when either shows it")
    add_model_arguments(p, required=False, onnx=True)
    p.add_argument("--endpoint", metavar="URL", help="a label-only HTTP endpoint (see `ipguard serve`) instead of --model")
    add_token_arguments(p, "of the endpoint")
    p.add_argument("--progress", metavar="FILE",
                   help="with --endpoint: saves each answered batch; rerun with it to resume an interrupted run")
    p.add_argument("--progress-key", metavar="FILE",
                   help="with --progress: the secret key file that authenticates it (made when missing, mode "
                        "0600; default $IPGUARD_FAST_PROGRESS_KEY, else ~/.config/ipguard_fast/progress.key)")
    add_isolation_arguments(p, f"with --endpoint: seconds one request may take in all (default {ENDPOINT_TIMEOUT:g}); "
                               "with --model: seconds the worker may take to load the model, and again for each batch "
                               "(default 60)", prefix="with --model: ")
    p.add_argument("--retries", type=int, default=None,
                   help=f"with --endpoint: retries on 5xx/429/connection errors (default {ENDPOINT_RETRIES})")
    p.add_argument("--deadline", type=float, default=None,
                   help=f"with --endpoint: seconds the whole verification may take (default {ENDPOINT_DEADLINE:g}); "
                        "the answered batches are kept in --progress")
    p.add_argument("--threshold", type=float, default=None,
                   help="matching-rate threshold (default: the file's calibrated one; a file with none gives an "
                        "inconclusive verdict: calibrate it with `ipguard calibrate`)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"fingerprints per batch (per request with --endpoint; default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args) -> int:
    from ..fingerprints import FingerprintSet

    if (args.model is None) == (args.endpoint is None):
        raise ValueError("--model, --endpoint: give exactly one of them")
    if args.progress_key is not None and args.progress is None:
        raise ValueError("--progress-key: authenticates a progress file: give --progress too")
    if args.endpoint is None:   # the endpoint's options would be ignored: a --progress never written, say
        for option in ("progress", "token", "token_env", "retries", "deadline"):
            if getattr(args, option) is not None:
                raise ValueError(f"--{option.replace('_', '-')}: applies to --endpoint only, not to a local --model")
    isolation = isolation_from_args(args, remote=args.endpoint is not None)
    fingerprints = FingerprintSet.load(args.fingerprints)
    if args.student_part is not None:
        return _verify_parts(args, fingerprints, FingerprintSet.load(args.student_part), isolation)
    if args.endpoint is None:
        verdict = _verify_model(args, fingerprints, isolation)
    else:
        verdict = _verify_endpoint(args, fingerprints)
    print_verdict(verdict, args.json)
    return 0


def _verify_parts(args, main, students, isolation) -> int:
    """The suspect judged on both files, each at its own threshold (verdicts.PartsVerdict)."""
    from ..verdicts import PartsVerdict

    if args.threshold is not None:
        raise ValueError("--threshold: sets one file's threshold; with --student-part each file is judged at its own")
    if args.progress is not None:
        raise ValueError("--student-part: not with --progress (one progress file per fingerprint file): verify "
                         "each file in its own run, a copy when either says so")
    if students.meta.get("part") != "students":
        raise ValueError(f"--student-part: {args.student_part} is no student part (`ipguard protect --students N` "
                         "writes one beside its --out)")
    if (students.num_classes, students.images.shape[1:]) != (main.num_classes, main.images.shape[1:]):
        raise ValueError("--student-part: its classes or image shape differ from --fingerprints: not the same owner's")
    parts = {"main": main, "students": students}
    if args.endpoint is None:
        verdicts = _verify_model(args, parts, isolation)
    else:
        verdicts = {name: _verify_endpoint(args, part) for name, part in parts.items()}
    verdict = PartsVerdict(verdicts)
    if args.json:
        print(json.dumps(verdict.to_dict()))
        return 0
    for name, part in verdict.parts.items():
        print(f"{'main part' if name == 'main' else 'student part'}: ", end="")
        print_verdict(part, False)
    print("PIRATED (shown by the " + " and the ".join(f"{name} part" for name in verdict.shown_by) + ")"
          if verdict.pirated else "not pirated (neither part shows a copy)")
    return 0


def _verify_model(args, fingerprints, isolation):
    """The local model file, in a confined worker (``isolation``) or, with --no-isolate, here;
    `fingerprints` one set (a Verdict) or a dict of parts (a Verdict each, one model load)."""
    from ..io import IsolatedSuspect, load_suspect
    from ..verdicts import verify

    parts = fingerprints if isinstance(fingerprints, dict) else {None: fingerprints}
    judge = lambda suspect: {name: verify(suspect, fps, threshold=args.threshold,  # noqa: E731
                                          batch_size=args.batch_size) for name, fps in parts.items()}
    with named_as_options(_OPTIONS):
        if isolation is None:
            verdicts = judge(load_suspect(args.model, weights=args.weights, device=args.device))
        else:
            with IsolatedSuspect(args.model, weights=args.weights, device=args.device, isolation=isolation,
                                 num_classes=next(iter(parts.values())).num_classes) as suspect:
                verdicts = judge(suspect)
    return verdicts if isinstance(fingerprints, dict) else verdicts[None]


def _verify_endpoint(args, fingerprints):
    from ..remote import RemoteVerifyConfig, run_remote_verification

    token = resolve_token(args)

    def report(index: int, done: int, total: int) -> None:
        if not args.json:
            print(f"\rqueried {done}/{total} batches", end="" if done < total else "\n", file=sys.stderr, flush=True)

    with named_as_options(_OPTIONS):
        config = RemoteVerifyConfig(batch_size=args.batch_size,
                                    timeout=ENDPOINT_TIMEOUT if args.timeout is None else args.timeout,
                                    retries=ENDPOINT_RETRIES if args.retries is None else args.retries,
                                    deadline=ENDPOINT_DEADLINE if args.deadline is None else args.deadline)
        return run_remote_verification(args.endpoint, fingerprints, config, token=token,
                                       progress_file=args.progress, key_file=args.progress_key,
                                       threshold=args.threshold, on_batch=report)


def print_verdict(verdict, as_json: bool) -> None:
    """The one way the CLI prints a verdict: JSON with the Python field names, or one line."""
    if as_json:
        print(json.dumps(verdict.to_dict()))
        return
    from ..label_bias import LABEL_BIAS_SIGNIFICANCE
    from ..verdicts import AT_CHANCE, LABEL_BIAS, NO_THRESHOLD

    rate = f"matching rate {verdict.matching_rate:.4f} ({verdict.matches}/{verdict.total})"
    if verdict.reason == NO_THRESHOLD:
        print(f"{rate}, no threshold: inconclusive (this file carries no calibrated threshold, and independent "
              "models keep anything up to all of a plain file's points: calibrate it against independent models "
              "with `ipguard calibrate`, or give --threshold)")
        return
    if verdict.reason == AT_CHANCE:   # the threshold in full: a tiny one must not print as 0.0000
        print(f"{rate} vs threshold {verdict.threshold!r}: inconclusive (a model that guesses its answers "
              "reaches that threshold on average, so a rate above it is no evidence of a copy: give a higher "
              "--threshold, or calibrate the file with `ipguard calibrate`)")
        return
    if verdict.reason == LABEL_BIAS:
        print(f"{rate} vs threshold {verdict.threshold:.4f}: inconclusive (the suspect's own label frequencies "
              f"explain its matches: answering at those frequencies whatever the image, a model matches "
              f"{verdict.label_bias_rate:.2f} of these points on average, and its own answers shuffled over the "
              f"points reach {verdict.matches} of {verdict.total} in more than {LABEL_BIAS_SIGNIFICANCE:.0%} of the "
              "shufflings; a file with more points, spread over the labels, can tell more)")
        return
    word = "PIRATED" if verdict.pirated else "not pirated"
    if not verdict.conclusive:
        word = ("inconclusive (independent models agree with nearly every fingerprint of this file, so no rate "
                "shows a copy; protect warned when it wrote the file)")
    print(f"{rate} vs threshold {verdict.threshold:.4f}: {word}")


_OPTIONS = {"url": "--endpoint", "token": "--token", "key_file": "--progress-key", "progress_file": "--progress",
            "batch_size": "--batch-size", "timeout": "--timeout", "retries": "--retries", "deadline": "--deadline",
            "threshold": "--threshold", "device": "--device"}
