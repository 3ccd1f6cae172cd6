"""The README's Python API script runs as written (it is read from README.md, so the two cannot drift)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "README.md: no python block in the Python API section"
    return m.group(1)


def test_readme_python_api_script_runs(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", readme_script()], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^prm-min: candidate \d, (correct|wrong)$", r.stdout, re.MULTILINE), r.stdout
    assert "TVD: " in r.stdout
    assert (tmp_path / "prm").is_dir() and (tmp_path / "labels.jsonl").stat().st_size > 0
