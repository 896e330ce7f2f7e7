"""BucketStream: the streaming bucketer against a plain reference, sharding, limits,
determinism, resumption, bounded memory, Hugging Face streaming datasets and DDP.

``reference_stream`` is the algorithm of ``fastcollate.stream`` in plain Python, with
its own generator: simple, reliable and slow.
"""
import bisect
import json
import os
import weakref

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from fastcollate import PackedCollate, padding_efficiency
from fastcollate._stream import BucketBuffer
from fastcollate.sampler import BucketBatchSampler
from fastcollate.stream import (BucketStream, bucket_lengths, estimate_boundaries,
                                stop_together)
from test_sampler import _free_port

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
MASK = (1 << 64) - 1


# --------------------------------------------------------------------------- reference
class SplitMix:
    def __init__(self, state):
        self.state = state & MASK

    def below(self, n):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return (z ^ (z >> 31)) % n


def fits(batch, ln, lengths, batch_size, max_tokens):
    """BucketBatchSampler's rule: may ``batch`` take one more sample of length ``ln``?"""
    grown = len(batch) + 1
    top = max([lengths[p] for p in batch] + [ln])
    return ((batch_size is None or grown <= batch_size)
            and (max_tokens is None or grown * top <= max_tokens))


def reference_stream(lengths, *, buffer_size, batch_size=None, max_tokens=None,
                     boundaries=None, num_buckets=16, seed=0, epoch=0, consumer=0,
                     drop_last=False):
    """Batches of positions in yield order, for a stream of ``lengths``."""
    rng = SplitMix(int(np.random.default_rng([seed, epoch, consumer]).integers(2**63)))
    buf, out, bnd = [], [], boundaries

    def cut():
        buckets = {}
        for p in buf:
            buckets.setdefault(bisect.bisect_left(bnd, lengths[p]), []).append(p)
        tokens = {k: sum(lengths[p] for p in m) for k, m in buckets.items()}
        ready = []
        for k in sorted(buckets):
            longest = max(lengths[p] for p in buckets[k])
            cap = min(batch_size or len(buf) + 1,
                      max_tokens // longest if max_tokens else len(buf) + 1)
            if len(buckets[k]) >= cap:
                ready.append(k)
        if ready:
            r = rng.below(sum(tokens[k] for k in ready))
            for k in ready:
                if r < tokens[k]:
                    break
                r -= tokens[k]
        else:
            k = min(buckets, key=lambda k: (-tokens[k], k))
        run = sorted(buckets[k], key=lambda p: (-lengths[p], p))
        lo = hi = run.index(min(run))      # the bucket's oldest sample
        hi += 1
        while hi < len(run) and fits(run[lo:hi], lengths[run[hi]], lengths, batch_size,
                                     max_tokens):
            hi += 1
        while lo > 0 and fits(run[lo:hi], lengths[run[lo - 1]], lengths, batch_size,
                              max_tokens):
            lo -= 1
        for p in run[lo:hi]:
            buf.remove(p)
        return run[lo:hi]

    for pos in range(len(lengths)):
        if max_tokens is not None and lengths[pos] > max_tokens:
            continue
        buf.append(pos)
        if len(buf) == buffer_size:
            if bnd is None:
                bnd = estimate_boundaries([lengths[p] for p in buf], num_buckets)
            out.append(cut())
    tail, batch = [], []
    for p in sorted(buf, key=lambda p: (-lengths[p], p)):
        if batch and not fits(batch, lengths[p], lengths, batch_size, max_tokens):
            tail.append(batch)
            batch = []
        batch.append(p)
    if batch:
        tail.append(batch)
    if drop_last and batch_size is not None and tail and len(tail[-1]) < batch_size:
        tail.pop()
    for i in range(len(tail) - 1, 0, -1):
        j = rng.below(i + 1)
        tail[i], tail[j] = tail[j], tail[i]
    return out + tail


def lognormal_lengths(n, seed=0, high=512):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.3, 0.8, n), 1, high).astype(np.int64).tolist()


