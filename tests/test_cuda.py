"""CUDA: train, translate and inspect on a GPU, mixed precision, compile, and DDP over nccl.
Marked `cuda`; skipped where torch sees no CUDA device (CI, this project's CPU machine).
bench/gpu.sh runs them on a machine that has one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests_shared import TINY_RUN

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

REPO = Path(__file__).resolve().parents[1]


def cli(*args, launcher=(sys.executable, "-m", "cli.main")):
    return subprocess.run([*launcher, *map(str, args)], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_train_translate_inspect_on_cuda(demo_data, tmp_path, precision):
    run = tmp_path / "run"
    done = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--device", "cuda", "--precision", precision,
               "--max-steps", "40", "--eval-every", "20")
    assert done.returncode == 0, done.stderr
    assert "on cuda" in done.stderr + done.stdout
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["event"] == "train"]
    assert losses[-1] < losses[0]
    if precision == "fp16":
        state = json.loads((run / "checkpoints" / "step-0000040" / "state.json").read_text())
        assert state["grad_scaler"]["scale"] > 0
    out = subprocess.run([sys.executable, "-m", "cli.main", "translate", "--model", str(run), "--device", "cuda"],
                         input="I am a student.\n", cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, out.stderr
    shown = cli("inspect-attention", "--model", run, "--device", "cuda", "I am a student.")
    assert shown.returncode == 0, shown.stderr


def test_compile_on_cuda(demo_data, tmp_path):
    done = cli("train", "--data", demo_data, "--out", tmp_path / "run", *TINY_RUN, "--device", "cuda",
               "--precision", "bf16", "--compile", "--max-steps", "20", "--eval-every", "20")
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_over_nccl(demo_data, tmp_path):
    run = tmp_path / "run"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cli.main")
    done = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--device", "cuda", "--max-steps", "20",
               "--eval-every", "10", launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    replicas = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(l)["event"] == "replicas"]
    assert replicas and replicas[0]["identical"]
