"""``python -m fastcollate bench --grid``: the scaling grid of ``pack``.

Batch sizes B in {16, 256, 4096, 16384}, mean lengths in {8, 64, 512} (uniform in
``1..2*mean-1``), rows of 8 B (int64 ids), 320 B (80 float32 features) and 4 KB (1024
float32), as NumPy arrays, CPU tensors and (8 B rows) Python lists. Each cell gives the
minimum time of ``fastcollate.pack`` and its ratios to the copy floor measured in the
same run: ``np.concatenate`` / ``torch.cat`` (a fresh output, as ``pack`` makes) and a
``memcpy`` of the same bytes into a warm buffer; and the speedup over
``torch.nn.utils.rnn.pack_sequence`` where that fits in memory and time. A least-squares
line ``time = fixed + per_sample * B + per_byte * bytes`` is fitted per input kind.
Cells whose output would exceed ``--max-mb`` are skipped.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import pack_sequence

from . import pack

BATCHES = (16, 256, 4096, 16384)
MEANS = (8, 64, 512)
ROWS: Dict[str, Tuple[Tuple[int, ...], Any]] = {
    "8B": ((), np.int64), "320B": ((80,), np.float32), "4KB": ((1024,), np.float32)}


def min_seconds(fn: Callable[[], Any], budget: float, min_runs: int = 3) -> float:
    """Minimum wall time of fn() over repeated runs within a time budget."""
    fn()
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best


def _batch(B: int, mean: int, row: Tuple[int, ...], dtype: Any) -> List[np.ndarray]:
    rng = np.random.default_rng(B * 1000 + mean)
    lengths = rng.integers(1, 2 * mean, size=B)
    if np.issubdtype(dtype, np.integer):
        return [rng.integers(0, 30000, size=(int(n),) + row).astype(dtype) for n in lengths]
    return [rng.standard_normal((int(n),) + row).astype(dtype) for n in lengths]


def grid(budget: float = 0.1, max_mb: float = 128.0, torch_max_mb: float = 64.0
         ) -> List[str]:
    rows = [f"{'B':>6} {'mean':>5} {'row':>5} {'input':<7} {'pack':>11} {'/floor':>7} "
            f"{'/memcpy':>8} {'torch x':>8}"]
    fits: Dict[str, List[Tuple[float, float, float]]] = {}
    for B, mean, (rname, (row, dtype)) in itertools.product(BATCHES, MEANS, ROWS.items()):
        row_bytes = np.dtype(dtype).itemsize * int(np.prod(row, dtype=np.int64))
        if B * mean * row_bytes > max_mb * 2**20:
            continue
        arrays = _batch(B, mean, row, dtype)
        nbytes = sum(a.nbytes for a in arrays)
        src = np.concatenate(arrays)
        dst = np.empty_like(src)
        t_copy = min_seconds(lambda: np.copyto(dst, src), budget)
        padded = B * max(len(a) for a in arrays) * row_bytes
        kinds: List[Tuple[str, list, Callable[[], Any], Callable[[], Any]]] = []
        tensors = [torch.from_numpy(a) for a in arrays]
        kinds.append(("numpy", arrays, lambda: np.concatenate(arrays),
                      lambda: pack_sequence([torch.from_numpy(a) for a in arrays],
                                            enforce_sorted=False)))
        kinds.append(("tensor", tensors, lambda: torch.cat(tensors),
                      lambda: pack_sequence(tensors, enforce_sorted=False)))
        if row == () and nbytes <= 16 * 2**20:
            lists = [a.tolist() for a in arrays]
            kinds.append(("list", lists,
                          lambda: np.array(list(itertools.chain.from_iterable(lists))),
                          lambda: pack_sequence([torch.tensor(s) for s in lists],
                                                enforce_sorted=False)))
        for kind, batch, floor, ref in kinds:
            t = min_seconds(lambda: pack(batch), budget)
            t_floor = min_seconds(floor, budget)
            torch_cell = "-"
            if padded <= torch_max_mb * 2**20 and (kind != "list" or B <= 4096):
                torch_cell = f"{min_seconds(ref, budget, min_runs=1) / t:7.1f}x"
            fits.setdefault(kind, []).append((B, nbytes, t))
            rows.append(f"{B:>6} {mean:>5} {rname:>5} {kind:<7} {t * 1e6:9.1f}us "
                        f"{t / t_floor:6.2f}x {t / t_copy:7.2f}x {torch_cell:>8}")
    rows.append("fitted cost, time = fixed + per_sample * B + per_byte * bytes:")
    for kind, pts in fits.items():
        a = np.array([[1.0, b, n] for b, n, _ in pts])
        y = np.array([t for _, _, t in pts])
        w = 1.0 / y                    # relative error: small cells count as much
        coef = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]
        rows.append(f"  {kind:<7} fixed {coef[0] * 1e6:7.2f} us, per sample "
                    f"{coef[1] * 1e9:7.1f} ns, per byte {coef[2] * 1e9:6.3f} ns "
                    f"({1 / max(coef[2], 1e-12) / 1e9:5.1f} GB/s)")
    return rows
