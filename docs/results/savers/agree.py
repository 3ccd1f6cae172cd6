"""Labels and costs of each saver against the exhaustive labels, on the first K_e questions."""
import json

plan = json.load(open("plan.json"))
probs = [json.loads(line)["id"] for line in open("/work/corpus/exh/problems.jsonl")][: plan["k_e"]]


def read(path):
    return {(r["problem_id"], r["sample_index"]): r for r in map(json.loads, open(path)) if r["problem_id"] in probs}


sets = {"exhaustive": read("/work/corpus/exh/labels-confidence.jsonl"), "early-stop (replayed)": read("es/labels-confidence.jsonl"),
        "early stop + first-error (replayed)": read("esfe/labels-confidence.jsonl"),
        "early stop + first-error (as built, 2026-12-02)": read("/work/corpus/gsm8k-easy/labels-confidence.jsonl")}
ref = sets["exhaustive"]
out = {"k_e": plan["k_e"], "responses": len(ref)}
steps_ref = sum(len(r["hard_labels"]) for r in ref.values())
for name, s in sets.items():
    assert set(s) == set(ref), name
    same = sum(a == b for k in ref for a, b in zip(ref[k]["hard_labels"], s[k]["hard_labels"]))
    nonfinal = [(a, b) for k in ref for a, b in zip(ref[k]["hard_labels"][:-1], s[k]["hard_labels"][:-1])]
    tok = sum(r["cost"]["generated_tokens"] for r in s.values())
    rolls = sum(r["cost"]["rollouts"] for r in s.values())
    out[name] = {"tokens": tok, "rollouts": rolls, "tokens_share_of_exhaustive": tok / sum(r["cost"]["generated_tokens"] for r in ref.values()),
                 "step_label_agreement": same / steps_ref,
                 "non_final_step_agreement": sum(a == b for a, b in nonfinal) / len(nonfinal),
                 "responses_all_labels_equal": sum(ref[k]["hard_labels"] == s[k]["hard_labels"] for k in ref) / len(ref)}
    print(f"{name:48s} tokens {tok:9,.0f} ({out[name]['tokens_share_of_exhaustive']:.3f} of exhaustive), rollouts {rolls:6,.0f}, "
          f"step labels equal {100 * same / steps_ref:.1f}% (non-final {100 * out[name]['non_final_step_agreement']:.1f}%), "
          f"responses all equal {100 * out[name]['responses_all_labels_equal']:.1f}%")
soft = [x for r in ref.values() for x in r["soft_labels"][:-1]]
out["soft_strictly_between_share"] = sum(0 < x < 1 for x in soft) / len(soft)
out["positive_share"] = sum(x for r in ref.values() for x in r["hard_labels"]) / steps_ref
print(f"{len(ref)} responses, {steps_ref} steps, {100 * out['positive_share']:.1f}% positive; non-final steps with 0 < soft < 1: "
      f"{100 * out['soft_strictly_between_share']:.1f}%")
print(json.dumps(out))
# the same seeded rollouts on two CPUs: steps where the as-built run drew all 4 rollouts, as the exhaustive one did
built = sets["early stop + first-error (as built, 2026-12-02)"]
same_tok = diff_tok = 0
for k, r in ref.items():
    for a, b in zip(r["rollouts"], built[k]["rollouts"]):
        if not b["inferred"] and len(b["outcomes"]) == 4 and a["seeds"] == b["seeds"] and b["tokens"]:
            same_tok += a["tokens"] == b["tokens"]
            diff_tok += a["tokens"] != b["tokens"]
print(f"steps whose 4 seeded rollouts ran in both runs: {same_tok + diff_tok}; same total tokens in {same_tok}, different in {diff_tok}")
