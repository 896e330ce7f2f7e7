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
            return [rng.integers(0, 30000, size=(int(n),) + self.row).astype(self.dtype)
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
]}

FLAT = [name for name, w in WORKLOADS.items() if w.is_flat]
