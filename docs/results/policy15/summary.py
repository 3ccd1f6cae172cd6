"""The code corpus' learning curve as a Markdown table, from `bench prm-quality --out code15.json` (kept gzipped).

Usage: python docs/results/policy15/summary.py docs/results/policy15/code15.json.gz > code15-summary.md
Each cell: step AUC pooled / per fold, response AUC (min), within-question AUC (min), BoN@4 (min) - majority
with its paired bootstrap 95% interval.
"""

import sys
from pathlib import Path

from adaptivestep.bench.prm_quality_pair import read_run

run = read_run(Path(sys.argv[1]))
curve = run["curve"]
names = list(curve[max(curve, key=int)])
print(f"{run['responses']} responses; labels cost {run['label_tokens']:,} rollout tokens\n")
print("| scorer | training responses | step AUC pooled / per fold | response AUC (min) | within-question AUC (min) | BoN@4 min - majority |")
print("|---|---|---|---|---|---|")
for name in names:
    for size in sorted(curve, key=int):
        m = curve[size].get(name)
        if m is None:
            continue
        b = m["bon_min"]
        print(f"| {name} | {size} ({run['train_label_tokens'][size] / 1000:.0f}k tokens) | {m['step_auc']:.3f} / "
              f"{m['step_auc_fold_mean']:.3f} | {m['response_auc_min']:.3f} | {m['within_question_auc_min']:.3f} | "
              f"{100 * b['diff']:+.1f} [{100 * b['lo']:+.1f}, {100 * b['hi']:+.1f}] "
              f"({100 * b['acc']:.1f}% vs {100 * b['majority']:.1f}%) |")