def flat(batches):
    return sorted(i for b in batches for i in b)


configs = st.fixed_dictionaries({
    "lengths": st.lists(st.integers(1, 40), min_size=0, max_size=300),
    "buffer_size": st.integers(1, 80),
    "limits": st.sampled_from(["tokens", "count", "both"]),
    "max_tokens": st.integers(40, 200),
    "batch_size": st.integers(1, 12),
    "num_buckets": st.integers(1, 8),
    "given": st.booleans(),
    "seed": st.integers(0, 5),
    "drop_last": st.booleans(),
})


def kwargs_of(cfg):
    kw = dict(buffer_size=cfg["buffer_size"], num_buckets=cfg["num_buckets"],
              seed=cfg["seed"], drop_last=cfg["drop_last"])
    if cfg["limits"] in ("tokens", "both"):
        kw["max_tokens"] = cfg["max_tokens"]
    if cfg["limits"] in ("count", "both"):
        kw["batch_size"] = cfg["batch_size"]
    if cfg["given"]:
        kw["boundaries"] = [4, 9, 17][:cfg["num_buckets"]]
    return kw


# --------------------------------------------------------------------------- algorithm
@SETTINGS
@given(configs)
def test_equals_python_reference(cfg):
    kw = kwargs_of(cfg)
    assert bucket_lengths(cfg["lengths"], **kw) == reference_stream(cfg["lengths"], **kw)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 20000), max_size=200), st.integers(1, 60),
       st.integers(1, 4), st.integers(0, 3))
def test_equals_reference_on_wide_length_ranges(lengths, buffer_size, num_buckets, seed):
    # buckets spanning >= 4096 distinct lengths are sorted by qsort, not by counting
    kw = dict(max_tokens=10**5, buffer_size=buffer_size, num_buckets=num_buckets,
              seed=seed)
    assert bucket_lengths(lengths, **kw) == reference_stream(lengths, **kw)


@SETTINGS
@given(configs)
def test_every_sample_once_and_limits_hold(cfg):
    kw = kwargs_of(cfg)
    L = cfg["lengths"]
    batches = bucket_lengths(L, **kw)
    assert all(batches)
    seen = flat(batches)
    assert len(seen) == len(set(seen))
    if not (cfg["drop_last"] and "batch_size" in kw):
        assert seen == list(range(len(L)))
    else:                                  # at most one short batch of the flush dropped
        assert len(L) - len(seen) < kw["batch_size"]
    for b in batches:
        assert "batch_size" not in kw or len(b) <= kw["batch_size"]
        assert "max_tokens" not in kw or len(b) * max(L[i] for i in b) <= kw["max_tokens"]


def test_stream_equals_bucket_lengths():
    L = lognormal_lengths(3000)
    stream = BucketStream([[7] * n for n in L], max_tokens=2048, buffer_size=500, seed=3)
    got = [[len(s) for s in b] for b in stream]
    ref = [[L[i] for i in b] for b in bucket_lengths(L, max_tokens=2048, buffer_size=500,
                                                     seed=3)]
    assert got == ref


def test_batches_are_longest_first_runs_of_one_bucket():
    L = lognormal_lengths(4000, seed=1)
    bnd = [20, 40, 80]
    batches = bucket_lengths(L, max_tokens=4096, buffer_size=1000, boundaries=bnd)
    for b in batches[:-20]:              # the flush at the end mixes buckets
        lens = [L[i] for i in b]
        assert lens == sorted(lens, reverse=True)
        assert len({bisect.bisect_left(bnd, n) for n in lens}) == 1


def test_estimate_boundaries_splits_tokens_evenly():
    L = lognormal_lengths(20000)
    b = estimate_boundaries(L, 4)
    assert b == sorted(set(b)) and len(b) == 3
    tokens = np.bincount([bisect.bisect_left(b, n) for n in L], weights=L)
    assert np.all(np.abs(tokens / tokens.sum() - 0.25) < 0.05)
    assert estimate_boundaries([5, 5, 5], 8) == [] and estimate_boundaries([], 3) == []


