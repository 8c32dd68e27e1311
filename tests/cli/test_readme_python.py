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


# translate, inspect, stream, train, export: each is run below; a new example must be added there
EXAMPLES = 5
SLOW = {3, 4}  # train and export: tens of seconds each


def test_the_readme_has_exactly_the_examples_this_file_runs():
    assert len(python_examples()) == EXAMPLES


@pytest.mark.parametrize("index", [pytest.param(i, marks=[pytest.mark.slow] if i in SLOW else [])
                                   for i in range(EXAMPLES)])
def test_readme_python_example_runs(index, model_dir, demo_data, tmp_path):
    code = python_examples()[index]
    # one thread: torch's default of one per core crawls on a CI machine whose cores are busy
    env = {**os.environ, "RUN": str(model_dir), "DATA": str(demo_data), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the example prints what it shows"
    if "TrainRequest" in code:
        assert "refused: cannot resume: the run was made with preset tiny, not big" in proc.stdout
    if "translate_files" in code:  # what its comments say it prints
        assert "\n2 1 2\n" in proc.stdout and "precision must be fp32, bf16 or int8, got 'fp8'" in proc.stdout
    if "onnxruntime" in code:
        assert "decoder.onnx" in proc.stdout and "input_ids" in proc.stdout
