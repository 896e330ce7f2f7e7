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
# op -> (the call, given the module and the batch; whether the batch comes sorted)
OPS = {
    "pack_sequence": (lambda m, b: m.pack_sequence(b, enforce_sorted=False), False),
    "pack_sequence_sorted": (lambda m, b: m.pack_sequence(b), True),
    "pad_sequence": (lambda m, b: m.pad_sequence(b, batch_first=True), False),
    # torch's default layout: time-major (T, B, *row)
    "pad_sequence_tm": (lambda m, b: m.pad_sequence(b), False),
}


def _batch(name, sort):
    batch = WORKLOADS[name].tensors()
    return sorted(batch, key=len, reverse=True) if sort else batch


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("impl", ["fastcollate", "torch"])
def test_dropin(benchmark, name, op, impl):
    call, sort = OPS[op]
    batch = _batch(name, sort)
    benchmark.group = f"rnn-{op}-{name}"
    benchmark.name = f"test_{impl}_{op}"
    module = rnn if impl == "fastcollate" else torch_rnn
    out = benchmark(call, module, batch)
    if op.startswith("pack"):
        assert out.data.shape[0] == sum(len(t) for t in batch)
    else:
        assert out.shape[1 if op.endswith("_tm") else 0] == len(batch)


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
@pytest.mark.parametrize("group", list(OPS) + ["pack_padded_sequence-{}-bf",
                                               "pack_padded_sequence-{}-tm"])
def test_floor_cat(benchmark, name, group):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"rnn-{group.format(name)}" if "{}" in group else f"rnn-{group}-{name}"
    benchmark.name = "test_floor_cat"
    benchmark(torch.cat, batch)
