"""ipguard verify: does a suspect match the owner's fingerprints?"""
from __future__ import annotations

import json

from ..fingerprints import FingerprintSet
from ..verify import DEFAULT_THRESHOLD, verify
from ..model_io import load_suspect
from .common import add_model_arguments


def add_arguments(p) -> None:
    p.add_argument("--fingerprints", required=True, help="fingerprint file from `ipguard extract`")
    add_model_arguments(p, required=False)
    p.add_argument("--endpoint", metavar="URL", help="a label-only HTTP endpoint (see `ipguard serve`) instead of --model")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the endpoint's bearer token")
    p.add_argument("--progress", metavar="FILE", help="resumable progress file for --endpoint")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"matching-rate threshold (default: the file's calibrated one, else {DEFAULT_THRESHOLD})")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args) -> int:
    if (args.model is None) == (args.endpoint is None):
        raise ValueError("give exactly one of --model and --endpoint")
    if args.endpoint is not None:
        from ..remote import client
        return client.run(args)
    fingerprints = FingerprintSet.load(args.fingerprints)
    suspect = load_suspect(args.model, weights=args.weights, device=args.device)
    verdict = verify(suspect, fingerprints, threshold=args.threshold, batch_size=args.batch_size)
    print_verdict(verdict, args.json)
    return 0


def print_verdict(verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict.to_dict()))
        return
    word = "PIRATED" if verdict.pirated else "not pirated"
    print(f"matching rate {verdict.matching_rate:.4f} ({verdict.matches}/{verdict.total}) vs threshold "
          f"{verdict.threshold:.4f}: {word}")
