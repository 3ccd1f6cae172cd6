import json

import pytest

from adaptivestep.jsonl import DataError, JsonlWriter, iter_json, read_records, repair_tail
from adaptivestep.records import LabeledRecord, Problem, RecordError, Sample, StepSplit


def _sample(**kw):
    d = dict(problem_id="p", sample_index=0, prompt="q", prompt_ids=[1, 2], token_ids=[5, 6, 7],
             logprobs=[-0.1, -2.0, -0.5], token_end_chars=[1, 3, 4], text="abcd", finish_reason="stop",
             model="m", backend="fake", sampling={"temperature": 1.0}, seed=3)
    d.update(kw)
    return Sample(**d)


def test_round_trip_every_record_type(tmp_path):
    recs = [
        Problem(id="p", question="1+1?", kind="math", answer="2"),
        _sample(),
        StepSplit("p", 0, "confidence", [1, 3], 3, threshold=0.2),
        LabeledRecord(prompt="q", completions=["a", "bcd"], labels=[0.25, 1.0], problem_id="p"),
    ]
    for r in recs:
        path = tmp_path / f"{r.KIND}.jsonl"
        with JsonlWriter(path) as w:
            w.write(r)
            w.write(r)
        back = list(read_records(path, type(r)))
        assert back == [r, r]


def test_soft_labels_stay_floats(tmp_path):
    r = LabeledRecord(prompt="q", completions=["a", "b"], labels=[0.375, 1], problem_id="p")
    r.validate()
    with JsonlWriter(tmp_path / "l.jsonl") as w:
        w.write(r)
    back = next(read_records(tmp_path / "l.jsonl", LabeledRecord))
    assert back.labels == [0.375, 1.0] and all(type(x) is float for x in back.labels)


def test_token_text_maps_offsets():
    s = _sample()
    assert s.token_text(0, 1) == "a" and s.token_text(1, 3) == "bcd"
    assert StepSplit("p", 0, "x", [1, 3], 3).spans() == [(0, 1), (1, 3)]


@pytest.mark.parametrize("bad, match", [
    (dict(token_ids=[]), "empty response"),
    (dict(logprobs=[-0.1]), "same length"),
    (dict(logprobs=[0.5, -1.0, -1.0]), "<= 0"),
    (dict(finish_reason="eos"), "finish_reason"),
])
def test_sample_validation(bad, match):
    with pytest.raises(RecordError, match=match):
        _sample(**bad).validate()


def test_bad_records_name_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    good = json.dumps(Problem(id="a", question="q", kind="math").to_dict())
    p.write_text(good + "\n" + json.dumps({"id": "b", "question": "q", "kind": "poetry"}) + "\n")
    with pytest.raises(DataError, match=r"x.jsonl:2: .*unknown task kind 'poetry'"):
        list(read_records(p, Problem))
    p.write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=r"x.jsonl:2: malformed JSON"):
        list(read_records(p, Problem))
    p.write_text(json.dumps({"id": "a", "kind": "math"}) + "\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: .*missing field\(s\) question"):
        list(read_records(p, Problem))
    with pytest.raises(DataError, match="no such file"):
        list(read_records(tmp_path / "nope.jsonl", Problem))
    with pytest.raises(DataError, match=r"label 0 = 1.5 is outside"):
        p.write_text(json.dumps({"prompt": "q", "completions": ["a"], "labels": [1.5]}) + "\n")
        list(read_records(p, LabeledRecord))


def test_torn_tail_is_skipped_and_repaired(tmp_path):
    p = tmp_path / "t.jsonl"
    line = json.dumps(Problem(id="a", question="q", kind="math").to_dict())
    p.write_text(line + "\n" + line[: len(line) // 2])  # a writer killed mid-line
    with pytest.raises(DataError):
        list(iter_json(p))
    assert len(list(iter_json(p, tolerate_torn_tail=True))) == 1
    with JsonlWriter(p) as w:  # appending trims the torn line first: nothing earlier is lost
        w.write(Problem(id="b", question="q", kind="math"))
    assert [r.id for r in read_records(p, Problem)] == ["a", "b"]
    assert repair_tail(p) == 0


def test_data_formats_doc_shows_every_record_type():
    # docs/data_formats.md carries one example per record type, with exactly that type's fields
    import dataclasses
    import json as _json
    import re as _re
    from pathlib import Path as _Path

    from adaptivestep import records

    text = (_Path(__file__).resolve().parents[1] / "docs" / "data_formats.md").read_text()
    examples = [_json.loads(b) for b in _re.findall(r"```json\n(.*?)```", text, _re.DOTALL)]
    kinds = [c for c in vars(records).values() if isinstance(c, type) and issubclass(c, records._Record)
             and c is not records._Record]
    assert len(kinds) >= 8
    for cls in kinds:
        names = {f.name for f in dataclasses.fields(cls)}
        assert any(set(e) == names for e in examples), f"no example of {cls.__name__} in docs/data_formats.md"
