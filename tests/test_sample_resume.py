import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FakeBackend  # noqa: E402

from adaptivestep.backends.base import SamplingConfig  # noqa: E402
from adaptivestep.jsonl import read_records  # noqa: E402
from adaptivestep.records import Problem, Sample, problems_path_for  # noqa: E402
from adaptivestep.sample import record_problems, sample_problems  # noqa: E402

PROBS = [Problem(id=f"p{i}", question=f"question {i}", kind="math", answer="1") for i in range(3)]


def _run(path, n, batch=4):
    b = FakeBackend()
    return sample_problems(b, PROBS, path, n=n, config=SamplingConfig(max_tokens=12), seed=7,
                           render=lambda p: b.chat_prompt(p.question), batch_sequences=batch, progress=False)


def _by_key(path):
    return {s.key: (s.token_ids, s.logprobs) for s in read_records(path, Sample)}


def test_resume_finishes_partial_problems_exactly(tmp_path):
    full = tmp_path / "full.jsonl"
    _run(full, 5)
    part = tmp_path / "part.jsonl"
    _run(part, 2, batch=1)  # an "interrupted" run: only 2 of 5 per problem, different batching
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:-1]) + lines[-1][:10])  # and a torn last line from the kill
    s = _run(part, 5)
    assert s.already_done == len(lines) - 1
    assert _by_key(part) == _by_key(full)
    again = _run(part, 5)
    assert again.written == 0  # complete: nothing regenerated


def test_logprobs_match_teacher_forced_score(tmp_path):
    path = tmp_path / "s.jsonl"
    _run(path, 2)
    b = FakeBackend()
    for s in read_records(path, Sample):
        assert b.score(s.prompt_ids, s.token_ids) == s.logprobs
        assert s.text == b.detokenize(s.token_ids)


def test_record_problems_appends_only_new_ones(tmp_path):
    samples = tmp_path / "run" / "samples.jsonl"
    samples.parent.mkdir()
    pfile = record_problems(PROBS[:2], samples)
    assert pfile == problems_path_for(samples) == samples.with_name("problems.jsonl")
    record_problems(PROBS, samples)  # a larger re-run adds p2 only
    record_problems(PROBS[1:], samples)
    assert [p.id for p in read_records(pfile, Problem)] == ["p0", "p1", "p2"]
    assert list(read_records(pfile, Problem)) == PROBS
