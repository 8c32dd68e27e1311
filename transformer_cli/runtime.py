"""Where and how a command runs: device choice, threads, numeric flag ranges. One place each."""

from __future__ import annotations

import math
import os
import time
from typing import Callable

from transformer_cli.errors import RunError, named

MAX_BEAM = 128
MAX_THREADS = 1024


def pick_device(name: str):
    """'cpu' | 'cuda' | 'auto' -> torch.device; cuda without a CUDA device is a RunError."""
    import torch

    if name not in ("cpu", "cuda", "auto"):
        raise RunError(f"{named('device')} must be cpu, cuda or auto, got {name!r}", "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError(f"{named('device')} cuda: no CUDA device is available on this machine", "device")
    return torch.device(name)


def native_bf16(device) -> bool:
    """Whether the device multiplies bfloat16 matrices in hardware: a CUDA GPU that supports it, or a CPU
    with AVX-512 BF16 or AMX (elsewhere torch emulates bfloat16 and it is slower than float32)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device) -> str:
    """A training precision as run on `device`: "auto" is bf16 where it is native, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def precision_note(precision: str, device) -> str:
    """What to tell the user before training in `precision` on `device` ('' when nothing): a CPU has
    no float16 arithmetic, so torch emulates it and fp16 trains many times slower than fp32."""
    if precision != "fp16" or device.type != "cpu":
        return ""
    instead = "bf16 (native on this CPU)" if native_bf16(device) else "fp32 (bf16 is emulated on this CPU too)"
    return f"precision fp16 on the CPU is emulated and trains many times slower than fp32; use {instead}"


def set_threads(n: int) -> None:
    """Torch intra-op threads; 0 keeps torch's default."""
    check_range("threads", n, 0, MAX_THREADS)
    if n:
        import torch

        torch.set_num_threads(n)


def check_range(param: str, value: float, low: float, high: float) -> None:
    """value (of the parameter named `param`) must be a finite number in [low, high]."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RunError(f"{named(param)} must be a finite number, got {value}", param)
    if not low <= value <= high:
        raise RunError(f"{named(param)} must be between {low:g} and {high:g}, got {value:g}", param)


def check_decoding(beam_size: int, alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10,
                   n_best: int = 1) -> None:
    """The search options of translate and inspect-attention (SearchOptions' fields)."""
    check_range("beam_size", beam_size, 1, MAX_BEAM)
    check_range("length_penalty", alpha, 0.0, 10.0)
    check_range("max_len_a", max_len_a, 0.0, 100.0)
    check_range("max_len_b", max_len_b, 0, 100_000)
    if max_len_a + max_len_b < 1:
        raise RunError(f"{named('max_len_a')} and {named('max_len_b')} allow no output token: "
                       f"{max_len_a:g} * source length + {max_len_b} must be >= 1 for a one-token source",
                       "max_len_a", "max_len_b")
    if not 1 <= n_best <= beam_size:
        raise RunError(f"{named('n_best')} {n_best} must be between 1 and {named('beam_size')} {beam_size}",
                       "n_best", "beam_size")


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
KERNEL_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
TRAIN_KERNEL_CACHE = 16  # kernels kept by a training process (oneDNN's own default: 1,024)
SERVE_KERNEL_CACHE = 64  # kernels kept by serve: RSS flat over 20,000 requests, same speed (bench/RESULTS.md)


def bound_kernel_cache(capacity: int) -> None:
    """Keep at most `capacity` of oneDNN's compiled kernels (primitives), unless the user set
    ONEDNN_PRIMITIVE_CACHE_CAPACITY. oneDNN keeps one per distinct shape, each with its own work
    buffer (up to tens of MB for a bf16 product), and training batches come in hundreds of shapes:
    with the default 1,024 a 40-minute `small` run held 15 GB and was still growing; with 16, 4 GB,
    flat from its 12th minute, at the same speed (bench/bench_train_rss.py). oneDNN reads the variable when it makes its first kernel, so call
    this before any tensor work; process-wide, so the commands call it, not the library."""
    os.environ.setdefault(KERNEL_CACHE, str(capacity))


def _glibc():
    """glibc's C library (ctypes), or None off Linux/glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class FreedMemoryReturn:
    """Hands the heap's free pages back to the kernel (glibc's malloc_trim(0)) when called, at most
    once every `seconds`. A long-lived process that keeps freed memory for reuse (reuse_freed_memory)
    holds on to the high-water mark of every batch it ever ran; serve's model worker calls this
    between batches so its RSS follows what it holds (bench/bench_serve.py --parts rss). A no-op off
    glibc. Returns whether it trimmed."""

    def __init__(self, seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.last = clock()
        self.libc = _glibc()

    def __call__(self) -> bool:
        now = self.clock()
        if self.libc is None or now - self.last < self.seconds:
            return False
        self.libc.malloc_trim(0)
        self.last = self.clock()  # after the trim: its own time does not count towards the next
        return True


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of handing large blocks
    back to the kernel. A training step allocates and frees tensors of tens of MB (the logits, their
    softmax and gradient); by default each one is a fresh mmap whose pages the kernel faults in and
    zeroes again: a softmax over 1,229 x 8,000 logits took 18.5 ms, 4.9 ms with this (bench/RESULTS.md).
    Process-wide, so the commands call it, not the library; False (nothing done) off glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