def test_efficiency_close_to_bucket_batch_sampler_and_far_above_random():
    L = np.array(lognormal_lengths(30000))
    batches = bucket_lengths(L, max_tokens=4096, buffer_size=5000)
    ours = padding_efficiency(L, batches).efficiency
    bbs = BucketBatchSampler(L, max_tokens=4096, seed=0).efficiency()
    assert ours > bbs.efficiency - 0.03
    assert ours > bbs.efficiency - 0.03 > 0.5 > BucketBatchSampler(
        L, max_tokens=4096).efficiency(bucketed=False).efficiency


def test_efficiency_report_counts_yielded_batches():
    L = lognormal_lengths(2000)
    stream = BucketStream([[0] * n for n in L], max_tokens=1024, buffer_size=300)
    batches = [[len(s) for s in b] for b in stream]
    stats = stream.efficiency()
    assert stats.batches == len(batches) and stats.samples == len(L)
    assert stats.real_tokens == sum(L)
    assert stats.padded_tokens == sum(len(b) * max(b) for b in batches)
    assert stats == padding_efficiency(L, bucket_lengths(L, max_tokens=1024,
                                                         buffer_size=300))


# --------------------------------------------------------------------------- determinism
def test_same_seed_and_epoch_same_batches():
    src = [[0] * n for n in lognormal_lengths(2000)]
    a = BucketStream(src, max_tokens=1024, buffer_size=200, seed=5)
    b = BucketStream(src, max_tokens=1024, buffer_size=200, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    ids = lambda s: [[id(x) for x in batch] for batch in s]
    assert ids(a) == ids(b) == ids(a)


def test_other_epoch_or_seed_other_batches():
    L = lognormal_lengths(2000)
    base = bucket_lengths(L, max_tokens=1024, buffer_size=200, seed=5)
    assert bucket_lengths(L, max_tokens=1024, buffer_size=200, seed=5, epoch=1) != base
    assert bucket_lengths(L, max_tokens=1024, buffer_size=200, seed=6) != base


# --------------------------------------------------------------------------- sharding
class Item:
    """A sample: its id and a ragged field; counts live instances."""
    __slots__ = ("id", "tokens", "__weakref__")

    def __init__(self, i, n):
        self.id = i
        self.tokens = list(range(n))

    def __getitem__(self, key):
        return getattr(self, key)


def items(L):
    return [Item(i, n) for i, n in enumerate(L)]


def ids_of(batch):
    return [s.id for s in batch]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_read_disjoint_samples_covering_the_stream(world):
    L = lognormal_lengths(997)
    src = items(L)
    per_rank = []
    for r in range(world):
        s = BucketStream(src, length="tokens", max_tokens=1024, buffer_size=100,
                         collate_fn=ids_of, num_replicas=world, rank=r)
        per_rank.append(flat(s))
        assert per_rank[-1] == [i for i in range(len(L)) if i % world == r]
    assert flat(per_rank) == list(range(len(L)))


def test_two_workers_by_skipping():
    L = lognormal_lengths(600)
    stream = BucketStream(items(L), length="tokens", max_tokens=1024, buffer_size=64,
                          collate_fn=ids_of, num_replicas=2, rank=1)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    got = list(loader)
    # rank 1's workers are consumers 2 and 3 of 4
    assert flat(got) == [i for i in range(len(L)) if i % 4 in (2, 3)]
    for b in got:
        assert len(b) * max(L[i] for i in b) <= 1024


def _open_shard(shard):
    start, lengths = shard
    return [(start + k, [0] * n) for k, n in enumerate(lengths)]


def test_two_workers_by_shard_read_each_shard_once():
    L = lognormal_lengths(700)
    shards = [(s, L[s:s + 100]) for s in range(0, 700, 100)]
    opened = []

    def open_shard(shard):
        opened.append(shard[0])
        return _open_shard(shard)

    stream = BucketStream(shards, open_shard=open_shard, length=1, max_tokens=2048,
                          buffer_size=50, collate_fn=lambda b: [i for i, _ in b], seed=1)
    assert flat(DataLoader(stream, batch_size=None, num_workers=2)) == list(range(700))
    # in-process, per simulated rank: shards split, each opened by one consumer
    for world in (2, 3):
        seen = []
        for r in range(world):
            opened.clear()
            s = BucketStream(shards, open_shard=open_shard, length=1, max_tokens=2048,
                             buffer_size=50, collate_fn=lambda b: [i for i, _ in b],
                             num_replicas=world, rank=r, seed=1)
            seen.append(flat(s))
            assert len(opened) in (7 // world, 7 // world + 1)
        assert flat(seen) == list(range(700))


def test_shard_order_changes_with_the_epoch():
    shards = [(s, [3] * 10) for s in range(0, 100, 10)]
    s = BucketStream(shards, open_shard=_open_shard, length=1, batch_size=10,
                     buffer_size=10, collate_fn=lambda b: b[0][0] // 10 * 10)
    first = list(s)
    s.set_epoch(1)
    assert sorted(first) == sorted(list(s)) and first != list(s)


def test_hf_streaming_dataset_through_two_workers():
    datasets = pytest.importorskip("datasets")
    L = lognormal_lengths(400, high=100)
    ds = datasets.Dataset.from_dict({"id": list(range(len(L))),
                                     "input_ids": [[1] * n for n in L]})
    ids = ds.to_iterable_dataset(num_shards=4)
    stream = BucketStream(ids, length="input_ids", max_tokens=512, buffer_size=50,
                          collate_fn=PackedCollate(ragged="input_ids"))
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    seen = []
    for batch in loader:
        packed = batch["input_ids"]
        assert int(packed.batch_sizes[0]) * len(packed.batch_sizes) <= 512
        got = batch["id"].tolist()
        unpacked = torch.nn.utils.rnn.unpack_sequence(packed)
        assert [len(x) for x in unpacked] == [L[i] for i in got]
        seen += got
    assert sorted(seen) == list(range(len(L)))
    # ranks: split by datasets (4 shards, 2 nodes: by shard; 3 nodes: by example)
    for world in (2, 3):
        per = [flat(BucketStream(ids, length="input_ids", max_tokens=512, buffer_size=50,
                                 collate_fn=lambda b: [x["id"] for x in b],
                                 num_replicas=world, rank=r)) for r in range(world)]
        assert flat(per) == list(range(len(L)))


# --------------------------------------------------------------------------- resumption
@pytest.mark.parametrize("stop", [0, 1, 7, 30])
def test_load_state_dict_resumes_mid_epoch(stop):
    L = lognormal_lengths(3000)
    src = items(L)
    kw = dict(length="tokens", max_tokens=2048, buffer_size=300, collate_fn=ids_of, seed=2)
    a = BucketStream(src, **kw)
    a.set_epoch(1)
    it = iter(a)
    head = [next(it) for _ in range(stop)]
    state = json.loads(json.dumps(a.state_dict()))
    rest = list(it)
    b = BucketStream(src, **kw)
    b.load_state_dict(state)
    assert b.epoch == 1 and list(b) == rest
    assert flat(head + rest) == list(range(len(L)))
    assert b.efficiency() == a.efficiency()      # replayed batches count
    assert list(b) == head + rest                # later iterations: full epochs


def test_state_dict_batches_consumed_and_set_epoch_cancel():
    L = lognormal_lengths(500)
    kw = dict(length="tokens", max_tokens=1024, buffer_size=100, collate_fn=ids_of)
    a = BucketStream(items(L), **kw)
    full = list(a)
    b = BucketStream(items(L), **kw)
    b.load_state_dict(a.state_dict(batches_consumed=3))
    assert list(b) == full[3:]
    b.load_state_dict(a.state_dict(batches_consumed=3))
    b.set_epoch(1)
    assert flat(b) == list(range(len(L)))


def test_load_state_dict_rejects_another_configuration():
    src = items(lognormal_lengths(50))
    a = BucketStream(src, max_tokens=512, buffer_size=10, length="tokens")
    with pytest.raises(ValueError, match="buffer_size: saved 10, now 11"):
        BucketStream(src, max_tokens=512, buffer_size=11).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="missing"):
        a.load_state_dict({"epoch": 0})
    with pytest.raises(TypeError):
        a.load_state_dict([1])
    state = a.state_dict()
    state["consumers"] = 2
    b = BucketStream(src, max_tokens=512, buffer_size=10, length="tokens")
    b.load_state_dict(state)
    with pytest.raises(ValueError, match="consumer 0 of 2"):
        next(iter(b))


def test_stateful_dataloader_resumes_with_two_workers():
    tdl = pytest.importorskip("torchdata.stateful_dataloader")
    L = lognormal_lengths(1200)
    kw = dict(length="tokens", max_tokens=2048, buffer_size=100, collate_fn=ids_of, seed=4)

    def loader():
        return tdl.StatefulDataLoader(BucketStream(items(L), **kw), batch_size=None,
                                      num_workers=2)

    a = loader()
    it = iter(a)
    head = [next(it) for _ in range(9)]
    state = a.state_dict()
    rest = list(it)
    b = loader()
    b.load_state_dict(state)
    again = list(b)
    assert again == rest
    assert flat(head + again) == list(range(len(L)))
    c = loader()                  # the state of a loader that has not started
    c.load_state_dict(loader().state_dict())
    assert list(c) == head + rest


def test_length_key_survives_pickling():
    import pickle
    s = pickle.loads(pickle.dumps(BucketStream([{"ids": [1, 2]}], length="ids",
                                               batch_size=2)))
    assert list(s) == [[{"ids": [1, 2]}]]


# --------------------------------------------------------------------------- memory
def test_memory_is_bounded_by_the_buffer():
    alive = weakref.WeakSet()
    L = lognormal_lengths(20000)

    def source():
        for i, n in enumerate(L):
            it = Item(i, n)
            alive.add(it)
            yield it

    stream = BucketStream(source, length="tokens", max_tokens=1024, buffer_size=256)
    peak, count, largest = 0, 0, 0
    for batch in stream:
        count += len(batch)
        largest = max(largest, len(batch))
        del batch
        peak = max(peak, len(alive))
    assert count == len(L)
    # the buffer, the batch just handed out, the sample the source is on
    assert 256 <= peak <= 256 + largest + 1
    assert stream._run.max_buffered == 256


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(), ValueError, "max_tokens, batch_size or both"),
    (dict(max_tokens=0), ValueError, "max_tokens must be >= 1"),
    (dict(batch_size=2, buffer_size=0), ValueError, "buffer_size must be >= 1"),
    (dict(batch_size=2, num_buckets=1.5), TypeError, "num_buckets must be an int"),
    (dict(batch_size=2, boundaries=[3, 3]), ValueError, "strictly increasing"),
    (dict(batch_size=2, boundaries=[0, 3]), ValueError, "boundaries\\[0\\] must be >= 1"),
    (dict(batch_size=2, length=2.5), TypeError, "length must be None"),
    (dict(batch_size=2, collate_fn=3), TypeError, "collate_fn must be callable"),
    (dict(batch_size=2, rank=2, num_replicas=2), ValueError, "rank must be in"),
    (dict(batch_size=2, open_shard=len), None, None),
])
def test_bad_arguments(kwargs, exc, msg):
    if exc is None:
        with pytest.raises(TypeError, match="sequence of shards"):
            BucketStream(iter([]), **kwargs)
        return
    with pytest.raises(exc, match=msg):
        BucketStream([[1]], **kwargs)


