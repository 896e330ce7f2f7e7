"""Collate (PackedCollate, pad) against the torch way and the floors, plus DataLoader
end-to-end throughput.

    pytest benchmarks/test_bench_collate.py --benchmark-only
"""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

import fastcollate
from fastcollate import PackedCollate
from fastcollate._torch_collate import (concat_collate, nothing_collate, torch_collate,
                                        torch_pad_collate)
from workloads import WORKLOADS

ALL = list(WORKLOADS)


def inputs(name, kind="arrays"):
    """The workload's samples as NumPy arrays or as tensors (``kind``)."""
    return getattr(WORKLOADS[name], kind)()


def labelled(name, kind="arrays"):
    return [(a, i) for i, a in enumerate(inputs(name, kind))]


def group(what, name, kind="arrays"):
    """Tensor inputs are compared with their own floor (torch.cat) in groups of their own."""
    return f"{what}-{name}" if kind == "arrays" else f"{what}-tensor-{name}"


# Tensor inputs: batches of small tensors over 1 MB are concatenated and written a
# chunk at a time (peak memory: the output plus one chunk).
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["arrays", "tensors"])
def test_collate_fastcollate(benchmark, kind, name):
    samples = labelled(name, kind)
    benchmark.group = group("collate", name, kind)
    packed, labels = benchmark(PackedCollate(), samples)
    assert labels.tolist() == list(range(len(samples)))


@pytest.mark.parametrize("name", ALL)
def test_collate_torch_pad_pack(benchmark, name):
    samples = labelled(name)
    benchmark.group = f"collate-{name}"
    benchmark(torch_collate, samples)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["arrays", "tensors"])
def test_pad_fastcollate(benchmark, kind, name):
    batch = inputs(name, kind)
    benchmark.group = group("pad", name, kind)
    out = benchmark(fastcollate.pad, batch)
    assert out.shape[0] == len(batch)


@pytest.mark.parametrize("name", ALL)
def test_pad_torch_pad_sequence(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"pad-{name}"
    benchmark(lambda: pad_sequence([torch.from_numpy(a) for a in batch], batch_first=True))


@pytest.mark.parametrize("name", ALL)
def test_pad_tensor_torch_pad_sequence(benchmark, name):
    batch = inputs(name, "tensors")
    benchmark.group = group("pad", name, "tensors")
    benchmark(pad_sequence, batch, batch_first=True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("what", ["pad", "collate"])
def test_tensor_floor_cat(benchmark, what, name):
    benchmark.group = group(what, name, "tensors")
    benchmark(torch.cat, inputs(name, "tensors"))


@pytest.mark.parametrize("name", ALL)
def test_pad_floor_concatenate(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"pad-{name}"
    benchmark(np.concatenate, batch)


# The fixed cost per batch: 16 token samples of 5-39 ids, each collate's usual options.
# A collate's torch counterpart gets the same samples; the floor is np.concatenate of
# the sequences.
def _small_tokens():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 30000, size=int(n)) for n in rng.integers(5, 40, size=16)]


SMALL = {
    "bare": lambda xs: xs,
    "labelled": lambda xs: [(a, i) for i, a in enumerate(xs)],
    "lengths": lambda xs: [(a, i) for i, a in enumerate(xs)],
    "lists-dict": lambda xs: [{"input_ids": a.tolist(), "label": i} for i, a in enumerate(xs)],
    "pad-lengths": lambda xs: [(a, i) for i, a in enumerate(xs)],
}
SMALL_COLLATES = {"bare": PackedCollate(), "labelled": PackedCollate(),
                  "lengths": PackedCollate(lengths=True), "lists-dict": PackedCollate(),
                  "pad-lengths": PackedCollate(mode="pad", lengths=True)}


def _torch_small(case):
    if case == "bare":
        return lambda b: torch.nn.utils.rnn.pack_sequence([torch.from_numpy(a) for a in b],
                                                          enforce_sorted=False)
    if case == "lists-dict":
        return lambda b: torch_collate([(d["input_ids"], d["label"]) for d in b])
    return torch_pad_collate if case == "pad-lengths" else torch_collate


@pytest.mark.parametrize("case", list(SMALL))
def test_collate_small_fastcollate(benchmark, case):
    samples = SMALL[case](_small_tokens())
    benchmark.group = f"collate-small-{case}"
    out = benchmark(SMALL_COLLATES[case], samples)
    assert len(out) >= 2


@pytest.mark.parametrize("case", list(SMALL))
def test_collate_small_torch(benchmark, case):
    samples = SMALL[case](_small_tokens())
    benchmark.group = f"collate-small-{case}"
    benchmark(_torch_small(case), samples)


@pytest.mark.parametrize("case", list(SMALL))
def test_collate_small_floor_concatenate(benchmark, case):
    benchmark.group = f"collate-small-{case}"
    benchmark(np.concatenate, _small_tokens())


class TokenDataset(Dataset):
    """The tokens workload's length distribution, 16 batches of 256 (seq, label)."""

    def __init__(self, n=4096):
        rng = np.random.default_rng(0)
        lengths = np.clip(rng.lognormal(3.3, 0.8, size=n), 1, 512).astype(np.int64)
        self.items = [(rng.integers(0, 30000, size=int(k)), i % 10)
                      for i, k in enumerate(lengths)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class SpeechDataset(Dataset):
    """The speech workload's shapes: 8 batches of 32 (frames x 80 float32, label),
    about 8.5 MB per batch: where a worker's fresh shared-memory block per batch
    (page faults) costs as much as the collate itself."""

    def __init__(self, n=256):
        rng = np.random.default_rng(0)
        self.items = [(rng.standard_normal((int(k), 80)).astype(np.float32), i % 10)
                      for i, k in enumerate(rng.integers(100, 1500, size=n))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


COLLATES = {"fastcollate": PackedCollate(),
            "fastcollate_separate_tensors": PackedCollate(one_block=False),
            "torch_pad_pack": torch_collate, "floor_nothing": nothing_collate,
            "floor_concat": concat_collate}
_LOADERS = {}


DATASETS = {"tokens": (TokenDataset, 256), "speech": (SpeechDataset, 32)}


def loader(collate, workers, data="tokens"):
    key = (collate, workers, data)
    if key not in _LOADERS:
        dataset, batch = DATASETS[data]
        _LOADERS[key] = DataLoader(dataset(), batch_size=batch, collate_fn=COLLATES[collate],
                                   num_workers=workers, persistent_workers=workers > 0,
                                   prefetch_factor=4 if workers else None)
    return _LOADERS[key]


def epoch(dl):
    n = 0
    for _ in dl:
        n += 1
    return n


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("collate", list(COLLATES))
def test_loader(benchmark, collate, workers):
    """One epoch of 16 batches; batches/s = 16 / time."""
    dl = loader(collate, workers)
    epoch(dl)                                              # start the workers
    benchmark.group = f"dataloader-tokens-workers{workers}"
    benchmark.name = f"test_loader_{collate}"
    n = benchmark.pedantic(epoch, args=(dl,), rounds=5, iterations=1)
    assert n == 16


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("collate", ["fastcollate", "torch_pad_pack", "floor_concat"])
def test_loader_speech(benchmark, collate, workers):
    """One epoch of 8 speech-like batches (8.5 MB each); batches/s = 8 / time."""
    dl = loader(collate, workers, "speech")
    epoch(dl)                                              # start the workers
    benchmark.group = f"dataloader-speech-workers{workers}"
    benchmark.name = f"test_loader_speech_{collate}"
    n = benchmark.pedantic(epoch, args=(dl,), rounds=5, iterations=1)
    assert n == 8
