"""Slow, obviously-correct reference implementations the kernels are tested against."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch


def reference_order(lengths: Sequence[int]) -> List[int]:
    """Input indices by length, descending; ties keep input order (Python's sort is stable)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def reference_pack(samples: Sequence[torch.Tensor], enforce_sorted: bool = False
                   ) -> Tuple[torch.Tensor, List[int], Optional[List[int]], Optional[List[int]]]:
    """Pack tensors the plain way: rank order, then time step by time step."""
    lengths = [int(s.shape[0]) for s in samples]
    order = list(range(len(samples))) if enforce_sorted else reference_order(lengths)
    rows: List[torch.Tensor] = []
    batch_sizes: List[int] = []
    for t in range(max(lengths)):
        active = [i for i in order if lengths[i] > t]
        batch_sizes.append(len(active))
        rows.extend(samples[i][t] for i in active)
    data = torch.stack(rows)
    if enforce_sorted:
        return data, batch_sizes, None, None
    inverse = [0] * len(order)
    for rank, i in enumerate(order):
        inverse[i] = rank
    return data, batch_sizes, order, inverse
