import json, sys
from pathlib import Path
def load(folder):
    out = {}
    for p in sorted(Path(folder).glob("*-seed*.json")):
        s = json.loads(p.read_text())["summary"]; sel = s["selected"]; v = sel["verdicts"]
        out[p.stem] = (sel["aruc"], sel["roc_auc"], len(v["false_accusations"]), len(v["missed"]))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
tot = [0]*8
for k in a:
    print(k, "ARUC %.3f -> %.3f  ROC %.3f -> %.3f  FA %d -> %d  missed %d -> %d" % (a[k][0], b[k][0], a[k][1], b[k][1], a[k][2], b[k][2], a[k][3], b[k][3]))
    for i in range(4): tot[2*i] += a[k][i]; tot[2*i+1] += b[k][i]
n = len(a)
print("mean ARUC %.3f -> %.3f, mean ROC %.3f -> %.3f, FA %d -> %d, missed %d -> %d" % (tot[0]/n, tot[1]/n, tot[2]/n, tot[3]/n, tot[4], tot[5], tot[6], tot[7]))
