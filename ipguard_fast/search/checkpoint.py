"""Resumable extraction: what has finished, saved now and then, so an interrupted
run loses nothing it completed.

The file (safetensors, never pickle) holds the accepted candidates' images and
labels, and in its metadata the settings it was made with and every finished
candidate index with its outcome. A candidate depends only on (seed, index), so a
resumed run skips the finished indices and ends with the same fingerprints an
uninterrupted run finds. Candidates that were still running restart from their
start point.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from .._atomic import atomic_save
from .ledger import Outcome

FORMAT = "ipguard_fast.extract_checkpoint/1"


def save_checkpoint(path, settings: dict, finished: dict[int, bool], outcomes: dict[int, Outcome]) -> None:
    wins = sorted(c for c, ok in finished.items() if ok and c in outcomes)
    if wins:
        tensors = {
            "index": torch.tensor(wins, dtype=torch.int64),
            "images": torch.stack([outcomes[c].image for c in wins]).contiguous(),
            "i": torch.tensor([outcomes[c].i for c in wins], dtype=torch.int64),
            "j": torch.tensor([outcomes[c].j for c in wins], dtype=torch.int64),
            "margins": torch.tensor([outcomes[c].margin for c in wins], dtype=torch.float32),
            "steps": torch.tensor([outcomes[c].steps for c in wins], dtype=torch.int64),
        }
    else:
        tensors = {"index": torch.zeros(0, dtype=torch.int64)}
    # A finished success without its image (not gathered yet) is left out: it reruns.
    done = [[c, ok] for c, ok in sorted(finished.items()) if not ok or c in outcomes]
    metadata = {"format": FORMAT, "settings": json.dumps(settings, sort_keys=True), "finished": json.dumps(done)}
    atomic_save(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))


def load_checkpoint(path, settings: dict) -> tuple[dict[int, bool], dict[int, Outcome]]:
    """-> (finished {index: accepted}, outcomes {index: Outcome}); ValueError if it does not fit."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ValueError(f"checkpoint: {path} is not a readable extraction checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not an ipguard_fast extraction checkpoint")
    saved = json.loads(meta["settings"])
    if saved != json.loads(json.dumps(settings, sort_keys=True)):
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise ValueError(f"checkpoint: {path} was made with other settings ({', '.join(changed)}); "
                         "delete it or use the same settings")
    finished = {int(c): bool(ok) for c, ok in json.loads(meta["finished"])}
    outcomes = {}
    for n, c in enumerate(tensors["index"].tolist()):
        outcomes[c] = Outcome(True, tensors["images"][n], int(tensors["i"][n]), int(tensors["j"][n]),
                                   float(tensors["margins"][n]), int(tensors["steps"][n]))
    return finished, outcomes


def remove_checkpoint(path) -> None:
    if path is not None and os.path.exists(path):
        os.remove(path)