def test_source_must_be_iterable():
    with pytest.raises(TypeError, match="source must be an iterable"):
        BucketStream(3, batch_size=2)


@pytest.mark.parametrize("samples, exc, msg", [
    ([[1], []], ValueError, "stream sample 1: has length 0"),
    ([[1], "ab", 3], TypeError, "stream sample 2"),
])
def test_bad_samples_name_their_position(samples, exc, msg):
    with pytest.raises(exc, match=msg):
        list(BucketStream(samples, batch_size=2, buffer_size=2))


def test_length_function_must_return_an_int():
    with pytest.raises(TypeError, match="stream sample 0: length must be an int, got float"):
        list(BucketStream([1.0], batch_size=2, length=lambda s: s))
    with pytest.raises(TypeError, match="got bool"):
        list(BucketStream([1.0], batch_size=2, length=lambda s: True))
    assert list(BucketStream([3], batch_size=2, length=lambda s: np.int32(s))) == [[3]]


def test_length_errors_of_other_types_pass_through_unchanged():
    class Odd(TypeError):
        def __init__(self, code, detail):
            super().__init__(code, detail)

    def length(sample):
        raise Odd(7, "no")

    with pytest.raises(Odd) as info:
        list(BucketStream([1], batch_size=2, length=length))
    assert info.value.args == (7, "no")


