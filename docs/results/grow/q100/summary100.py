"""The secondary table of "Resumed toward 100 questions": per size, step AUC (pooled / per fold) and
within-question AUC (min) of the pre-registered scorers at each fold seed and their mean over the seeds.

Usage: python summary100.py q100/curve-s0.json q100/curve-s1.json ...  (from /work/corpus/grow)"""
import gzip
import json
import sys

import numpy as np

SCORERS = ["prm:smollm2-135m", "prm:default", "prm-x-confidence:smollm2-135m", "confidence-mean"]
KEYS = ["step_auc", "step_auc_fold_mean", "within_question_auc_min"]


def load(path: str) -> dict:
    raw = open(path, "rb").read()
    return json.loads(gzip.decompress(raw) if path.endswith(".gz") else raw)


runs = [load(p) for p in sys.argv[1:]]
sizes = sorted({int(s) for r in runs for s in r["curve"]})
print("| training responses | scorer | " + " | ".join(f"seed {i}" for i in range(len(runs))) + " | mean |")
print("|---|---|" + "---|" * (len(runs) + 1))
for size in sizes:
    for sc in SCORERS:
        cells, vals = [], []
        for r in runs:
            m = r["curve"].get(str(size), {}).get(sc)
            cells.append("-" if m is None else " / ".join(f"{m[k]:.3f}" for k in KEYS))
            if m is not None:
                vals.append([m[k] for k in KEYS])
        mean = " / ".join(f"{x:.3f}" for x in np.mean(vals, axis=0)) if len(vals) == len(runs) else "-"
        print(f"| {size} | {sc} | " + " | ".join(cells) + f" | {mean} |")
