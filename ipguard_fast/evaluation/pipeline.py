"""evaluate(): robustness and uniqueness of fingerprints against suspect models.

For each k: extract fingerprints from the owner, compute every suspect's matching rate,
then robustness R(t) (share of positives with rate >= t), uniqueness U(t) (share of
negatives with rate < t), ROC AUC and ARUC = integral over t in [0, 1] of min(R(t), U(t)).
With the "selected" method the same suspects also judge the fingerprints protect()
selects (one more run, side by side; given a test set, protect may also select among the
owner's mistakes on it); its reference models are checked to be none of the suspects.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..search import extract_fingerprints
from ..search.distributed import communicator
from ..selection.cache import CacheLocation
from ..selection.cache_key import data_digest
from ..selection.config import ProtectConfig
from ..selection.mistakes import mistakes_fingerprints
from ..selection.protect import run_protect
from ..train import accuracy
from ..verdict_threshold import DEFAULT_THRESHOLD, above_chance
from ..label_bias import beyond_label_bias
from ..verdicts import conclusive_threshold, resolve_threshold, suspect_answers
from .config import METHODS, EvaluationConfig, EvaluationResult, RunResult
from .judging import judged
from .suspects import Suspect, build_suspects, paper_suspects

__all__ = ["METHODS", "build_suspects", "check_disjoint", "evaluate", "run_evaluation", "selected_fields"]


def evaluate(owner: nn.Module, train_set: Dataset | None = None, *, input_shape: Sequence[int],
             suspects: Sequence[Suspect] | None = None,
             negative_factories: Mapping[str, Callable[[], nn.Module]] | None = None,
             negative_epochs: int = 5, negative_seeds: Sequence[int] | None = None,
             small_factory=None, quick: bool = True,
             ks: Sequence[float] = (1.0, 3.0, 10.0), n: int = 100, test_set: Dataset | None = None,
             owner_name: str = "owner", seed: int = 0, extract_options: Mapping | None = None,
             methods: Sequence[str] = ("ipguard",), selected: FingerprintSet | None = None,
             selection_options: Mapping | None = None, useful_drop: float | None = 0.10,
             log=print, suspect_cache=None, student_part: FingerprintSet | None = None) -> EvaluationResult:
    """Matching rates of every suspect on fingerprints extracted at each k, and ARUC / ROC AUC.

    Either pass `suspects`, or the owner's `train_set` and `negative_factories`
    (architecture name -> fresh model) to build the paper's suspects with
    build_suspects(). methods: "ipguard" (plain IPGuard at each k) and/or "selected":
    the `selected` set given, or protect(owner, train_set, n, **selection_options) (a
    `cache_dir` there is where it keeps its references). suspect_cache: where the suspects
    evaluate builds are kept as each is finished (a folder or a selection.CacheLocation;
    None: in memory only), so that a rerun after an interruption trains only the missing
    ones (evaluation/suspect_cache.py); suspects passed in are never cached. The keywords
    are EvaluationConfig's; run_evaluation takes the config itself. student_part: protect's
    student part beside `selected` (`ProtectConfig.students`; protect run here makes one when
    selection_options ask for it), judged as the run "students" and, with the selected run,
    in the result's combined_verdicts (a copy when either part shows it).
    """
    options = {_PROTECT_KEYWORDS.get(key, key): value for key, value in (selection_options or {}).items()
               if key not in ("progress", "log")}
    cache = options.pop("cache_dir", None)
    protect = ProtectConfig(**{"n": n, **options}) if options else None
    config = EvaluationConfig(ks=ks, n=n, seed=seed, methods=methods, search=dict(extract_options or {}),
                              protect=protect, reference_cache=cache, useful_drop=useful_drop)
    if suspects is not None and suspect_cache is not None:
        raise ArgumentError("suspect_cache", "caches the suspects evaluate builds, and suspects were given; build "
                                             "yours with build_variants or Bed.suspects(suspect_cache=...)")
    if suspects is None:
        if train_set is None or not negative_factories:
            raise ValueError("suspects: pass suspects, or train_set and negative_factories to build them")
        negatives = {"factories": negative_factories, "epochs": negative_epochs, "seeds": negative_seeds}
        comm = communicator()   # under torchrun each rank trains its share of the suspects
        suspects = paper_suspects(owner, train_set, negatives, small_factory=small_factory, seed=seed, quick=quick,
                                  log=log, suspect_cache=suspect_cache,
                                  share=(comm.rank, comm.world) if comm.world > 1 else None)
    return run_evaluation(owner, suspects, config, train_set=train_set, test_set=test_set, input_shape=input_shape,
                          owner_name=owner_name, selected=selected, log=log, student_part=student_part)


# protect()'s keywords that ProtectConfig names otherwise
_PROTECT_KEYWORDS = {"extract_options": "search"}


def run_evaluation(owner: nn.Module, suspects: Sequence[Suspect], config: EvaluationConfig, *,
                   input_shape: Sequence[int], train_set: Dataset | None = None, test_set: Dataset | None = None,
                   owner_name: str = "owner", selected: FingerprintSet | None = None, log=print,
                   student_part: FingerprintSet | None = None) -> EvaluationResult:
    """evaluate() with its settings in one EvaluationConfig and the suspects built."""
    _check_suspects(suspects)
    if "selected" in config.methods and selected is None and train_set is None:
        raise ValueError("train_set: the selected method builds its references from the owner's training data")
    if "mistakes" in config.methods and test_set is None:
        raise ValueError("test_set: the mistakes method takes the owner's mistakes on held-out data")
    if "selected" in config.methods and selected is not None:
        _check_selected(selected)
    if student_part is not None:
        _check_student_part(student_part, selected, config)
    # Under torchrun each rank scores its share of the suspects: those it built
    # (build_variants(share=...)) and a share of those every rank holds (extraction is
    # shared by extract_fingerprints itself); every rank ends with the whole table.
    comm = communicator()
    _agree(comm, owner, suspects, config, train_set, test_set)
    mine = _scored_here(suspects, comm)
    gathered = lambda score: comm.gather_dict({s.name: score(s) for s in mine})  # noqa: E731
    accuracies = gathered(lambda s: accuracy(s.model, test_set) if test_set is not None else None)

    owner_acc = accuracy(owner, test_set) if test_set is not None else None

    def judge(fps: FingerprintSet, seconds: float, **fields) -> RunResult:
        outcomes = gathered(lambda s: _outcome(s.model, fps))
        rows = [{"name": s.name, "family": s.family, "role": s.role, "accuracy": accuracies[s.name],
                 "matching_rate": outcomes[s.name][0], "beyond_label_bias": outcomes[s.name][1]} for s in suspects]
        threshold = resolve_threshold(None, fps)
        # As verify: no verdict at a threshold a model that guesses reaches (verdict_threshold.chance_rate).
        conclusive = conclusive_threshold(fps) and above_chance(
            DEFAULT_THRESHOLD if threshold is None else threshold, fps)
        aruc, roc_auc, verdicts = judged(rows, threshold, owner_acc, config.useful_drop, conclusive)
        return RunResult(n_fingerprints=len(fps), extract_seconds=seconds,
                         candidates_tried=fps.meta["candidates_tried"], suspects=rows, aruc=aruc, roc_auc=roc_auc,
                         verdicts=verdicts, **fields)

    runs = [_plain_run(owner, k, config, input_shape, judge, log) for k in
            (config.ks if "ipguard" in config.methods else ())]
    if "selected" in config.methods:
        run, part = _selected_run(owner, train_set, test_set, mine, comm, config, selected, judge, log)
        runs.append(run)
        part = student_part if student_part is not None else part
        if part is not None:
            runs.append(_student_run(part, judge, log))
    if "mistakes" in config.methods:
        runs.append(_mistakes_run(owner, test_set, config, judge, log))
    return EvaluationResult({"name": owner_name, "accuracy": owner_acc}, config.as_meta(), runs)


def _outcome(model, fps: FingerprintSet) -> tuple[float, bool]:
    """(matching rate, whether the matches go beyond the suspect's label frequencies: what
    verify asks before it calls a suspect a copy, label_bias.py)."""
    answers = suspect_answers(model, fps)
    return int((answers == fps.labels).sum()) / len(fps), beyond_label_bias(fps.labels, answers)


def _agree(comm, owner: nn.Module, suspects: Sequence[Suspect], config: EvaluationConfig, train_set,
           test_set) -> None:
    """Under torchrun, refuse ranks given different settings, owners, data or suspects (their
    rows would be merged into one table), naming the first that differs."""
    if comm.world == 1:
        return
    def weights(model) -> str:
        return state_dict_sha256(model)[:16] if isinstance(model, nn.Module) else type(model).__name__

    def described(s: Suspect) -> str:   # a model one rank built is that rank's alone to compare
        return f"{s.name}: {weights(s.model)}" if s.rank is None else f"{s.name}: built by rank {s.rank}"

    def digest(data) -> str | None:
        return None if data is None else f"data of digest {data_digest(data)[:16]}"

    comm.agree({**config.as_meta(), "owner": f"weights of SHA-256 {weights(owner)}", "train_set": digest(train_set),
                "test_set": digest(test_set), "suspects": [described(s) for s in suspects]})


def _scored_here(suspects: Sequence[Suspect], comm) -> list[Suspect]:
    """The suspects this rank scores: those it built, and every world-th of those that every
    rank holds. A suspect built for another run's ranks is refused, naming it."""
    for s in suspects:
        if s.rank is not None and (s.rank >= comm.world or (s.rank == comm.rank) != (s.model is not None)):
            raise ValueError(f"suspects: {s.name} was built for rank {s.rank} of a torchrun run (build_variants' "
                             f"share), and this is rank {comm.rank} of {comm.world}: build the suspects in this run")
    everyone = [s for s in suspects if s.rank is None]
    return [s for s in suspects if s.rank == comm.rank] + everyone[comm.rank::comm.world]


