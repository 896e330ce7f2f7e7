"""Packing a batch by indices from a flat store (fastcollate.RaggedArray) against today's
list path, torch's pack_sequence and the copy floor; and a DataLoader fed from a store of
10M+ tokens against the per-sample dataset.

    pytest benchmarks/test_bench_store.py --benchmark-only

Names: ``fastcollate`` (the store path), ``listpath`` (the same batch as per-sample arrays
through fastcollate.pack, as a per-sample dataset gives it), ``torch`` (pack_sequence on
per-sample tensors), ``floor`` (one NumPy gather of the same rows / a memcpy of the same
bytes). The summary table prints listpath/torch over fastcollate and fastcollate over
the floor.
"""
import itertools
import os
import tempfile

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

import fastcollate
from fastcollate import PackedCollate, RaggedArray, StoreDataset


def _lengths(rng, n, kind):
    if kind == "tokens":     # the "tokens" workload: lognormal(3.3, 0.8) clipped to 1..512
        return np.clip(rng.lognormal(3.3, 0.8, n), 1, 512).astype(np.int64)
    return rng.integers(100, 1500, n)          # "speech"


class Case:
    """A store of ``n`` samples and one batch of ``B`` random indices into it."""

    def __init__(self, kind, n, B, dtype, row=(), target=None):
        rng = np.random.default_rng(0)
        lengths = _lengths(rng, n, kind)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        shape = (int(offsets[-1]),) + row
        if np.dtype(dtype).kind == "f":
            values = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        else:
            values = rng.integers(0, 30000, shape).astype(dtype)
        self.store = RaggedArray(values, offsets, dtype=target)
        self.idx = rng.integers(0, n, B)
        out_np = values.dtype if target is None else np.dtype(str(target).split(".")[1])
        self.wide = values.astype(out_np)       # the output dtype, for the floors
        # rows of the batch in packed order: what one gather must read
        p = fastcollate.pack([np.arange(offsets[i], offsets[i + 1]) for i in self.idx])
        self.rows = p.data.numpy()
        self.views = [values[offsets[i]:offsets[i + 1]] for i in self.idx]
        self.tensors = [torch.from_numpy(self.wide[offsets[i]:offsets[i + 1]]) for i in self.idx]
        self.offsets = offsets
        self.values = values


CASES = {
    "tokens": lambda: Case("tokens", 100_000, 256, np.int64),
    "tokens-u16": lambda: Case("tokens", 100_000, 256, np.uint16, target=torch.int64),
    "speech": lambda: Case("speech", 256, 32, np.float32, row=(80,)),
}
_made = {}


def case(name):
    if name not in _made:
        _made[name] = CASES[name]()
    return _made[name]


@pytest.mark.parametrize("name", list(CASES))
def test_store_fastcollate(benchmark, name):
    c = case(name)
    benchmark.group = f"store-{name}"
    p = benchmark(lambda: fastcollate.pack(c.store[c.idx]))
    assert p.data.shape[0] == len(c.rows)


@pytest.mark.parametrize("name", list(CASES))
def test_store_listpath_pack_views(benchmark, name):
    """Today's path: per-sample arrays (as __getitem__ makes them), then pack."""
    c = case(name)
    o, v, target = c.offsets, c.values, c.store.dtype
    benchmark.group = f"store-{name}"
    benchmark(lambda: fastcollate.pack([v[o[i]:o[i + 1]] for i in c.idx], dtype=target))


@pytest.mark.parametrize("name", list(CASES))
def test_store_torch_pack_sequence(benchmark, name):
    c = case(name)
    benchmark.group = f"store-{name}"
    benchmark(pack_sequence, c.tensors, enforce_sorted=False)


@pytest.mark.parametrize("name", ["tokens", "tokens-u16"])
def test_store_floor_take(benchmark, name):
    """One NumPy gather of the same rows, already in the output dtype."""
    c = case(name)
    benchmark.group = f"store-{name}"
    benchmark(np.take, c.wide, c.rows, axis=0)


@pytest.mark.parametrize("name", list(CASES))
def test_store_floor_memcpy(benchmark, name):
    """A memcpy of the same bytes (np.concatenate of the samples' contiguous rows)."""
    c = case(name)
    views = [c.wide[c.offsets[i]:c.offsets[i + 1]] for i in c.idx]
    benchmark.group = f"store-{name}"
    benchmark(np.concatenate, views)


# -- DataLoader end to end ------------------------------------------------------------

N_TOKENS = 10_000_000
BATCH = 256
STEPS = 100


class ForeverBatches(Sampler):
    """Random batches of BATCH indices, forever (seeded)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        rng = np.random.default_rng(1)
        while True:
            yield rng.integers(0, self.n, BATCH).tolist()


class PerSample(Dataset):
    """The same corpus served the usual way: one int64 tensor per __getitem__."""

    def __init__(self, store):
        self.values, self.offsets = store.values, store.offsets

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return torch.from_numpy(self.values[self.offsets[i]:self.offsets[i + 1]]
                                .astype(np.int64))


_corpus = {}


def corpus():
    """10M uint16 tokens, memory-mapped from a .npy file (synthetic, ~0.3 s to make)."""
    if not _corpus:
        rng = np.random.default_rng(0)
        lengths = np.clip(rng.lognormal(3.3, 0.8, N_TOKENS // 20), 1, 512).astype(np.int64)
        lengths = lengths[:np.searchsorted(np.cumsum(lengths), N_TOKENS) + 1]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        path = os.path.join(tempfile.mkdtemp(prefix="fc-bench-"), "values.npy")
        np.save(path, rng.integers(0, 50000, int(offsets[-1])).astype(np.uint16))
        _corpus["store"] = RaggedArray(np.load(path, mmap_mode="r"), offsets,
                                       dtype=torch.int64)
    return _corpus["store"]


def _skip_if_disabled(request):
    if request.config.getoption("benchmark_disable", False):
        pytest.skip("DataLoader benchmark: only with benchmarks enabled")


def _loader_bench(benchmark, dataset, workers):
    loader = DataLoader(dataset, batch_sampler=ForeverBatches(len(dataset)),
                        collate_fn=PackedCollate(), num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(10):                        # workers started and warm
        next(it)
    benchmark.extra_info["batches"] = STEPS
    benchmark.pedantic(lambda: list(itertools.islice(it, STEPS)), rounds=5, iterations=1)
    benchmark.extra_info["batches_per_s"] = STEPS / benchmark.stats.stats.median
    del it


def _store_loader(benchmark, request, workers):
    _skip_if_disabled(request)
    store = corpus()
    assert store.values.shape[0] >= N_TOKENS
    benchmark.group = "loader-10M-tokens"
    _loader_bench(benchmark, StoreDataset(store), workers)


def _per_sample_loader(benchmark, request, workers):
    _skip_if_disabled(request)
    benchmark.group = "loader-10M-tokens"
    _loader_bench(benchmark, PerSample(corpus()), workers)


# one function per case: the summary table keys benchmarks by function name
def test_loader_fastcollate_store_0_workers(benchmark, request):
    _store_loader(benchmark, request, 0)


def test_loader_fastcollate_store_2_workers(benchmark, request):
    _store_loader(benchmark, request, 2)


def test_loader_listpath_per_sample_0_workers(benchmark, request):
    _per_sample_loader(benchmark, request, 0)


def test_loader_listpath_per_sample_2_workers(benchmark, request):
    _per_sample_loader(benchmark, request, 2)
