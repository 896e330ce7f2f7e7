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


def _uint16(name):
    return [a.astype(np.uint16) for a in WORKLOADS[name].arrays()]


@pytest.mark.parametrize("name", FLAT)
def test_pack_fastcollate_uint16_to_int64(benchmark, name):
    batch = _uint16(name)
    benchmark.group = f"cast-pack-{name}"
    p = benchmark(fastcollate.pack, batch, dtype=torch.int64)
    assert p.data.dtype == torch.int64


@pytest.mark.parametrize("name", FLAT)
def test_pack_torch_to_int64_pack_sequence(benchmark, name):
    batch = _uint16(name)
    benchmark.group = f"cast-pack-{name}"
    benchmark(lambda: pack_sequence([torch.from_numpy(a).to(torch.int64) for a in batch],
                                    enforce_sorted=False))


@pytest.mark.parametrize("name", FLAT)
def test_pad_fastcollate_uint16_to_int64(benchmark, name):
    batch = _uint16(name)
    benchmark.group = f"cast-pad-{name}"
    out = benchmark(fastcollate.pad, batch, dtype=torch.int64)
    assert out.dtype == torch.int64


@pytest.mark.parametrize("name", FLAT)
def test_pad_torch_to_int64_pad_sequence(benchmark, name):
    batch = _uint16(name)
    benchmark.group = f"cast-pad-{name}"
    benchmark(lambda: pad_sequence([torch.from_numpy(a).to(torch.int64) for a in batch],
                                   batch_first=True))


@pytest.mark.parametrize("group", ["pack", "pad"])
@pytest.mark.parametrize("name", FLAT)
def test_floor_concatenate_to_int64(benchmark, name, group):
    batch = _uint16(name)
    benchmark.group = f"cast-{group}-{name}"
    benchmark(lambda: np.concatenate(batch, dtype=np.int64))
