"""Side measurement for issue 10: protect at one owner seed with RefineConfig overrides, judged on
both beds (usage: python refine_weight_seed2.py SEED "negative_weight=1.0" ...)."""
import sys, json, time, torch
import ipguard_fast as ig
from ipguard_fast.data import load_digits
from ipguard_fast.evaluation import build_suspects
from ipguard_fast.models import DIGITS_ARCHITECTURES, DIGITS_EPOCHS, DIGITS_HARD_ARCHITECTURES, DIGITS_LR, DigitsMLP, train_digits_model
from ipguard_fast.selection import RefineConfig
from ipguard_fast.evaluation import metrics
from ipguard_fast.verdicts import matching_rate
seed = int(sys.argv[1]); cfgs = sys.argv[2:]
train = load_digits("train")
owner = train_digits_model("cnn", seed=seed)
beds = {}
for bed in ("demo", "hard"):
    hard = bed == "hard"
    beds[bed] = build_suspects(owner, train, negative_factories=DIGITS_HARD_ARCHITECTURES if hard else DIGITS_ARCHITECTURES,
                               negative_epochs=DIGITS_EPOCHS if hard else 5, negative_lr=DIGITS_LR if hard else 1e-3,
                               small_factory=DigitsMLP, seed=seed, quick=not hard)
for cfg in cfgs:
    kw = eval(f"dict({cfg})")
    t = time.time()
    fps = ig.protect(owner, train, 100, seed=seed, refine=RefineConfig(**kw), progress=False)  # the run cached references under a scratch folder; results do not depend on it
    out = [f"seed {seed} {cfg} ({time.time()-t:.0f} s, w_sel {fps.meta['protect']['negative_weight']})"]
    for bed, sus in beds.items():
        rates = [matching_rate(s.model, fps) for s in sus]
        pos = [r for r, s in zip(rates, sus) if s.role == "positive"]; neg = [r for r, s in zip(rates, sus) if s.role == "negative"]
        out.append(f"{bed} {metrics.aruc(pos, neg):.3f}/{metrics.roc_auc(pos, neg):.3f} minpos {min(pos):.2f} maxneg {max(neg):.2f}")
    print(" | ".join(out), flush=True)
