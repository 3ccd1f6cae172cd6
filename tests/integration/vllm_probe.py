"""Run by .venv-vllm's python from tests/integration/test_vllm.py: opens the vllm backend on an HF model
directory and prints one JSON object with what the test compares against llama.cpp and HF.

argv: MODEL_DIR PROMPT_IDS_JSON TOKEN_IDS_JSON
"""

from __future__ import annotations

import json
import sys

from adaptivestep.backends.base import GenRequest, SamplingConfig
from adaptivestep.backends.vllm import VLLMBackend


def main() -> None:
    model, prompt, tokens = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    be = VLLMBackend(model, n_ctx=1024, n_threads=1, kv_cache_gib=1)
    cfg = SamplingConfig(max_tokens=32, top_logprobs=2)
    p = tuple(prompt)
    one = GenRequest(p, n=1, seed=7, config=cfg)
    alone = [be.generate([one])[0][0] for _ in range(2)]
    # the same continuation inside a batch of 8 requests, and continuations 0..3 asked together vs alone
    crowd = [GenRequest(p, n=1, seed=100 + i, config=cfg) for i in range(7)]
    batched = be.generate([*crowd[:3], one, *crowd[3:]])[3][0]
    four = be.generate([GenRequest(p, n=4, seed=11, config=cfg)])[0]
    singles = [be.generate([GenRequest(p, n=1, seed=11, first_index=j, config=cfg)])[0][0] for j in range(4)]
    out = {
        "score": be.score(prompt, tokens),
        "next_logprobs_at_0": float(be.next_logprobs(prompt)[tokens[0]]),
        "alone": [g.token_ids for g in alone],
        "alone_logprobs": alone[0].logprobs,
        "alone_rescored": be.score(prompt, alone[0].token_ids),
        "top": alone[0].top_logprobs[0],
        "batched": batched.token_ids,
        "four": [g.token_ids for g in four],
        "singles": [g.token_ids for g in singles],
        "text": alone[0].text,
        "ends": alone[0].token_end_chars,
        "detok": be.detokenize(alone[0].token_ids),
    }
    be.close()
    print("PROBE " + json.dumps(out))


if __name__ == "__main__":
    main()
