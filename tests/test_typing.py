"""The package and the kernel-facing tests type-check against the hand-written stubs."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_the_package_and_kernel_tests(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "fastcollate", "tests/test_pack.py",
         "tests/test_kernels.py", "tests/test_flat.py", "--ignore-missing-imports", "--cache-dir",
         str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