def _plain_run(owner, k: float, config: EvaluationConfig, input_shape, judge, log) -> RunResult:
    start = time.perf_counter()
    fps = extract_fingerprints(owner, config.n, k=float(k), input_shape=input_shape, seed=config.seed,
                               **{"progress": False, **config.search})
    run = judge(fps, time.perf_counter() - start, method="ipguard", k=float(k))
    log(f"k={k:g}: {len(fps)} fingerprints in {run.extract_seconds:.1f} s, ARUC {run.aruc:.3f}, "
        f"ROC AUC {run.roc_auc:.3f}")
    return run


def _selected_run(owner, train_set, test_set, mine, comm, config: EvaluationConfig, selected, judge,
                  log) -> tuple[RunResult, FingerprintSet | None]:
    """protect's set (or the one given) judged, and the student part protect made (None when
    it made none or the set was given); protect also gets the test set as held-out
    data, so that its selection may take the owner's mistakes (the baseline) beside its points.
    Each rank checks the suspects it scores (`mine`), and all refuse alike."""
    start = time.perf_counter()
    references, part = (), None
    if selected is None:
        result = run_protect(owner, train_set, config.protect_config(), cache=CacheLocation(config.reference_cache),
                             held_out=test_set, progress=False, log=log)
        selected, references, part = result.fingerprints, result.references, result.students
    try:
        check_disjoint(mine, selected, references)
        problem = None
    except ValueError as exc:
        problem = str(exc)
    problem = next((p for p in comm.exchange(problem) if p), None)
    if problem is not None:
        raise ValueError(problem)
    run = judge(selected, time.perf_counter() - start, **selected_fields(selected))
    log(f"{run.label}: ARUC {run.aruc:.3f}, ROC AUC {run.roc_auc:.3f}")
    return run, part


