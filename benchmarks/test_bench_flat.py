"""The flattened (varlen) layout: flatten() against a Python torch.cat + cumsum collate
and the copy floor (np.concatenate / torch.cat of the same batch), FlatteningCollator
against transformers' DataCollatorWithFlattening, and pack_rows' efficiency.

    pytest benchmarks/test_bench_flat.py --benchmark-only
"""
import numpy as np
import pytest
import torch

import fastcollate
from fastcollate import FlatteningCollator, PackedCollate
from workloads import FLAT, WORKLOADS

ALL = list(WORKLOADS)


def torch_cat_cumsum(batch):
    """The usual Python collate for varlen attention: per-sample tensors, torch.cat,
    cumsum of the lengths into int32 cu_seqlens, max_seqlen read back."""
    ts = [torch.as_tensor(a) for a in batch]
    lengths = torch.tensor([len(t) for t in ts])
    cu = torch.zeros(len(ts) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    return torch.cat(ts), cu, int(lengths.max())


@pytest.mark.parametrize("name", ALL)
def test_flat_numpy_fastcollate(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"flat-{name}-numpy"
    f = benchmark(fastcollate.flatten, batch)
    assert f.values.shape[0] == sum(len(a) for a in batch)


@pytest.mark.parametrize("name", ALL)
def test_flat_numpy_torch_cat_cumsum(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"flat-{name}-numpy"
    benchmark(torch_cat_cumsum, batch)


@pytest.mark.parametrize("name", ALL)
def test_flat_numpy_floor_concatenate(benchmark, name):
    batch = WORKLOADS[name].arrays()
    benchmark.group = f"flat-{name}-numpy"
    benchmark(np.concatenate, batch)


@pytest.mark.parametrize("name", ALL)
def test_flat_tensor_fastcollate(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"flat-{name}-tensor"
    benchmark(fastcollate.flatten, batch)


@pytest.mark.parametrize("name", ALL)
def test_flat_tensor_torch_cat_cumsum(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"flat-{name}-tensor"
    benchmark(torch_cat_cumsum, batch)


@pytest.mark.parametrize("name", ALL)
def test_flat_tensor_floor_torch_cat(benchmark, name):
    batch = WORKLOADS[name].tensors()
    benchmark.group = f"flat-{name}-tensor"
    benchmark(torch.cat, batch)


@pytest.mark.parametrize("name", FLAT)
def test_flat_lists_fastcollate(benchmark, name):
    batch = WORKLOADS[name].lists()
    benchmark.group = f"flat-{name}-lists"
    benchmark(fastcollate.flatten, batch, position_ids=True)


@pytest.mark.parametrize("name", FLAT)
def test_flat_lists_torch_cat_cumsum(benchmark, name):
    batch = WORKLOADS[name].lists()
    benchmark.group = f"flat-{name}-lists"

    def collate():
        values, cu, longest = torch_cat_cumsum([torch.tensor(s) for s in batch])
        positions = torch.cat([torch.arange(len(s)) for s in batch])
        return values, cu, longest, positions
    benchmark(collate)


# -- Hugging Face: features of token-id lists, as a tokenized dataset yields them --------

def _features(name):
    if name == "256-tokens":            # 64 chunks of 256 tokens, as in pre-training
        rng = np.random.default_rng(0)
        return [{"input_ids": rng.integers(0, 30000, 256).tolist()} for _ in range(64)]
    return [{"input_ids": s} for s in WORKLOADS[name].lists()]


HF = ["tokens", "short-many", "256-tokens"]


@pytest.mark.parametrize("name", HF)
def test_hf_flattening_fastcollate(benchmark, name):
    features = _features(name)
    benchmark.group = f"hf-flattening-{name}"
    batch = benchmark(FlatteningCollator(return_flash_attn_kwargs=True), features)
    assert batch["input_ids"].shape[0] == 1


@pytest.mark.parametrize("name", HF)
def test_hf_flattening_torch_transformers(benchmark, name):
    transformers = pytest.importorskip("transformers")
    features = _features(name)
    benchmark.group = f"hf-flattening-{name}"
    benchmark(transformers.DataCollatorWithFlattening(return_flash_attn_kwargs=True),
              features)


@pytest.mark.parametrize("name", HF)
def test_hf_flattening_floor_concatenate(benchmark, name):
    arrays = [np.array(f["input_ids"]) for f in _features(name)]
    benchmark.group = f"hf-flattening-{name}"
    benchmark(np.concatenate, arrays)


def test_collate_flat_fastcollate(benchmark):
    samples = [(a, i) for i, a in enumerate(WORKLOADS["tokens"].arrays())]
    benchmark.group = "collate-flat-tokens"
    flat, labels = benchmark(PackedCollate(mode="flat", flat={"position_ids": True}),
                             samples)
    assert labels.shape[0] == len(samples)


def test_collate_flat_torch_cat_cumsum(benchmark):
    samples = [(a, i) for i, a in enumerate(WORKLOADS["tokens"].arrays())]
    benchmark.group = "collate-flat-tokens"

    def collate():
        values, cu, longest = torch_cat_cumsum([s for s, _ in samples])
        positions = torch.cat([torch.arange(len(s)) for s, _ in samples])
        return values, cu, longest, positions, torch.tensor([y for _, y in samples])
    benchmark(collate)


# -- fixed-length rows -----------------------------------------------------------------

@pytest.mark.parametrize("buffer", [256, 4096])
def test_pack_rows_fastcollate(benchmark, buffer):
    """First-fit decreasing over a buffer of token samples into rows of 2048; the
    efficiency (real / packed tokens) goes into the benchmark's extra info."""
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.0, 1.0, buffer), 1, 2048).astype(np.int64)
    samples = [rng.integers(0, 30000, n) for n in lengths]
    benchmark.group = f"pack-rows-{buffer}"
    rows = benchmark(fastcollate.pack_rows, samples, 2048)
    benchmark.extra_info["efficiency"] = rows.efficiency
    benchmark.extra_info["one_per_row"] = float(lengths.sum()) / (buffer * 2048)
    print(f"\npack_rows buffer={buffer}: efficiency {rows.efficiency:.3f} in "
          f"{rows.values.shape[0]} rows")
    assert rows.efficiency > 0.9


@pytest.mark.parametrize("buffer", [256, 4096])
def test_pack_rows_floor_concatenate(benchmark, buffer):
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.0, 1.0, buffer), 1, 2048).astype(np.int64)
    samples = [rng.integers(0, 30000, n) for n in lengths]
    benchmark.group = f"pack-rows-{buffer}"
    benchmark(np.concatenate, samples)
