"""train on torch.distributed: a real 2-process gloo run through torchrun, against one process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests_shared import TINY_RUN
from data.batching import SplitBatches
from transformer_cli.distributed import ShardedHooks, World
from transformer_cli.run_dir import RunHooks

REPO = Path(__file__).resolve().parents[2]
STEPS = ["--eval-every", "10", "--log-every", "5", "--keep-last", "10"]


def launch(*args, processes: int = 2):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "cli.main", *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its workers (which run in sessions of their own), as a crash would."""
    def children(p: int) -> list[int]:
        try:
            found = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            return []
        return [int(c) for c in found] + [g for c in found for g in children(int(c))]

    for p in [pid, *children(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def train_args(data, out, *extra):
    return ["train", "--data", data, "--out", out, *TINY_RUN, *STEPS, *extra]


def events(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(demo_data, tmp_path):
    ddp = launch(*train_args(demo_data, tmp_path / "ddp", "--max-steps", "30"))
    out, err = ddp.communicate(timeout=600)
    assert ddp.returncode == 0, err
    single = subprocess.run([sys.executable, "-m", "cli.main",
                             *map(str, train_args(demo_data, tmp_path / "one", "--max-steps", "30", "--accumulate", "2"))],
                            cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    run = tmp_path / "ddp"
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    [replicas] = events(run, "replicas")
    assert replicas["identical"] and len(set(replicas["fingerprints"])) == 1
    # rank 0 alone writes and shows: every event once, one summary
    assert [e["step"] for e in events(run, "train")] == [5, 10, 15, 20, 25, 30]
    assert [e["step"] for e in events(run, "eval")] == [10, 20, 30]
    assert out.count("training finished") == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000010", "step-0000020", "step-0000030"]
    # the same batches per update as one process accumulating 2: tokens equal, losses close (dropout differs)
    ddp_train, one_train = events(run, "train"), events(tmp_path / "one", "train")
    assert [e["step"] for e in one_train] == [e["step"] for e in ddp_train]
    first = ddp_train[0]["loss"]
    for a, b in zip(ddp_train, one_train):
        assert abs(a["loss"] - b["loss"]) <= 0.05 * b["loss"], (a["loss"], b["loss"])
    assert ddp_train[-1]["loss"] < 0.75 * first


@pytest.mark.slow
def test_two_processes_accumulating_train_like_one_accumulating_twice_as_much(demo_data, tmp_path):
    ddp = launch(*train_args(demo_data, tmp_path / "ddp", "--max-steps", "10", "--accumulate", "2"))
    out, err = ddp.communicate(timeout=600)
    assert ddp.returncode == 0, err
    single = subprocess.run([sys.executable, "-m", "cli.main", *map(str, train_args(
        demo_data, tmp_path / "one", "--max-steps", "10", "--accumulate", "4"))], cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    [replicas] = events(tmp_path / "ddp", "replicas")
    assert replicas["identical"]
    ddp_train, one_train = events(tmp_path / "ddp", "train"), events(tmp_path / "one", "train")
    assert [e["step"] for e in ddp_train] == [e["step"] for e in one_train] == [5, 10]
    for a, b in zip(ddp_train, one_train):
        assert abs(a["loss"] - b["loss"]) <= 0.05 * b["loss"], (a["loss"], b["loss"])


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(demo_data, tmp_path):
    args = ("--max-steps", "60")
    full = launch(*train_args(demo_data, tmp_path / "full", *args))
    assert full.wait(timeout=600) == 0, full.communicate()
    killed = launch(*train_args(demo_data, tmp_path / "killed", *args))
    first = tmp_path / "killed" / "checkpoints" / "step-0000010"
    while not first.exists():
        assert killed.poll() is None, killed.communicate()
    kill_tree(killed.pid)
    killed.wait()
    assert not (tmp_path / "killed" / "checkpoints" / "step-0000060").exists(), "killed before the end"
    # a different number of processes is refused in one line, nothing changed
    one = subprocess.run([sys.executable, "-m", "cli.main", "train", "--resume", tmp_path / "killed"],
                         cwd=REPO, capture_output=True, text=True)
    assert one.returncode == 1 and one.stderr.count("\n") == 1
    assert "trained by 2 process(es), this launch has 1" in one.stderr
    resumed = launch("train", "--resume", tmp_path / "killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    for name in ("checkpoints/step-0000060/model.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "killed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [e["step"] for e in events(tmp_path / "killed", "eval")] == [10, 20, 30, 40, 50, 60]


class FakeSplit(SplitBatches):
    def __init__(self, n_batches: int) -> None:  # no dataset: one row per batch
        self.n = n_batches

    def plan(self, seed, epoch):
        return [np.array([i]) for i in range(self.n)]

    def make(self, rows):
        return torch.tensor(rows)


class FakeInner:
    batches = RunHooks.batches  # the real slicing of the global order

    def __init__(self, n_batches: int) -> None:
        self.train, self.device = FakeSplit(n_batches), torch.device("cpu")
        self.cfg = SimpleNamespace(seed=1)


def shard(rank: int, size: int, n_batches: int, start: int = 0) -> list[int]:
    from unittest import mock

    hooks = ShardedHooks(FakeInner(n_batches), World(rank, size, rank))
    with mock.patch("transformer_cli.distributed.barrier"):  # no process group here: the ranks are imagined
        return [int(b) for b in hooks.batches(0, start)]


def test_ranks_take_interleaved_shares_of_the_global_order():
    assert shard(0, 2, 10) == [0, 2, 4, 6, 8] and shard(1, 2, 10) == [1, 3, 5, 7, 9]
    # an uneven tail is dropped so every rank takes as many batches (DDP would wait forever otherwise)
    assert [len(shard(r, 3, 11)) for r in range(3)] == [3, 3, 3]
    # resuming at global batch 4 of the epoch
    assert shard(0, 2, 10, start=4) == [4, 6, 8] and shard(1, 2, 10, start=4) == [5, 7, 9]


@pytest.mark.slow
def test_bpe_dropout_ranks_share_rank_0s_segmentation(demo_data, tmp_path):
    """Rank 0 draws each epoch's BPE-dropout segmentation and every rank batches from it: the
    global tokens of the 10 updates are those of the first 20 batches of that segmentation's plan
    (a rank that drew its own would plan other batches)."""
    from data.batching import load_split
    from data.subwords import DropoutSplit, Segmenter
    from data.tokenizer import Tokenizers

    run = tmp_path / "ddp"
    ddp = launch(*train_args(demo_data, run, "--max-steps", "10", "--bpe-dropout", "0.2"))
    _, err = ddp.communicate(timeout=600)
    assert ddp.returncode == 0, err
    plain = SplitBatches(load_split(demo_data, "train"), 400)
    split = DropoutSplit(Segmenter(plain, Tokenizers.load(demo_data), 0.2, 255, run / "subwords"))
    expected = sum(int(split.of_epoch(0).tgt.lengths[rows].sum()) + len(rows) for rows in split.plan(1, 0)[:20])
    state = json.loads((run / "checkpoints" / "step-0000010" / "state.json").read_text())["state"]
    assert state["tokens"] == expected
    plain_tokens = sum(int(plain.tgt.lengths[rows].sum()) + len(rows) for rows in plain.plan(1, 0)[:20])
    assert expected != plain_tokens
