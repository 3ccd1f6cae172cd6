"""After the exhaustive labelling is stopped: K_e, the subset files for the replays, and the equal budget."""
import json
import sys
from pathlib import Path

from adaptivestep.bench.prm_quality_items import corpus_items, questions_within

EXH, BUILT = Path("/work/corpus/exh"), Path("/work/corpus/gsm8k-easy")
probs = [json.loads(line)["id"] for line in open(EXH / "problems.jsonl")]
done = {}
for line in open(EXH / "labels-confidence.jsonl"):
    r = json.loads(line)
    done.setdefault(r["problem_id"], set()).add(r["sample_index"])
k_e = 0
for q in probs:
    if len(done.get(q, ())) < 4:
        break
    k_e += 1
keep = set(probs[:k_e])
sub = Path("subset")
sub.mkdir(exist_ok=True)
for name in ("samples.jsonl", "split-confidence.jsonl"):
    with open(EXH / name) as f, open(sub / name, "w") as g:
        g.writelines(line for line in f if json.loads(line)["problem_id"] in keep)
exh = [i for i in corpus_items(EXH) if i.problem_id in keep]
budget = sum(i.label_tokens for i in exh)
k_a = questions_within(corpus_items(BUILT), BUILT, budget)
out = {"k_e": k_e, "exhaustive_responses": len(exh), "budget": budget, "k_a": k_a}
json.dump(out, open("plan.json", "w"))
print(json.dumps(out))
sys.exit(0 if k_e else 1)
