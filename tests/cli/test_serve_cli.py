"""`transformer-cli serve` as a process: start line with the port, answers equal to `translate`'s,
SIGTERM drains what is in flight and exits 0, and each start-up problem is one error line."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service_helpers import request

REPO = Path(__file__).resolve().parents[2]
SENTENCES = ["I am a student.", "You are a teacher.", "", "The cat sleeps on the bed."]


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_url(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The URL of the start line 'serving RUN at http://...' (stderr), once the model is loaded."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if line.startswith("serving "):
            return line.split(" at ", 1)[1].split()[0]
        assert line or proc.poll() is None, f"serve ended: {proc.communicate()}"
    raise AssertionError("serve did not start")


@pytest.fixture
def served(model_dir):
    proc = start("--model", model_dir, "--port", "0", "--threads", "1", "--max-wait-ms", "20")
    url = wait_for_url(proc)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_serve_answers_as_translate_does_and_sigterm_drains_then_exits_0(served, model_dir, cli):
    proc, url = served
    assert url.startswith("http://127.0.0.1:")  # loopback by default
    expected = cli("translate", "--model", model_dir, "--beam-size", "3", input="\n".join(SENTENCES) + "\n")
    assert expected.exit_code == 0
    r = request(url, "POST", "/v1/translate", {"text": SENTENCES, "beam_size": 3})
    assert r.status == 200
    assert [t["text"] for t in r.json()["translations"]] == expected.stdout.splitlines()

    replies = []
    long = {"text": ["The cat sleeps on the bed and the dog runs in the park."] * 24, "beam_size": 8}
    client = threading.Thread(target=lambda: replies.append(request(url, "POST", "/v1/translate", long)))
    client.start()
    time.sleep(0.3)  # in flight
    os.killpg(proc.pid, signal.SIGTERM)
    client.join(120)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert replies and replies[0].status == 200 and len(replies[0].json()["translations"]) == 24
    assert "Traceback" not in err and err.strip().endswith("stopped")
    with pytest.raises(OSError):  # no longer listening
        request(url, "GET", "/health", timeout=5)


def test_serve_takes_an_ensemble_as_translate_does(model_dir, cli, tmp_path):
    other = tmp_path / "other"  # the same run under another name: an ensemble of a model twice
    shutil.copytree(model_dir, other)
    proc = start("--model", model_dir, "--model", other, "--port", "0", "--threads", "1")
    try:
        url = wait_for_url(proc)
        expected = cli("translate", "--model", model_dir, "--model", other, "-b", "3",
                       input="\n".join(SENTENCES) + "\n")
        r = request(url, "POST", "/v1/translate", {"text": SENTENCES, "beam_size": 3})
        assert r.status == 200 and [t["text"] for t in r.json()["translations"]] == expected.stdout.splitlines()
    finally:
        proc.kill()
        proc.communicate()


def test_an_address_in_use_is_one_error_line(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start("--model", model_dir, "--port", port)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"]


@pytest.mark.parametrize("args,words", [
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--max-queue", "0"], "--max-queue must be between 1"),
    (["--max-beam", "0"], "--max-beam must be between 1"),
    (["--precision", "fp8"], "--precision must be fp32, bf16 or int8"),
    (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid'"),
])
def test_bad_flags_are_one_error_line(model_dir, args, words):
    proc = start("--model", model_dir, "--port", "0", *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


def test_a_missing_or_corrupt_model_is_one_error_line(model_dir, tmp_path):
    proc = start("--model", tmp_path / "nothing", "--port", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.strip().splitlines() == [f"error: {tmp_path / 'nothing'}: model directory not found"]

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = start("--model", broken, "--port", "0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "model.safetensors" in lines[-1], err
    assert "Traceback" not in err