def _student_run(part: FingerprintSet, judge, log) -> RunResult:
    """protect's student part judged by the same suspects at its own threshold (its
    references are protect's, seeded apart from every suspect, as the main part's are)."""
    run = judge(part, 0.0, method="students", k=None, label="student part", threshold=part.meta.get("threshold"))
    log(f"student part: ARUC {run.aruc:.3f}, ROC AUC {run.roc_auc:.3f}")
    return run


def _mistakes_run(owner, test_set, config: EvaluationConfig, judge, log) -> RunResult:
    start = time.perf_counter()
    fps = mistakes_fingerprints(owner, test_set, config.n)
    run = judge(fps, time.perf_counter() - start, method="mistakes", k=None, label="mistakes")
    log(f"mistakes: {len(fps)} of the owner's held-out mistakes, ARUC {run.aruc:.3f}, ROC AUC {run.roc_auc:.3f}")
    return run


def _check_suspects(suspects) -> None:
    if not suspects:
        raise ValueError("suspects: need at least one positive and one negative suspect")
    roles = {s.role for s in suspects}
    if roles != {"positive", "negative"}:
        raise ValueError(f"suspects: need both positive and negative suspects, got roles {sorted(roles)}")
    names = [s.name for s in suspects]   # each row's rate and accuracy are looked up by name
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise ValueError(f"suspects: names must be unique (rates are reported by name), {repeated!r} is given "
                         "more than once")


