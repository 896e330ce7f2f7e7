"""BucketStream: padding efficiency against BucketBatchSampler and random batching, and
throughput against lhotse's DynamicBucketingSampler on the same lengths.

    pytest benchmarks/test_bench_stream.py --benchmark-only
    pytest benchmarks/test_bench_stream.py -s -k efficiency     # padding report

Lengths: ``default_rng(0).lognormal(mean=3.3, sigma=0.8)`` clipped to 1..512 (the
sampler benchmark's), ``max_tokens=4096``, ``buffer_size=10000``, 16 buckets.
Throughput group (1e5 samples, one epoch, single thread): BucketStream over dicts with
the length under a key, the same over the bare lengths (:func:`bucket_lengths`), the
Python floor (only reading every sample's length), and lhotse's
``DynamicBucketingSampler`` over a ``CutSet`` of cuts with those durations (same
budget, buffer and bucket count; skipped when lhotse is not installed).
"""
import functools

import numpy as np
import pytest

from fastcollate.sampler import BucketBatchSampler, padding_efficiency
from fastcollate.stream import BucketStream, bucket_lengths

MAX_TOKENS = 4096
BUFFER = 10_000
BUCKETS = 16
N_THROUGHPUT = 10**5


@functools.lru_cache(maxsize=None)
def lengths_of(n):
    rng = np.random.default_rng(0)
    return np.clip(rng.lognormal(mean=3.3, sigma=0.8, size=n), 1, 512).astype(np.int64)


@functools.lru_cache(maxsize=None)
def samples_of(n):
    return [{"id": i, "len": k} for i, k in enumerate(lengths_of(n).tolist())]


def run(benchmark, fn, *args):
    benchmark.group = "stream-epoch-1e5"
    return benchmark.pedantic(fn, args=args, rounds=5, iterations=1, warmup_rounds=1)


def stream_epoch(samples):
    stream = BucketStream(samples, length=lambda s: s["len"], max_tokens=MAX_TOKENS,
                          buffer_size=BUFFER, num_buckets=BUCKETS)
    return sum(len(b) for b in stream)


def test_fastcollate_stream(benchmark):
    assert run(benchmark, stream_epoch, samples_of(N_THROUGHPUT)) == N_THROUGHPUT


def test_fastcollate_bucket_lengths(benchmark):
    L = lengths_of(N_THROUGHPUT)
    batches = run(benchmark, lambda: bucket_lengths(L, max_tokens=MAX_TOKENS,
                                                    buffer_size=BUFFER,
                                                    num_buckets=BUCKETS))
    assert sum(map(len, batches)) == N_THROUGHPUT


def test_floor_read_lengths(benchmark):
    """Reading every sample's length through the same callable: the Python floor."""
    get = lambda s: s["len"]   # noqa: E731
    assert run(benchmark, lambda xs: sum(get(s) for s in xs), samples_of(N_THROUGHPUT))


def test_lhotse_dynamic_bucketing(benchmark):
    lhotse = pytest.importorskip("lhotse")
    from lhotse.dataset.sampling import DynamicBucketingSampler
    cuts = lhotse.CutSet.from_cuts(
        lhotse.MonoCut(id=str(i), start=0.0, duration=float(k), channel=0)
        for i, k in enumerate(lengths_of(N_THROUGHPUT).tolist()))

    def epoch():
        sampler = DynamicBucketingSampler(cuts, max_duration=MAX_TOKENS,
                                          num_buckets=BUCKETS, buffer_size=BUFFER,
                                          shuffle=True, seed=0)
        return sum(len(b) for b in sampler)

    assert run(benchmark, epoch) == N_THROUGHPUT


def test_padding_efficiency_stream_vs_sampler_vs_random():
    """Print real / padded tokens at 1e6 samples, max_tokens=4096 (run with -s)."""
    L = lengths_of(10**6)
    stream = padding_efficiency(L, bucket_lengths(L, max_tokens=MAX_TOKENS,
                                                  buffer_size=BUFFER,
                                                  num_buckets=BUCKETS))
    s = BucketBatchSampler(L, max_tokens=MAX_TOKENS, seed=0)
    sampler = s.efficiency()
    random_budget = s.efficiency(bucketed=False)
    bs = round(len(L) / sampler.batches)
    perm = np.random.default_rng(0).permutation(len(L))
    random_count = padding_efficiency(L, np.array_split(perm, -(-len(L) // bs)))
    print(f"\npadding efficiency, {len(L)} lognormal(3.3, 0.8) lengths, "
          f"max_tokens={MAX_TOKENS}:")
    for name, st in [(f"BucketStream (buffer {BUFFER}, {BUCKETS} buckets)", stream),
                     (f"BucketBatchSampler (bucket_size {s.bucket_size})", sampler),
                     ("random, same token budget", random_budget),
                     (f"random, fixed batch size {bs}", random_count)]:
        print(f"  {name:44s} batches={st.batches:6d} efficiency={st.efficiency:.3f}")
    assert stream.efficiency >= sampler.efficiency - 0.03
    assert stream.efficiency > random_budget.efficiency + 0.5
