"""pack() against torch's pack_sequence and the copy floor, per benchmark workload
(docs/benchmarks.md).

    pytest benchmarks/test_bench_pack.py --benchmark-only
"""
import itertools

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import fastcollate
from workloads import FLAT, WORKLOADS

ALL = list(WORKLOADS)
# Python lists of the 33 MB "big" batch take seconds to build per sample: left out
LISTS = [name for name in FLAT if name != "big"]


@pytest.mark.parametrize("name", ALL)
def test_numpy_fastcollate(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"pack-{name}-numpy"
    p = benchmark(fastcollate.pack, batch)
    assert p.data.shape[0] == sum(len(a) for a in batch)


@pytest.mark.parametrize("name", ALL)
def test_numpy_torch_pack_sequence(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"pack-{name}-numpy"
    benchmark(lambda: pack_sequence([torch.from_numpy(a) for a in batch],
                                    enforce_sorted=False))


@pytest.mark.parametrize("name", ALL)
def test_numpy_floor_concatenate(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"pack-{name}-numpy"
    benchmark(np.concatenate, batch)


@pytest.mark.parametrize("name", ALL)
def test_tensor_fastcollate(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"pack-{name}-tensor"
    p = benchmark(fastcollate.pack, batch)
    assert p.data.shape[0] == sum(len(a) for a in batch)


@pytest.mark.parametrize("name", ALL)
def test_tensor_torch_pack_sequence(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"pack-{name}-tensor"
    benchmark(pack_sequence, batch, enforce_sorted=False)


@pytest.mark.parametrize("name", ALL)
def test_tensor_floor_cat(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"pack-{name}-tensor"
    benchmark(torch.cat, batch)


@pytest.mark.parametrize("name", LISTS)
def test_list_fastcollate(benchmark, name):
    batch = WORKLOADS[name].lists()
    benchmark.group = f"pack-{name}-list"
    p = benchmark(fastcollate.pack, batch)
    assert p.data.shape[0] == sum(len(a) for a in batch)


@pytest.mark.parametrize("name", LISTS)
def test_list_torch_tensor_pack_sequence(benchmark, name):
    batch = WORKLOADS[name].lists()
    benchmark.group = f"pack-{name}-list"
    benchmark(lambda: pack_sequence([torch.tensor(s) for s in batch], enforce_sorted=False))


@pytest.mark.parametrize("name", LISTS)
def test_list_floor_np_array_chain(benchmark, name):
    batch = WORKLOADS[name].lists()
    benchmark.group = f"pack-{name}-list"
    benchmark(lambda: np.array(list(itertools.chain.from_iterable(batch))))


@pytest.mark.parametrize("name", ["tokens"])
def test_pack_lengths_fastcollate(benchmark, name):
    lengths = [len(a) for a in WORKLOADS[name].arrays()]
    benchmark.group = f"pack_lengths-{name}"
    benchmark(fastcollate.pack_lengths, lengths)


def _windows(B=4096, L=512, n_windows=8192):
    """Fixed-length windows of a flat token array (a memory-mapped corpus cut into
    training windows), sampled at random: views 4 KB apart, whose addresses all fall
    in the same cache sets."""
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 30000, size=n_windows * L, dtype=np.int64)
    return [flat[i * L:(i + 1) * L] for i in rng.choice(n_windows, B, replace=False)]


def test_windows_numpy_fastcollate(benchmark):
    batch = _windows()
    benchmark.group = "pack-windows-numpy"
    p = benchmark(fastcollate.pack, batch)
    assert p.data.shape[0] == sum(len(a) for a in batch)


def test_windows_numpy_floor_concatenate(benchmark):
    batch = _windows()
    benchmark.group = "pack-windows-numpy"
    benchmark(np.concatenate, batch)


# The direct read of each tensor against the concatenation (torch.cat, then one
# scatter), each forced, around the direct-read threshold (packing._DIRECT_TENSOR_BYTES,
# 10 KB per sample): B=256 samples of 320 B rows averaging 2-32 KB, with torch.cat of
# the same batch as the floor. pack() should take the faster of the two.
THRESHOLD_KB = [2, 4, 8, 16, 32]


def _threshold_batch(kb):
    rng = np.random.default_rng(kb)
    mean = kb * 1024 // 320
    lengths = rng.integers(max(1, mean // 2), mean * 3 // 2 + 1, size=256)
    return [torch.from_numpy(rng.standard_normal((int(n), 80)).astype(np.float32))
            for n in lengths]


@pytest.mark.parametrize("kb", THRESHOLD_KB)
@pytest.mark.parametrize("path", ["direct", "concatenated", "floor_cat"])
def test_tensor_path_around_the_threshold(benchmark, kb, path):
    batch = _threshold_batch(kb)
    benchmark.group = f"pack-tensor-paths-{kb}KB"
    if path == "floor_cat":
        benchmark(torch.cat, batch)
        return
    direct_bytes = 0 if path == "direct" else 1 << 40
    packed = benchmark(fastcollate._core.pack_tensors, batch, torch.Tensor, torch.cat,
                       direct_bytes)
    assert packed is not None and packed[0].shape[0] == sum(len(t) for t in batch)