def _check_selected(selected) -> None:
    """The given set's threshold, read when it is judged after every plain run, checked before any."""
    if not isinstance(selected, FingerprintSet):
        raise ValueError(f"selected: must be a FingerprintSet, got {type(selected).__name__}")
    try:
        resolve_threshold(None, selected)
        conclusive_threshold(selected)
    except ValueError as exc:
        raise ValueError(f"selected: {exc}") from exc


def _check_student_part(part, selected, config: EvaluationConfig) -> None:
    """A given student part: judged beside a selected set, a student part, with a threshold."""
    if "selected" not in config.methods or selected is None:
        raise ValueError("student_part: is judged beside the selected set it was made with: give selected= and the "
                         "selected method")
    _check_selected(part)
    if part.meta.get("part") != "students":
        raise ValueError("student_part: not a student part (protect's ProtectConfig.students makes one)")


def selected_fields(fps: FingerprintSet) -> dict:
    """How a selected set's run is labelled in a report: its k and what selection chose."""
    protect = fps.meta.get("protect", {})
    chosen = protect.get("chosen") or f"k={fps.meta.get('k')}"
    selection = fps.meta.get("selection", {})
    return {"method": "selected", "k": None, "label": f"selected ({chosen})", "threshold": fps.meta.get("threshold"),
            "selection": {"pool_size": selection.get("pool_size"), "score": selection.get("score"),
                          "chosen": chosen, "candidates": protect.get("candidates"),
                          "timings": protect.get("timings")}}


def check_disjoint(suspects: Sequence[Suspect], selected: FingerprintSet, references: Sequence = ()) -> None:
    """No evaluated suspect is a reference of the selection: same weights (by the hashes the
    selected set records) or any shared tensor (with the reference objects, `references`)."""
    recorded = selected.meta.get("selection", {}).get("references", {})
    hashes = {entry.get("sha256") for role in recorded.values() for entry in role} - {None}
    storages = {t.untyped_storage().data_ptr() for ref in references
                for t in list(ref.model.parameters()) + list(ref.model.buffers()) if t.numel()}
    for suspect in (s for s in suspects if s.model is not None):   # another rank's: checked there
        try:
            same = state_dict_sha256(suspect.model) in hashes
        except ValueError:   # non-tensor state: compared by storage only
            same = False
        tensors = [t for t in list(suspect.model.parameters()) + list(suspect.model.buffers()) if t.numel()]
        if same or any(t.untyped_storage().data_ptr() in storages for t in tensors):
            raise ValueError(f"suspects: {suspect.name} is one of the selection's reference models (or shares "
                             "weights with one); the selected fingerprints would be judged on their own references")
