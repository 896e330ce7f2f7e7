"""BucketBatchSampler epoch construction against plain Python and the argsort floor.

    pytest benchmarks/test_bench_sampler.py --benchmark-only
    pytest benchmarks/test_bench_sampler.py -s -k efficiency     # padding report

Lengths: ``default_rng(0).lognormal(mean=3.3, sigma=0.8)`` clipped to 1..512, int64 (the
``tokens`` workload's distribution); budget ``max_tokens=4096``, default bucket size.
One group per size: the full epoch build (permutation + Cython kernel + batch shuffle),
the kernel alone on a fixed permutation, ``np.argsort`` of the lengths (the floor: one
sort, no permutation, no batching) and, at 1e5 only, the same algorithm in plain
Python (too slow beyond). Under ``--benchmark-disable`` each runs once (~3 s in all).
"""
import functools

import numpy as np
import pytest

from fastcollate._sampler import build_epoch
from fastcollate.sampler import BucketBatchSampler, padding_efficiency

MAX_TOKENS = 4096
SIZES = {"1e5": 10**5, "1e6": 10**6, "1e7": 10**7}
ROUNDS = {"1e5": 50, "1e6": 10, "1e7": 3}


@functools.lru_cache(maxsize=None)
def lengths_of(size):
    rng = np.random.default_rng(0)
    return np.clip(rng.lognormal(mean=3.3, sigma=0.8, size=SIZES[size]), 1,
                   512).astype(np.int64)


@functools.lru_cache(maxsize=None)
def sampler_of(size):
    return BucketBatchSampler(lengths_of(size), max_tokens=MAX_TOKENS, seed=0)


def python_epoch(lengths, max_tokens, bucket_size, seed, epoch):
    """The same algorithm in plain Python (NumPy only for the generator)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    lens = lengths.tolist()
    batches = []
    for start in range(0, len(order), bucket_size):
        chunk = sorted(order[start:start + bucket_size], key=lambda i: -lens[i])
        batch, longest = [], 0
        for i in chunk:
            top = max(longest, lens[i])
            if batch and (len(batch) + 1) * top > max_tokens:
                batches.append(batch)
                batch, top = [], lens[i]
            batch.append(i)
            longest = top
        if batch:
            batches.append(batch)
    return [batches[k] for k in rng.permutation(len(batches))]


def run(benchmark, size, fn, *args):
    benchmark.group = f"sampler-epoch-{size}"
    return benchmark.pedantic(fn, args=args, rounds=ROUNDS[size], iterations=1,
                              warmup_rounds=1 if size != "1e7" else 0)


@pytest.mark.parametrize("size", list(SIZES))
def test_fastcollate_epoch(benchmark, size):
    s = sampler_of(size)
    idx, off, order = run(benchmark, size, s._build, 1)
    assert len(idx) == SIZES[size] and len(order) == len(off) - 1


@pytest.mark.parametrize("size", list(SIZES))
def test_fastcollate_kernel_only(benchmark, size):
    s = sampler_of(size)
    perm = np.random.default_rng(1).permutation(SIZES[size])
    idx, off = run(benchmark, size, build_epoch, perm, s.lengths, 512, s.bucket_size,
                   0, MAX_TOKENS)
    assert len(idx) == SIZES[size]


@pytest.mark.parametrize("size", list(SIZES))
def test_floor_argsort(benchmark, size):
    run(benchmark, size, np.argsort, lengths_of(size))


@pytest.mark.parametrize("size", list(SIZES))
def test_python_reference(benchmark, size):
    if SIZES[size] > 10**5:
        pytest.skip("plain Python is too slow beyond 1e5")
    s = sampler_of(size)
    benchmark.group = f"sampler-epoch-{size}"
    batches = benchmark.pedantic(python_epoch, args=(s.lengths, MAX_TOKENS, s.bucket_size,
                                                      0, 1), rounds=3, iterations=1)
    idx, off, order = s._build(1)
    assert batches == [idx[off[b]:off[b + 1]].tolist() for b in order.tolist()]


def test_padding_efficiency_random_vs_bucketed():
    """Print real / padded tokens at 1e6 samples, max_tokens=4096 (run with -s)."""
    L = lengths_of("1e6")
    s = sampler_of("1e6")
    bucketed = s.efficiency()
    random_budget = s.efficiency(bucketed=False)
    # torch's BatchSampler over a RandomSampler, batch size = the bucketed mean
    bs = round(len(L) / bucketed.batches)
    perm = np.random.default_rng(0).permutation(len(L))
    random_count = padding_efficiency(L, np.array_split(perm, -(-len(L) // bs)))
    print(f"\npadding efficiency, {len(L)} lognormal(3.3, 0.8) lengths, "
          f"max_tokens={MAX_TOKENS}, bucket_size={s.bucket_size}:")
    for name, st in [("bucketed (BucketBatchSampler)", bucketed),
                     ("random, same token budget", random_budget),
                     (f"random, fixed batch size {bs}", random_count)]:
        print(f"  {name:32s} batches={st.batches:6d} real={st.real_tokens} "
              f"padded={st.padded_tokens} efficiency={st.efficiency:.3f}")
    assert bucketed.efficiency > 0.95
    assert bucketed.efficiency > random_budget.efficiency
    assert bucketed.batches < random_budget.batches
