"""The README's Python examples run as written, against a trained run (RUN) and prepared data (DATA)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def python_examples() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_python_examples():
    assert len(python_examples()) >= 3


@pytest.mark.parametrize("index", [0, 1, pytest.param(2, marks=pytest.mark.slow)])
def test_readme_python_example_runs(index, model_dir, demo_data, tmp_path):
    code = python_examples()[index]
    env = {**os.environ, "RUN": str(model_dir), "DATA": str(demo_data)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the example prints what it shows"
    if "RunError" in code:
        assert "refused: cannot resume: the run was made with preset tiny, not big" in proc.stdout
