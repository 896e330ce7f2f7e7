"""dtype= conversions inside the copy: token ids stored as uint16, packed and padded as
int64, against torch (``.to(int64)`` per sample, then pack_sequence / pad_sequence) and
the floor of one converting copy (``np.concatenate(batch, dtype=np.int64)``).

    pytest benchmarks/test_bench_cast.py --benchmark-only
"""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_sequence

import fastcollate
from workloads import FLAT, WORKLOADS

OPS = {   # op -> (fastcollate's call, torch's call on the converted samples)
    "pack": (lambda b: fastcollate.pack(b, dtype=torch.int64),
             lambda ts: pack_sequence(ts, enforce_sorted=False)),
    "pad": (lambda b: fastcollate.pad(b, dtype=torch.int64),
            lambda ts: pad_sequence(ts, batch_first=True)),
}


def _uint16(name):
    return [a.astype(np.uint16) for a in WORKLOADS[name].arrays()]


@pytest.mark.parametrize("name", FLAT)
@pytest.mark.parametrize("op", list(OPS))
def test_fastcollate_uint16_to_int64(benchmark, name, op):
    batch = _uint16(name)
    benchmark.group = f"cast-{op}-{name}"
    out = benchmark(OPS[op][0], batch)
    assert (out.data if op == "pack" else out).dtype == torch.int64


@pytest.mark.parametrize("name", FLAT)
@pytest.mark.parametrize("op", list(OPS))
def test_torch_to_int64_then_op(benchmark, name, op):
    batch = _uint16(name)
    benchmark.group = f"cast-{op}-{name}"
    benchmark(lambda: OPS[op][1]([torch.from_numpy(a).to(torch.int64) for a in batch]))


@pytest.mark.parametrize("name", FLAT)
@pytest.mark.parametrize("op", list(OPS))
def test_floor_concatenate_to_int64(benchmark, name, op):
    batch = _uint16(name)
    benchmark.group = f"cast-{op}-{name}"
    benchmark(lambda: np.concatenate(batch, dtype=np.int64))