def test_oversized_samples_raise_or_are_dropped_with_one_warning():
    samples = [[0] * n for n in (3, 9, 2, 9)]
    with pytest.raises(ValueError, match="stream sample 1 has length 9 > max_tokens=8"):
        list(BucketStream(samples, max_tokens=8))
    s = BucketStream(samples, max_tokens=8, drop_oversized=True)
    with pytest.warns(UserWarning, match="first: stream sample 1, length 9") as rec:
        assert sorted(len(x) for b in s for x in b) == [2, 3]
    assert len(rec) == 1 and s.dropped == 2


def test_kernel_rejects_bad_use():
    b = BucketBuffer(2, 0, 10, 0)
    with pytest.raises(ValueError, match="length must be >= 1"):
        b.push(0)
    b.push(3)
    b.push(4)
    with pytest.raises(ValueError, match="full"):
        b.push(1)
    with pytest.raises(OverflowError):
        BucketBuffer(4, 1, 0, 0).push(2**62)
    with pytest.raises(TypeError, match="got bool"):
        BucketBuffer(4, 1, 0, 0).push(True)
    assert BucketBuffer(4, 0, 10, 0).push(11) == -1      # longer than max_tokens
    with pytest.raises(ValueError, match="strictly increasing"):
        b.set_boundaries([5, 2])
    with pytest.raises(ValueError, match="not both 0"):
        BucketBuffer(2, 0, 0, 0)
    assert sorted(b.pop_batch().tolist() + b.pop_batch().tolist()) == [0, 1]
    assert b.pop_batch().tolist() == [] and b.size == 0


# --------------------------------------------------------------------------- DDP
def _dist_worker(rank, world, port, lengths, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stream = BucketStream(items(lengths), length="tokens", max_tokens=256,
                              buffer_size=40, collate_fn=ids_of)   # ranks from dist
        everything = list(stream)
        together = list(stop_together(stream))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"rank": stream.rank, "world": stream.num_replicas,
                       "all": everything, "together": together}, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run():
    # rank 1's samples are long and rank 0's short: rank 1 has more batches
    lengths = [5 if i % 2 == 0 else 60 for i in range(400)]
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_dist_worker, args=(2, _free_port(), lengths, out), nprocs=2)
        seen = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)]
    assert [(s["rank"], s["world"]) for s in seen] == [(0, 2), (1, 2)]
    a, b = seen
    assert flat(a["all"]) == list(range(0, 400, 2))
    assert flat(b["all"]) == list(range(1, 400, 2))
    assert len(a["all"]) != len(b["all"])
    n = min(len(a["all"]), len(b["all"]))
    assert len(a["together"]) == len(b["together"]) == n
    assert a["together"] == a["all"][:n] and b["together"] == b["all"][:n]
