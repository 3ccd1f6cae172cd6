"""label_job's labelling job on the continuously batching fake backend; run as a script so tests can kill it.

usage: label_stream_job.py DIR OUT STEP_S FINISHED_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import label_job  # noqa: E402
from stream_fakes import StreamingFakeBackend  # noqa: E402

from adaptivestep.label import LabelConfig, label_files  # noqa: E402

if __name__ == "__main__":
    d, out, step_s, finished = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    be = StreamingFakeBackend(slots=4, step_s=step_s, finished_file=finished)
    label_files(be, label_job.judge, {p.id: p for p in label_job.PROBLEMS}, d / "samples.jsonl",
                d / "splits.jsonl", d / out, LabelConfig(max_tokens=20, rollouts=4), progress=False)
