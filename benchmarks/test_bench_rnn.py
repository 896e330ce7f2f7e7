"""The fastcollate.rnn drop-ins against torch.nn.utils.rnn on tensor batches, per
benchmark workload (docs/benchmarks.md), with the copy floor (torch.cat).

    pytest benchmarks/test_bench_rnn.py --benchmark-only
"""
import pytest
import torch
import torch.nn.utils.rnn as torch_rnn

from fastcollate import rnn
from workloads import WORKLOADS

ALL = list(WORKLOADS)


def _sorted(batch):
    return sorted(batch, key=len, reverse=True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("impl", ["fastcollate", "torch"])
def test_pack_sequence(benchmark, name, impl):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"rnn-pack_sequence-{name}"
    benchmark.name = f"test_{impl}_pack_sequence"
    fn = rnn.pack_sequence if impl == "fastcollate" else torch_rnn.pack_sequence
    p = benchmark(fn, batch, enforce_sorted=False)
    assert p.data.shape[0] == sum(len(t) for t in batch)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("impl", ["fastcollate", "torch"])
def test_pack_sequence_sorted(benchmark, name, impl):
    batch = _sorted(WORKLOADS[name].tensors())
    benchmark.group = f"rnn-pack_sequence_sorted-{name}"
    benchmark.name = f"test_{impl}_pack_sequence_sorted"
    fn = rnn.pack_sequence if impl == "fastcollate" else torch_rnn.pack_sequence
    p = benchmark(fn, batch)
    assert p.sorted_indices is None


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("impl", ["fastcollate", "torch"])
def test_pad_sequence(benchmark, name, impl):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"rnn-pad_sequence-{name}"
    benchmark.name = f"test_{impl}_pad_sequence"
    fn = rnn.pad_sequence if impl == "fastcollate" else torch_rnn.pad_sequence
    out = benchmark(fn, batch, batch_first=True)
    assert out.shape[0] == len(batch)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("impl", ["fastcollate", "torch"])
def test_pack_padded_sequence(benchmark, name, batch_first, impl):
    batch = WORKLOADS[name].tensors()
    padded = torch_rnn.pad_sequence(batch, batch_first=batch_first)
    lengths = [len(t) for t in batch]
    benchmark.group = f"rnn-pack_padded_sequence-{name}-{'bf' if batch_first else 'tm'}"
    benchmark.name = f"test_{impl}_pack_padded_sequence"
    fn = rnn.pack_padded_sequence if impl == "fastcollate" else torch_rnn.pack_padded_sequence
    p = benchmark(fn, padded, lengths, batch_first, enforce_sorted=False)
    assert p.data.shape[0] == sum(lengths)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("group", ["pack_sequence", "pack_sequence_sorted", "pad_sequence",
                                   "pack_padded_sequence-{}-bf", "pack_padded_sequence-{}-tm"])
def test_floor_cat(benchmark, name, group):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"rnn-{group.format(name)}" if "{}" in group else f"rnn-{group}-{name}"
    benchmark.name = "test_floor_cat"
    benchmark(torch.cat, batch)
