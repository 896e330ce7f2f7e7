"""Helpers for the reliability harness (tests/test_stress.py, tests/fuzz.py).

- ``run_isolated``: run a scenario in a fresh interpreter, so that a segfault or a
  sanitizer abort fails one test with a readable message instead of killing pytest.
- ``Guarded``: an output tensor in the middle of a larger buffer whose guard bytes are
  checked afterwards: a kernel that writes outside ``out`` is caught even when the
  stray write does not crash.
- ``CLEAN_ERRORS``: the only exception types a bad input may raise.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Optional, Sequence, Tuple

import torch

CLEAN_ERRORS = (ValueError, TypeError, OverflowError)

HERE = os.path.dirname(os.path.abspath(__file__))

# Under .ci/sanitize (ASAN preloaded) everything runs several times slower.
SANITIZED = os.environ.get("FASTCOLLATE_SANITIZED", "") not in ("", "0")

# glibc serves large allocations with mmap and gives them back with munmap only while
# the mmap threshold is fixed (setting it turns off the dynamic threshold). Then a
# kernel that reads a freed multi-MB array faults at once instead of reading stale
# heap memory, and MALLOC_PERTURB_ makes reads of freed small blocks visible as junk.
CRASHY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_PERTURB_": "165"}


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_isolated(argv: Sequence[str], *, timeout: float, env: Optional[dict] = None
                 ) -> subprocess.CompletedProcess:
    """Run ``python argv...`` in tests/ with faulthandler on; never raises on failure."""
    full_env = dict(os.environ)
    full_env.update(CRASHY_MALLOC)
    full_env["PYTHONFAULTHANDLER"] = "1"
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(HERE), HERE] + [p for p in [full_env.get("PYTHONPATH")] if p])
    if env:
        full_env.update(env)
    try:
        return subprocess.run([sys.executable, *argv], cwd=HERE, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(argv, -999, out, err)


def describe_failure(proc: subprocess.CompletedProcess, what: str) -> Optional[str]:
    """None if the run exited 0, else a message saying how it died, with its output."""
    if proc.returncode == 0:
        return None
    if proc.returncode == -999:
        how = "hung (killed after its timeout)"
    elif proc.returncode < 0:
        how = f"CRASHED with {_signal_name(proc.returncode)}"
    elif "ERROR: AddressSanitizer" in proc.stderr or "runtime error:" in proc.stderr:
        how = f"was stopped by a sanitizer (exit {proc.returncode})"
    else:
        how = f"failed (exit {proc.returncode})"
    tail = (proc.stdout[-3000:] + "\n--- stderr ---\n" + proc.stderr[-6000:]).strip()
    return f"{what} {how}\n{tail}"


def assert_survives(proc: subprocess.CompletedProcess, what: str) -> None:
    msg = describe_failure(proc, what)
    if msg is not None:
        raise AssertionError(msg)


class Guarded:
    """A contiguous ``out`` tensor of ``shape``/``dtype`` with ``guard`` canary bytes on
    each side (the buffer stays 64-byte aligned, like a fresh allocation)."""

    PATTERN = 0x5A

    def __init__(self, shape: Tuple[int, ...], dtype: torch.dtype, guard: int = 4096,
                 fill: Optional[int] = None):
        n = dtype.itemsize
        for d in shape:
            n *= d
        self.guard, self.nbytes = guard, n
        self.raw = torch.full((guard + n + guard,), self.PATTERN, dtype=torch.uint8)
        body = self.raw[guard:guard + n]
        if fill is not None:
            body.fill_(fill)
        self.out = body.view(dtype).view(shape) if n else torch.empty(shape, dtype=dtype)

    def damage(self) -> Optional[str]:
        """None if both guards are intact, else where the first stray byte is."""
        g, n = self.guard, self.nbytes
        before = (self.raw[:g] != self.PATTERN).nonzero()
        after = (self.raw[g + n:] != self.PATTERN).nonzero()
        if before.numel():
            return f"wrote {g - int(before[0])} bytes before out"
        if after.numel():
            return f"wrote at byte {int(after[-1]) + 1} past the end of out ({n} bytes)"
        return None

    def check(self) -> None:
        where = self.damage()
        if where is not None:
            raise AssertionError(f"memory outside out was written: {where}")


def names_a_sample(exc: BaseException, index: Optional[int] = None) -> bool:
    msg = str(exc)
    if index is None:
        return "sample" in msg
    return f"sample {index}" in msg
