"""The benchmark workloads (docs/benchmarks.md), defined once and seeded (default_rng(0)).

Used by ``benchmarks/`` (through ``benchmarks/workloads.py``) and by ``python -m fastcollate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    lengths: Callable[[np.random.Generator, int], np.ndarray]
    row: Tuple[int, ...]
    dtype: np.dtype

    def arrays(self) -> List[np.ndarray]:
        rng = np.random.default_rng(0)
        lengths = self.lengths(rng, self.batch)
        if np.issubdtype(self.dtype, np.integer):
            high = min(30000, int(np.iinfo(self.dtype).max) + 1)
            return [rng.integers(0, high, size=(int(n),) + self.row).astype(self.dtype)
                    for n in lengths]
        return [rng.standard_normal(size=(int(n),) + self.row).astype(self.dtype)
                for n in lengths]

    def tensors(self) -> List[torch.Tensor]:
        return [torch.from_numpy(a) for a in self.arrays()]

    def lists(self) -> List[list]:
        return [a.tolist() for a in self.arrays()]

    @property
    def is_flat(self) -> bool:
        return self.row == ()


def _long_tail(rng: np.random.Generator, b: int) -> np.ndarray:
    """Real corpora: a lognormal body (median ~20) and a handful of samples 50-200x the
    median, clipped to 1..4096."""
    lengths = np.clip(rng.lognormal(mean=3.0, sigma=0.6, size=b), 1, 4096).astype(np.int64)
    tail = rng.choice(b, size=max(1, b // 32), replace=False)
    median = int(np.median(lengths))
    lengths[tail] = np.clip(median * rng.uniform(50, 200, size=tail.size), 1, 4096)
    return lengths


WORKLOADS: Dict[str, Workload] = {w.name: w for w in [
    Workload("tokens", 256,
             lambda rng, b: np.clip(rng.lognormal(mean=3.3, sigma=0.8, size=b), 1, 512)
             .astype(np.int64), (), np.dtype(np.int64)),
    Workload("short-many", 1024, lambda rng, b: rng.integers(1, 33, size=b), (),
             np.dtype(np.int64)),
    Workload("speech", 32, lambda rng, b: rng.integers(100, 1500, size=b), (80,),
             np.dtype(np.float32)),
    Workload("embed", 128, lambda rng, b: rng.integers(10, 200, size=b), (256,),
             np.dtype(np.float32)),
    Workload("ties", 4096, lambda rng, b: rng.integers(1, 5, size=b), (),
             np.dtype(np.int64)),
    Workload("long-tail", 128, _long_tail, (), np.dtype(np.int64)),
    Workload("long-tail-int32", 128, _long_tail, (), np.dtype(np.int32)),
    Workload("bytes", 512, lambda rng, b: rng.integers(1, 2001, size=b), (),
             np.dtype(np.uint8)),
    Workload("big", 8192, lambda rng, b: rng.integers(1, 1001, size=b), (),
             np.dtype(np.int64)),
]}

FLAT = [name for name, w in WORKLOADS.items() if w.is_flat]
