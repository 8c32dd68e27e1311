"""Where the bytes of `-o` go: a regular file is replaced atomically, a symlink is followed (the link
kept), anything else (a FIFO, a character device, /dev/stdout, '-') is written in place; nothing else
is created or destroyed. Inputs: any readable non-directory. Signals, closed stdin, byte-order marks."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests_shared import assert_one_line_error

LINES = "I am a student.\nWe read a book.\n"
CLI = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def listing(directory: Path) -> dict[str, tuple]:
    """Every entry of a directory: its kind, and where it links to."""
    out = {}
    for p in directory.iterdir():
        st = p.lstat()
        out[p.name] = (stat.S_IFMT(st.st_mode), os.readlink(p) if p.is_symlink() else None, st.st_ino)
    return out


def expected_output(cli, model_dir) -> str:
    result = cli("translate", "-m", model_dir, input=LINES)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def read_fifo(path: Path, into: list) -> threading.Thread:
    def reader():
        with open(path, "rb") as f:
            into.append(f.read())
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    return t


def make_target(kind: str, d: Path) -> tuple[Path, Path]:
    """(the path given to -o, the file whose bytes are checked)."""
    if kind == "regular":
        (d / "out.txt").write_text("old\n")
        return d / "out.txt", d / "out.txt"
    if kind == "new":
        return d / "new.txt", d / "new.txt"
    if kind == "symlink":
        (d / "real.txt").write_text("old\n")
        (d / "link.txt").symlink_to("real.txt")
        return d / "link.txt", d / "real.txt"
    if kind == "dangling symlink":
        (d / "link.txt").symlink_to("target.txt")
        return d / "link.txt", d / "target.txt"
    if kind == "fifo":
        os.mkfifo(d / "pipe")
        return d / "pipe", d / "pipe"
    if kind == "character device":
        try:
            os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("making a device node needs root")
        return d / "null", d / "null"
    raise AssertionError(kind)


KINDS = ["regular", "new", "symlink", "dangling symlink", "fifo", "character device"]


@pytest.mark.parametrize("kind", KINDS)
def test_translate_output_lands_where_a_unix_user_expects(cli, model_dir, tmp_path, kind):
    want = expected_output(cli, model_dir)
    given, checked = make_target(kind, tmp_path)
    before = listing(tmp_path)
    got: list[bytes] = []
    reader = read_fifo(given, got) if kind == "fifo" else None
    result = cli("translate", "-m", model_dir, "-o", given, input=LINES)
    assert result.exit_code == 0, result.stderr
    after = listing(tmp_path)
    if kind == "fifo":
        reader.join(10)
        assert got == [want.encode()]
    elif kind == "character device":
        assert stat.S_ISCHR(os.lstat(checked).st_mode)  # still the device, not a file
    else:
        assert checked.read_text() == want
    changed = {n for n in set(before) | set(after) if before.get(n) != after.get(n)}
    if kind in ("regular", "symlink"):  # the file is replaced (a new inode), the link untouched
        assert changed == {checked.name} and after[checked.name][0] == stat.S_IFREG
    elif kind in ("new", "dangling symlink"):
        assert changed == {checked.name}
    else:
        assert changed == set()  # written in place: the FIFO or the device node is the same one
    if kind in ("symlink", "dangling symlink"):
        assert os.readlink(given) == before[given.name][1]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "character device"])
def test_inspect_json_output_targets(cli, model_dir, tmp_path, kind):
    given, checked = make_target(kind, tmp_path)
    got: list[bytes] = []
    reader = read_fifo(given, got) if kind == "fifo" else None
    result = cli("inspect-attention", "-m", model_dir, "I am a student.", "--format", "json", "-o", given)
    assert result.exit_code == 0, result.stderr
    if reader:
        reader.join(10)
        assert got[0].startswith(b'{"source": "I am a student."')
    elif kind == "symlink":
        assert checked.read_text().startswith('{"source"') and given.is_symlink()
    else:
        assert stat.S_ISCHR(os.lstat(checked).st_mode)


def run_cli(args, **kw):
    return subprocess.run([*CLI, *map(str, args)], cwd=ROOT, capture_output=True, timeout=120, **kw)


def test_dev_stdout_and_dash_are_standard_output(cli, model_dir):
    want = expected_output(cli, model_dir)
    for target in ("/dev/stdout", "-"):
        done = run_cli(["translate", "-m", model_dir, "-o", target], input=LINES.encode())
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode() == want
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()
    assert not (ROOT / "-").exists()


def test_inputs_that_are_not_regular_files(cli, model_dir, tmp_path):
    want = expected_output(cli, model_dir)
    script = f"{' '.join(CLI)} translate -m {model_dir} -i <(printf '{LINES}')"
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == want  # process substitution: /dev/fd/N, a pipe
    done = run_cli(["translate", "-m", model_dir, "-i", "/dev/stdin"], input=LINES.encode())
    assert done.returncode == 0 and done.stdout.decode() == want, done.stderr
    assert_one_line_error(cli("translate", "-m", model_dir, "-i", tmp_path), "is a directory")
    assert_one_line_error(cli("translate", "-m", model_dir, "-i", tmp_path / "nope"), "input file not found")


def test_closed_stdin_is_one_line(model_dir):
    done = subprocess.run(["bash", "-c", f"{' '.join(CLI)} translate -m {model_dir} <&-"], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        "error: standard input is closed: give the text on stdin or with --input FILE"]


def test_a_byte_order_mark_changes_nothing(cli, model_dir, tmp_path):
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(LINES)
    marked.write_bytes(b"\xef\xbb\xbf" + LINES.encode())
    outs = [cli("translate", "-m", model_dir, "-i", f, "--format", "jsonl").stdout for f in (plain, marked)]
    assert outs[0] == outs[1] and "\ufeff" not in outs[1]
    assert cli("translate", "-m", model_dir, input="\ufeff" + LINES).stdout == \
        cli("translate", "-m", model_dir, input=LINES).stdout
    inspected = [cli("inspect-attention", "-m", model_dir, "--format", "json", input=t).stdout
                 for t in ("I am a student.\n", "\ufeffI am a student.\n")]
    assert inspected[0] == inspected[1]
    explained = [cli("explain", "-m", model_dir, "--format", "json", input=t).stdout
                 for t in ("I am a student.\n", "\ufeffI am a student.\n")]
    assert explained[0].split('"parallel"')[0] == explained[1].split('"parallel"')[0]  # timings differ


def test_sigterm_during_translate_keeps_the_lines_done_and_no_hidden_file(model_dir, tmp_path):
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([*CLI, "translate", "-m", str(model_dir), "-o", str(out), "--buffer-lines", "1"],
                            cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"I am a student.\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.txt.tmp") and p.stat().st_size
                                             for p in tmp_path.iterdir()):
        time.sleep(0.1)  # the first line is translated and written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt.partial"]
    assert (tmp_path / "out.txt.partial").read_text().count("\n") == 1
    assert err.decode().strip().splitlines()[-1].startswith("error: terminated: ")


def test_inspect_refuses_output_for_tables(cli, model_dir, tmp_path):
    assert_one_line_error(cli("inspect-attention", "-m", model_dir, "hi", "-o", tmp_path / "t.txt"),
                          "--output is for --format json or png")
    assert not (tmp_path / "t.txt").exists()


def test_export_follows_a_symlinked_output_directory(cli, model_dir, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to("real")
    result = cli("export", "-m", model_dir, "-f", "ctranslate2", "-o", tmp_path / "link")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "link").is_symlink() and (real / "model.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    result = cli("export", "-m", model_dir, "-f", "hf", "-o", "/dev/null")
    assert_one_line_error(result, "exists and is not a directory")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_read_lines_drops_a_byte_order_mark_only_at_the_start(tmp_path):
    import gzip

    from data.textfiles import read_lines

    plain, marked, packed = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt.gz"
    plain.write_bytes("Ein Hund.\n\ufeffzwei\n".encode())
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed.write_bytes(gzip.compress(marked.read_bytes()))
    assert list(read_lines(plain)) == list(read_lines(marked)) == list(read_lines(packed)) == ["Ein Hund.", "\ufeffzwei"]


def test_inspect_warns_when_it_cuts_the_sentence(cli, model_dir):
    result = cli("inspect-attention", "-m", model_dir, " ".join(["student"] * 200), "--kind", "cross")
    assert result.exit_code == 0, result.stderr
    assert "warning: the sentence is longer than" in result.stderr
