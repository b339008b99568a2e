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

import functools
import json
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from .._atomic import atomic_save, remove_saved
from .._files import check_safetensors_header, short_error
from .._validate import ArgumentError
from .ledger import Outcome

FORMAT = "ipguard_fast.extract_checkpoint/1"


def save_checkpoint(path, settings: dict, finished: dict[int, bool], outcomes: dict[int, Outcome],
                    writer: Callable[[bytes], None] | None = None) -> None:
    """The checkpoint written to ``path`` atomically, or its bytes handed to ``writer``."""
    data = checkpoint_bytes(settings, finished, outcomes)
    if writer is not None:
        writer(data)
    else:
        write_checkpoint(path, data)


def write_checkpoint(path, data: bytes) -> None:
    """A checkpoint's bytes written to ``path`` atomically."""
    atomic_save(path, lambda handle: handle.write(data))


def checkpoint_bytes(settings: dict, finished: dict[int, bool], outcomes: dict[int, Outcome]) -> bytes:
    """The checkpoint file's content (safetensors) for what has finished."""
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
    return safetensors.torch.save(tensors, metadata=metadata)


MAX_HEADER_BYTES = 64 * 1024 * 1024  # the finished list of 10^6 candidates is ~15 MB of JSON


def load_checkpoint(path, settings: dict) -> tuple[dict[int, bool], dict[int, Outcome]]:
    """-> (finished {index: accepted}, outcomes {index: Outcome}); ValueError if it does not fit.

    The file is treated as hostile: its structure is checked here, and the caller re-runs
    float32 acceptance on every accepted image before trusting it (verify_resumed)."""
    path = Path(path)
    check_safetensors_header(path, MAX_HEADER_BYTES, functools.partial(ArgumentError, "checkpoint"),
                             "extraction checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ArgumentError("checkpoint", f"{path} is not a readable extraction checkpoint "
                                          f"({short_error(exc)})") from None
    if meta.get("format") != FORMAT:
        raise ArgumentError("checkpoint", f"{path} is not an ipguard_fast extraction checkpoint")
    try:
        saved = json.loads(meta["settings"])
        finished_list = json.loads(meta["finished"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise ArgumentError("checkpoint", f"{path} is damaged ({short_error(exc)})") from None
    if saved != json.loads(json.dumps(settings, sort_keys=True)):
        keys = set(saved) | set(settings) if isinstance(saved, dict) else set(settings)
        changed = sorted(k for k in keys if not isinstance(saved, dict) or saved.get(k) != settings.get(k))
        raise ArgumentError("checkpoint", f"{path} was made with other settings ({', '.join(changed)}); "
                                          "delete it or use the same settings")
    finished = _finished(finished_list, settings["max_candidates"], path)
    return finished, _outcomes(tensors, finished, settings, path)


def _finished(entries, max_candidates: int, path) -> dict[int, bool]:
    if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and not isinstance(e[0], bool)
            and 0 <= e[0] < max_candidates and isinstance(e[1], bool) for e in entries):
        raise ArgumentError("checkpoint", f"{path} is damaged (its finished list is not [[index, accepted], ...])")
    return {c: ok for c, ok in entries}


def _outcomes(tensors: dict, finished: dict[int, bool], settings: dict, path) -> dict[int, Outcome]:
    index = tensors.get("index")
    m = int(index.shape[0]) if isinstance(index, torch.Tensor) and index.dim() == 1 else -1
    shape = (m, *settings["input_shape"])
    expected = {"images": (torch.float32, shape), "i": (torch.int64, (m,)), "j": (torch.int64, (m,)),
                "margins": (torch.float32, (m,)), "steps": (torch.int64, (m,))}
    if m < 0 or index.dtype != torch.int64 or (m > 0 and any(
            name not in tensors or tensors[name].dtype != dtype or tuple(tensors[name].shape) != size
            for name, (dtype, size) in expected.items())):
        raise ArgumentError("checkpoint", f"{path} is damaged (its tensors do not fit the settings)")
    indices = index.tolist()
    if set(indices) != {c for c, ok in finished.items() if ok} or len(set(indices)) != m:
        raise ArgumentError("checkpoint", f"{path} is damaged (its images and its accepted entries differ)")
    return {c: Outcome(True, tensors["images"][n], int(tensors["i"][n]), int(tensors["j"][n]),
                       float(tensors["margins"][n]), int(tensors["steps"][n])) for n, c in enumerate(indices)}


def remove_checkpoint(path) -> None:
    """The checkpoint of a finished run removed, with the temp files of its writers that were killed."""
    if path is not None:
        remove_saved(path)


def verify_resumed(outcomes: dict[int, Outcome], acceptance_model, k: float, lo: float, hi: float,
                   device, path, source=None) -> None:
    """Re-run float32 acceptance on every image a checkpoint claims: a forged or foreign
    checkpoint cannot slip points into the result that the owner does not accept. With the
    run's CandidateSource (``source``), each point's labels must be its candidate's own draw
    (a forged checkpoint relabelled natural images as boundary points), and its margin is the
    one measured here (to float noise: the search measured it in other batches). Steps are
    taken as written: nothing recomputes them."""
    if not outcomes:
        return
    from .acceptance import accept  # the same rule the engine applies

    order = sorted(outcomes)
    images = torch.stack([outcomes[c].image for c in order])
    if not torch.isfinite(images).all() or float(images.min()) < lo or float(images.max()) > hi:
        raise ArgumentError("checkpoint", f"{path} holds images outside the pixel box [{lo:g}, {hi:g}]")
    i = torch.tensor([outcomes[c].i for c in order], dtype=torch.int64)
    j = torch.tensor([outcomes[c].j for c in order], dtype=torch.int64)
    num_classes = None
    with torch.no_grad():
        num_classes = acceptance_model(images[:1].to(device)).shape[1]
    if int(torch.cat([i, j]).min()) < 0 or int(torch.cat([i, j]).max()) >= num_classes or bool((i == j).any()):
        raise ArgumentError("checkpoint", f"{path} holds labels that do not fit this model")
    if source is not None:
        _, drawn_i, drawn_j = source.make(order)
        if not (torch.equal(drawn_i.cpu(), i) and torch.equal(drawn_j.cpu(), j)):
            raise ArgumentError("checkpoint", f"{path} holds labels that are not its candidates' own draws: it was "
                                              "not made by this extraction; delete it to start over")
    ok, margins = accept(acceptance_model, images.to(device), i.to(device), j.to(device), k)
    if not bool(ok.all()):
        raise ArgumentError("checkpoint", f"{path} holds {int((~ok).sum())} images this model does not accept "
                                          "as fingerprints: it was not made by this extraction; delete it to "
                                          "start over")
    # The search measured them in other batches, so they agree to float noise, not to the bit;
    # the file's are kept when they agree (a resumed run gives the uninterrupted run's set).
    written = torch.tensor([outcomes[c].margin for c in order], dtype=torch.float32)
    if not torch.allclose(written, margins.cpu().float(), rtol=1e-3, atol=1e-3):
        raise ArgumentError("checkpoint", f"{path} holds margins this model does not give: it was not made by "
                                          "this extraction; delete it to start over")
