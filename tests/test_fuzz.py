"""The fuzzing harness (tests/fuzz.py), one target per test, each in its own
interpreter: a crash or a sanitizer abort fails that target's test with the example
that was running, a contract violation with hypothesis's minimal falsifying example.

Default: derandomized, CI-sized (well under a minute in all). Longer random runs:
``FASTCOLLATE_FUZZ_MINUTES=10 python -m pytest tests/test_fuzz.py`` (split over the
targets), or ``FASTCOLLATE_FUZZ_SECONDS=60`` per target, or ``python tests/fuzz.py
--minutes 10`` directly.
"""
import os
import tempfile

import pytest

from fuzz import TARGETS
from hostile import SANITIZED, describe_failure, run_isolated

MINUTES = float(os.environ.get("FASTCOLLATE_FUZZ_MINUTES", "0"))
SECONDS = float(os.environ.get("FASTCOLLATE_FUZZ_SECONDS", "0")) or (
    MINUTES * 60 / len(TARGETS) if MINUTES else 0)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_keeps_the_contract(target):
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as last:
        argv = [os.path.join(os.path.dirname(__file__), "fuzz.py"), target]
        if SECONDS:
            argv += ["--seconds", str(SECONDS)]
        elif SANITIZED:
            argv += ["--examples", "25"]
        timeout = 240 + 3 * SECONDS * (4 if SANITIZED else 1)
        proc = run_isolated(argv, timeout=timeout, env={"FASTCOLLATE_FUZZ_LAST": last.name})
        msg = describe_failure(proc, f"fuzz target {target!r}")
        if msg is not None:
            running = last.read().strip()
            if proc.returncode < 0 or proc.returncode == -999:
                msg += f"\n--- the example running when it died ---\n{running[:4000]}"
            pytest.fail(msg, pytrace=False)


def test_pack_target_sorts_the_samples_an_explicit_dtype_makes_valid():
    """A list beyond int64 is at fault by itself but fine with dtype=torch.bool (as in
    torch.tensor): enforce_sorted=True must sort it by that length, not as empty (a
    harness bug the sanitized CI run found: it handed pack an unsorted batch)."""
    import torch

    from fuzz import Batch, Sample, check_pack
    batch = Batch(samples=[Sample([1, 2**63], "list", None, "huge_int"),
                           Sample(torch.tensor([False]), "tensor", torch.tensor([False]))],
                  dtype=torch.bool, row=())
    check_pack(batch, enforce_sorted=True)
    assert [len(s.obj) for s in batch.samples] == [2, 1]
