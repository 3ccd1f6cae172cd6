"""The third fresh test's N = 4 Best-of-N rows from its saved candidates (docs/prm_quality.md, "Re-read under
the tie rule of 2026-12-07"). Run from the repository root: `python docs/results/fresh3-retie.py`; with the code
before that date (e.g. `git worktree add /tmp/old f0eed8f~1` and `PYTHONPATH=/tmp/old/src`) it prints the
lowest-index column."""
import gzip
import json

from adaptivestep.bench.prm_quality_pair import pools_from_records
from adaptivestep.prm.quality import bon_vs_majority

recs = json.load(gzip.open("docs/results/fresh3-candidates.json.gz"))["candidates"]
for scorer in ["prm-x-confidence:default", "prm:smollm2-135m", "prm:default", "confidence-mean"]:
    pools = pools_from_records(recs, scorer)
    for rule in ["prm-min", "weighted-majority"]:
        r = bon_vs_majority(pools, rule, 4, seed=0)
        print(f"{scorer:28s} {rule:18s} acc {100 * r.acc:.1f} majority {100 * r.majority:.1f} "
              f"diff {100 * r.diff:+.1f} [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}] q {r.questions}")
