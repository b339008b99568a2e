"""Half cap (the new default) against the plain top n on the same references, pools and suspects."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])


def rows(variant):
    out = {}
    for part in ("DH", "F"):
        f = root / variant / part / "summary.json"
        if f.exists():
            for r in json.load(open(f))["rows"]:
                out[(r["bed"], r["seed"])] = r
    return out


def cell(r, what):
    if r is None:
        return "n/a"
    c, v = r["selected"], r["selected"]["verdicts"]
    return {"aruc": "%.3f" % c["aruc"], "roc": "%.3f" % c["roc_auc"], "t": "%.2f" % v["threshold"],
            "acc": ", ".join(v["false_accusations"]) or "none", "miss": str(len(v["missed"]))}[what]


def bias(r):
    if r is None:
        return "n/a"
    return "; ".join(",".join(r[m]["verdicts"].get("label_bias", [])) or "-" for m in ("selected", "plain", "mistakes") if m in r)


half, plain = rows("half"), rows("plain")
print("| bed | seed | selected ARUC plain -> half | ROC AUC | threshold | falsely accused | copies missed | no copy by label bias (selected; plain k=3; mistakes), plain / half |")
print("|---|---:|---|---|---|---|---|---|")
tot = {"acc": [0, 0], "miss": [0, 0], "aruc": [[], []], "roc": [[], []]}
for key in sorted(set(half) | set(plain)):
    p, h = plain.get(key), half.get(key)
    for i, r in enumerate((p, h)):
        if r:
            v = r["selected"]["verdicts"]
            tot["acc"][i] += len(v["false_accusations"]); tot["miss"][i] += len(v["missed"])
            tot["aruc"][i].append(r["selected"]["aruc"]); tot["roc"][i].append(r["selected"]["roc_auc"])
    print(f"| {key[0]} | {key[1]} | " + " | ".join(f"{cell(p, w)} -> {cell(h, w)}" for w in ("aruc", "roc", "t", "acc", "miss"))
          + f" | {bias(p)} / {bias(h)} |")


def mean(v):
    return sum(v) / len(v) if v else float("nan")


print()
print(f"cells: plain {len(tot['aruc'][0])}, half {len(tot['aruc'][1])}; accused {tot['acc'][0]} -> {tot['acc'][1]}, "
      f"missed {tot['miss'][0]} -> {tot['miss'][1]}, mean selected ARUC {mean(tot['aruc'][0]):.3f} -> "
      f"{mean(tot['aruc'][1]):.3f}, mean ROC AUC {mean(tot['roc'][0]):.3f} -> {mean(tot['roc'][1]):.3f}")


# What the plain top n gave under the verdict before the label-bias test (rate >= threshold alone).
print()
print("| bed | seed | plain top n, old verdict: accused / missed | plain top n, with the label-bias test: accused / missed | half cap, with the test: accused / missed |")
print("|---|---:|---|---|---|")
for key in sorted(plain):
    bed, seed = key
    part = "F" if bed == "foreign" else "DH"
    old = {}
    for variant in ("plain", "half"):
        f = root / variant / part / f"{bed}-seed{seed}.json"
        run = next(r for r in json.load(open(f))["runs"] if r["method"] == "selected")
        t = run["verdicts"]["threshold"]
        rows = run["suspects"]
        acc = [r["name"] for r in rows if r["role"] == "negative" and r["matching_rate"] >= t]
        miss = [r["name"] for r in rows if r["role"] == "positive" and r.get("counted", True) and r["matching_rate"] < t]
        old[variant] = (len(acc), len(miss), len(run["verdicts"]["false_accusations"]), len(run["verdicts"]["missed"]))
    print(f"| {bed} | {seed} | {old['plain'][0]} / {old['plain'][1]} | {old['plain'][2]} / {old['plain'][3]} | {old['half'][2]} / {old['half'][3]} |")
