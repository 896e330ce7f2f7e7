"""BucketBatchSampler: coverage, limits, determinism, resumption, distributed split.

The Cython epoch builder is checked against ``reference_epoch``, a plain Python version
of the same algorithm: simple, reliable and slow.
"""
import json
import os
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from torch.utils.data import DataLoader, Dataset

from fastcollate._sampler import build_epoch
from fastcollate.sampler import BucketBatchSampler, PaddingStats, padding_efficiency

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- reference
def reference_epoch(lengths, *, max_tokens=None, batch_size=None, shuffle=True, seed=0,
                    epoch=0, drop_last=False, bucket_size):
    """The whole epoch's batches in yield order (before the distributed split)."""
    lengths = [int(x) for x in lengths]
    rng = np.random.default_rng([seed, epoch])
    kept = [i for i, n in enumerate(lengths) if max_tokens is None or n <= max_tokens]
    if shuffle:
        order = [kept[p] for p in rng.permutation(len(kept))]
    else:
        order = kept
    batches = []
    for start in range(0, len(order), bucket_size):
        chunk = sorted(order[start:start + bucket_size], key=lambda i: -lengths[i])
        batch = []
        for i in chunk:
            grown = batch + [i]
            too_many = batch_size is not None and len(grown) > batch_size
            too_big = (max_tokens is not None
                       and len(grown) * max(lengths[j] for j in grown) > max_tokens)
            if batch and (too_many or too_big):
                batches.append(batch)
                batch = [i]
            else:
                batch = grown
        if batch:
            batches.append(batch)
    if drop_last and batch_size is not None and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def reference_split(batches, num_replicas, rank, drop_last=False):
    """Round-robin split; pad with batches from the start, or truncate if drop_last."""
    batches = list(batches)
    rem = len(batches) % num_replicas
    if rem:
        if drop_last:
            batches = batches[:len(batches) - rem]
        else:
            batches = batches + [batches[k % len(batches)]
                                 for k in range(num_replicas - rem)]
    return batches[rank::num_replicas]


def lognormal_lengths(n, seed=0, high=512):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.3, 0.8, n), 1, high).astype(np.int64)


def flat(batches):
    return sorted(i for b in batches for i in b)


# --------------------------------------------------------------------------- strategies
def sized_lists(elements, max_size):
    """Lists whose size is drawn uniformly (plain st.lists favours short ones)."""
    return st.integers(0, max_size).flatmap(
        lambda n: st.lists(elements, min_size=n, max_size=n))


lengths_st = st.one_of(
    sized_lists(st.integers(1, 40), 150),
    sized_lists(st.integers(1, 2**40), 60),     # several radix passes
    sized_lists(st.sampled_from([3, 7]), 150),  # many ties
)


@st.composite
def configs(draw):
    lengths = draw(lengths_st)
    mode = draw(st.sampled_from(["count", "tokens", "both"]))
    longest = max(lengths, default=1)
    batch_size = draw(st.integers(1, 12)) if mode != "tokens" else None
    max_tokens = None
    if mode != "count":
        max_tokens = draw(st.integers(max(1, longest // 2), 4 * longest + 5))
    num_replicas = draw(st.integers(1, 4))
    return dict(lengths=lengths, batch_size=batch_size, max_tokens=max_tokens,
                shuffle=draw(st.booleans()), seed=draw(st.integers(0, 2**32)),
                epoch=draw(st.integers(0, 5)), drop_last=draw(st.booleans()),
                bucket_size=draw(st.integers(1, 64)), num_replicas=num_replicas,
                rank=draw(st.integers(0, num_replicas - 1)))


def make(cfg, **kw):
    cfg = {**cfg, **kw}
    epoch = cfg.pop("epoch", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = BucketBatchSampler(cfg.pop("lengths"), drop_oversized=True, **cfg)
    s.set_epoch(epoch)
    return s


# --------------------------------------------------------------------------- reference equality
@SETTINGS
@given(configs())
def test_equals_python_reference(cfg):
    s = make(cfg)
    ref = reference_epoch(cfg["lengths"], max_tokens=cfg["max_tokens"],
                          batch_size=cfg["batch_size"], shuffle=cfg["shuffle"],
                          seed=cfg["seed"], epoch=cfg["epoch"], drop_last=cfg["drop_last"],
                          bucket_size=cfg["bucket_size"])
    assert s.epoch_batches() == ref
    mine = reference_split(ref, cfg["num_replicas"], cfg["rank"], cfg["drop_last"])
    assert list(s) == mine
    assert len(s) == len(mine)


@SETTINGS
@given(st.lists(st.integers(1, 2**40), max_size=100), st.integers(1, 50),
       st.integers(0, 2**40), st.integers(0, 30), st.booleans())
def test_kernel_equals_reference_cut(lengths, bucket, max_tokens, batch_size, sort):
    L = np.array(lengths, dtype=np.int64)
    order = np.random.default_rng(len(lengths)).permutation(len(L))
    mt = max_tokens if len(L) == 0 else max(max_tokens, int(L.max()))
    idx, off = build_epoch(order, L, int(L.max(initial=0)), bucket, batch_size,
                           mt if max_tokens else 0, sort)
    got = [idx[off[b]:off[b + 1]].tolist() for b in range(len(off) - 1)]
    ref = []
    for start in range(0, len(order), bucket):
        chunk = order[start:start + bucket].tolist()
        if sort:
            chunk = sorted(chunk, key=lambda i: -lengths[i])
        cur = []
        for i in chunk:
            g = cur + [i]
            if cur and ((batch_size and len(g) > batch_size) or
                        (max_tokens and len(g) * max(lengths[j] for j in g) > mt)):
                ref.append(cur)
                cur = [i]
            else:
                cur = g
        if cur:
            ref.append(cur)
    assert got == ref


# --------------------------------------------------------------------------- coverage and limits
@pytest.mark.parametrize("mode", ["count", "tokens", "both"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once_per_epoch(mode, shuffle):
    L = lognormal_lengths(5000, high=300)
    kw = {"count": dict(batch_size=32), "tokens": dict(max_tokens=2048),
          "both": dict(batch_size=32, max_tokens=2048)}[mode]
    s = BucketBatchSampler(L, shuffle=shuffle, seed=7, **kw)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert flat(batches) == list(range(len(L)))
        assert len(batches) == len(s)
        assert all(isinstance(i, int) for b in batches for i in b)


@SETTINGS
@given(configs())
def test_limits_never_exceeded(cfg):
    s = make(cfg)
    for b in s.epoch_batches():
        assert b
        if cfg["batch_size"] is not None:
            assert len(b) <= cfg["batch_size"]
        if cfg["max_tokens"] is not None:
            assert len(b) * max(cfg["lengths"][i] for i in b) <= cfg["max_tokens"]


@SETTINGS
@given(configs())
def test_whole_epoch_covers_kept_samples_once(cfg):
    cfg["drop_last"] = False
    s = make(cfg)
    kept = [i for i, n in enumerate(cfg["lengths"])
            if cfg["max_tokens"] is None or n <= cfg["max_tokens"]]
    assert flat(s.epoch_batches()) == kept


def test_batches_within_a_chunk_are_sorted_longest_first():
    L = [5, 1, 4, 2, 9, 3]
    s = BucketBatchSampler(L, batch_size=2, shuffle=False, bucket_size=3)
    assert s.epoch_batches() == [[0, 2], [1], [4, 5], [3]]


def test_ties_keep_epoch_order():
    s = BucketBatchSampler([2] * 10, batch_size=3, shuffle=False)
    assert s.epoch_batches() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_count_mode_batches_are_full_except_the_last():
    s = BucketBatchSampler(lognormal_lengths(10_000), batch_size=64, seed=1)
    sizes = sorted(len(b) for b in s)
    assert sizes[1:] == [64] * (len(sizes) - 1) and sizes[0] == 10_000 % 64


def test_default_bucket_size():
    L = np.full(1000, 10)
    assert BucketBatchSampler(L, batch_size=8).bucket_size == 800
    assert BucketBatchSampler(L, max_tokens=200).bucket_size == 2000
    # both: 100 x min(30, 200 // 10) = 2000, rounded up to a multiple of 30
    assert BucketBatchSampler(L, max_tokens=200, batch_size=30).bucket_size == 2010


def test_drop_last_drops_only_the_short_final_batch():
    L = lognormal_lengths(1003)
    s = BucketBatchSampler(L, batch_size=10, drop_last=True, seed=2)
    batches = list(s)
    assert len(batches) == len(s) == 100
    assert all(len(b) == 10 for b in batches)
    assert len(set(flat(batches))) == 1000


def test_drop_last_without_batch_size_keeps_every_sample():
    L = lognormal_lengths(1003)
    s = BucketBatchSampler(L, max_tokens=1024, drop_last=True)
    assert flat(s) == list(range(1003))


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_epoch_same_batches():
    L = lognormal_lengths(3000)
    a = BucketBatchSampler(L, max_tokens=4096, seed=11)
    b = BucketBatchSampler(L, max_tokens=4096, seed=11)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
    assert list(a) == list(a)


def test_different_epochs_and_seeds_give_different_orders():
    L = lognormal_lengths(3000)
    s = BucketBatchSampler(L, max_tokens=4096, seed=11)
    orders = []
    for epoch in range(4):
        s.set_epoch(epoch)
        orders.append(list(s))
    assert all(orders[i] != orders[j] for i in range(4) for j in range(i))
    assert list(BucketBatchSampler(L, max_tokens=4096, seed=12)) != orders[0]


def test_shuffle_false_is_the_same_every_epoch():
    L = lognormal_lengths(500)
    s = BucketBatchSampler(L, batch_size=16, shuffle=False)
    first = list(s)
    s.set_epoch(5)
    assert list(s) == first


# --------------------------------------------------------------------------- resumption
@pytest.mark.parametrize("num_replicas", [1, 3])
def test_load_state_dict_resumes_mid_epoch(num_replicas):
    L = lognormal_lengths(4000)
    kw = dict(max_tokens=4096, batch_size=40, seed=5, num_replicas=num_replicas, rank=0)
    s = BucketBatchSampler(L, **kw)
    s.set_epoch(2)
    full = list(s)
    it = iter(s)
    head = [next(it) for _ in range(7)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["seed"] == 5 and state["batches_yielded"] == 7
    t = BucketBatchSampler(L, **{**kw, "seed": 0})
    t.load_state_dict(state)
    assert len(t) == len(full) - 7
    assert head + list(t) == full
    assert list(t) == full                      # then full epochs
    t.set_epoch(3)
    s.set_epoch(3)
    assert list(t) == list(s)


def test_state_is_plain_and_round_trips_through_json():
    s = BucketBatchSampler([3, 1, 2, 5, 4], batch_size=2, seed=9)
    next(iter(s))
    state = json.loads(json.dumps(s.state_dict()))
    t = BucketBatchSampler([3, 1, 2, 5, 4], batch_size=2)
    t.load_state_dict(state)
    assert t.state_dict() == s.state_dict()


def test_state_dict_batches_consumed_overrides_the_count():
    L = lognormal_lengths(500)
    s = BucketBatchSampler(L, batch_size=10)
    full = list(s)
    t = BucketBatchSampler(L, batch_size=10)
    t.load_state_dict(s.state_dict(batches_consumed=30))
    assert list(t) == full[30:]


def test_set_epoch_to_another_epoch_cancels_the_resumption():
    L = lognormal_lengths(500)
    s = BucketBatchSampler(L, batch_size=10)
    it = iter(s)
    next(it)
    t = BucketBatchSampler(L, batch_size=10)
    t.load_state_dict(s.state_dict())
    t.set_epoch(0)                              # same epoch: still resuming
    assert len(t) == len(s) - 1
    t.set_epoch(1)
    s.set_epoch(1)
    assert list(t) == list(s)


def test_load_state_dict_rejects_another_configuration():
    s = BucketBatchSampler([1, 2, 3, 4], batch_size=2)
    with pytest.raises(ValueError, match="batch_size: saved 2, now 3"):
        BucketBatchSampler([1, 2, 3, 4], batch_size=3).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="dataset_size"):
        BucketBatchSampler([1, 2, 3], batch_size=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="missing"):
        s.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="only 2 batches"):
        s.load_state_dict({**s.state_dict(), "batches_yielded": 3})


class SamplerMachine(RuleBasedStateMachine):
    """Iterate, change epochs, save and restore at random points; compare with the
    reference epoch and a model of the position."""

    @initialize(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=60),
                seed=st.integers(0, 100), batch_size=st.integers(1, 5))
    def setup(self, lengths, seed, batch_size):
        self.kw = dict(lengths=lengths, batch_size=batch_size, max_tokens=40, seed=seed,
                       bucket_size=7, num_replicas=2, rank=1)
        self.sampler = make(self.kw)
        self.it = None
        self.epoch, self.pos, self.resume = 0, 0, None

    def expected(self):
        ref = reference_epoch(self.kw["lengths"], max_tokens=40,
                              batch_size=self.kw["batch_size"], seed=self.kw["seed"],
                              epoch=self.epoch, bucket_size=7)
        return reference_split(ref, 2, 1)

    @rule(k=st.integers(1, 4))
    def take(self, k):
        if self.it is None:
            self.it = iter(self.sampler)
            self.pos, self.resume = self.resume or 0, None
        got = [b for _, b in zip(range(k), self.it)]
        assert got == self.expected()[self.pos:self.pos + k]
        self.pos += len(got)

    @rule(epoch=st.integers(0, 2))
    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)
        self.it = None
        if epoch != self.epoch:
            self.epoch, self.pos, self.resume = epoch, 0, None

    @rule()
    def save_and_restore(self):
        state = self.sampler.state_dict()
        assert state["batches_yielded"] == self.pos and state["epoch"] == self.epoch
        self.sampler = make({**self.kw, "seed": 0})
        self.sampler.load_state_dict(state)
        self.it, self.resume = None, self.pos

    @invariant()
    def length_is_what_the_next_iteration_yields(self):
        if getattr(self, "it", 1) is None:
            assert len(self.sampler) == len(self.expected()) - (self.resume or 0)


TestSamplerMachine = SamplerMachine.TestCase
TestSamplerMachine.settings = settings(max_examples=40, stateful_step_count=20,
                                       deadline=None)


# --------------------------------------------------------------------------- oversized and errors
def test_oversized_sample_raises_naming_index_and_length():
    with pytest.raises(ValueError, match=r"sample 2 has length 9 > max_tokens=8 \(2 sample"):
        BucketBatchSampler([1, 2, 9, 3, 10], max_tokens=8)


def test_drop_oversized_warns_with_the_count_and_drops_them():
    with pytest.warns(UserWarning, match="dropping 2 of 5 samples"):
        s = BucketBatchSampler([1, 2, 9, 3, 10], max_tokens=8, drop_oversized=True)
    assert flat(s) == [0, 1, 3]
    assert s.num_samples == 3


def test_drop_oversized_without_oversized_samples_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BucketBatchSampler([1, 2, 3], max_tokens=8, drop_oversized=True)


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(), ValueError, "needs max_tokens, batch_size or both"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (dict(max_tokens=-1), ValueError, "max_tokens must be >= 1"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an int, got float"),
    (dict(batch_size=True), TypeError, "batch_size must be an int, got bool"),
    (dict(batch_size=2, bucket_size=0), ValueError, "bucket_size must be >= 1"),
    (dict(batch_size=2, seed=-1), ValueError, "seed must be >= 0"),
    (dict(batch_size=2, num_replicas=2, rank=2), ValueError, r"rank must be in \[0, "),
    (dict(batch_size=2, num_replicas=0, rank=0), ValueError, "num_replicas must be >= 1"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        BucketBatchSampler([1, 2, 3], **kwargs)


@pytest.mark.parametrize("lengths, exc, msg", [
    ([3, 0, 2], ValueError, r"lengths\[1\] = 0: every sample length must be >= 1"),
    (np.array([3, 4, -2]), ValueError, r"lengths\[2\] = -2"),
    ([1.5, 2.0], TypeError, "lengths must be integers, got dtype float64"),
    ([[1, 2]], ValueError, "one-dimensional"),
    (7, TypeError, "lengths must be a sequence"),
    (np.array([2**64 - 1], dtype=np.uint64), ValueError, "does not fit in int64"),
])
def test_bad_lengths(lengths, exc, msg):
    with pytest.raises(exc, match=msg):
        BucketBatchSampler(lengths, batch_size=2)


def test_set_epoch_rejects_negative():
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        BucketBatchSampler([1], batch_size=1).set_epoch(-1)


def test_kernel_rejects_out_of_range_input():
    L = np.array([1, 2, 3], dtype=np.int64)
    with pytest.raises(IndexError, match=r"order\[1\] = 5 is out of range"):
        build_epoch(np.array([0, 5]), L, 3, 4, 1, 0)
    with pytest.raises(ValueError, match=r"lengths\[2\] = 3 is out of range \[0, 2\]"):
        build_epoch(np.array([0, 2]), L, 2, 4, 1, 0)


# --------------------------------------------------------------------------- inputs and loader
def test_accepts_tensor_list_and_range_lengths():
    want = BucketBatchSampler(np.array([4, 2, 7, 1]), batch_size=2, seed=3).epoch_batches()
    for lengths in (torch.tensor([4, 2, 7, 1]), [4, 2, 7, 1], np.array([4, 2, 7, 1], np.int32)):
        assert BucketBatchSampler(lengths, batch_size=2, seed=3).epoch_batches() == want


def test_empty_dataset_gives_no_batches():
    s = BucketBatchSampler([], batch_size=4)
    assert list(s) == [] and len(s) == 0
    assert s.efficiency() == PaddingStats(0, 0, 0, 0, 1.0)


class _Tiny(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _as_list(batch):
    return [int(i) for i in batch]


def test_works_as_dataloader_batch_sampler():
    L = lognormal_lengths(300)
    s = BucketBatchSampler(L, max_tokens=1024, seed=4)
    loader = DataLoader(_Tiny(len(L)), batch_sampler=s)
    batches = [b.tolist() for b in loader]
    assert len(loader) == len(s) == len(batches)
    assert batches == list(s)


# --------------------------------------------------------------------------- efficiency
def test_efficiency_matches_padding_efficiency_of_the_epoch():
    L = lognormal_lengths(20_000)
    s = BucketBatchSampler(L, max_tokens=4096, seed=1)
    stats = s.efficiency()
    assert stats == padding_efficiency(L, s.epoch_batches())
    assert stats.real_tokens == int(L.sum()) and stats.samples == len(L)
    rnd = s.efficiency(bucketed=False)
    assert rnd.real_tokens == stats.real_tokens
    assert stats.efficiency > 0.9 > 0.5 > rnd.efficiency


def test_padding_efficiency_by_hand():
    assert padding_efficiency([1, 3, 2, 2], [[0, 1], [2, 3]]) == PaddingStats(
        2, 4, 8, 10, 0.8)
    assert padding_efficiency([1, 3], []) == PaddingStats(0, 0, 0, 0, 1.0)
    with pytest.raises(IndexError):
        padding_efficiency([1, 3], [[0, 2]])


# --------------------------------------------------------------------------- distributed (simulated)
@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_equal_counts_and_disjoint_samples(world, drop_last):
    L = lognormal_lengths(997)
    kw = dict(max_tokens=2048, seed=13, num_replicas=world, drop_last=drop_last)
    ranks = [BucketBatchSampler(L, rank=r, **kw) for r in range(world)]
    epoch = ranks[0].epoch_batches()
    nb = len(epoch)
    per_rank = [list(s) for s in ranks]
    counts = {len(b) for b in per_rank}
    assert counts == {len(ranks[0])}
    assert len(ranks[0]) == (nb // world if drop_last else -(-nb // world))
    ids = [tuple(b) for bs in per_rank for b in bs]
    if drop_last:
        assert len(set(ids)) == len(ids)          # no sample seen twice
        assert len(ids) == nb - nb % world
    else:
        assert flat(per_rank[r][k] for r in range(world)
                    for k in range(len(per_rank[r]))
                    if k * world + r < nb) == list(range(len(L)))
        padding = [per_rank[r][k] for r in range(world) for k in range(len(per_rank[r]))
                   if k * world + r >= nb]
        assert padding == epoch[:len(padding)]  # repeats come from the epoch's start


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dist_worker(rank, world, port, lengths, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sampler = BucketBatchSampler(lengths, max_tokens=24, seed=21)  # ranks from dist
        loader = DataLoader(_Tiny(len(lengths)), batch_sampler=sampler,
                            collate_fn=_as_list)
        seen = {"rank": sampler.rank, "world": sampler.num_replicas, "epochs": []}
        for epoch in range(2):
            sampler.set_epoch(epoch)
            seen["epochs"].append(list(loader))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(seen, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run_covers_the_dataset(tmp_path):
    lengths = lognormal_lengths(41, high=20).tolist()
    mp.spawn(_dist_worker, args=(2, _free_port(), lengths, str(tmp_path)), nprocs=2)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(s["rank"], s["world"]) for s in seen] == [(0, 2), (1, 2)]
    for epoch in range(2):
        a, b = (s["epochs"][epoch] for s in seen)
        assert len(a) == len(b)
        assert set(flat(a)) | set(flat(b)) == set(range(len(lengths)))
        ref = reference_epoch(lengths, max_tokens=24, seed=21, epoch=epoch,
                              bucket_size=BucketBatchSampler(lengths, max_tokens=24).bucket_size)
        assert a == reference_split(ref, 2, 0) and b == reference_split(ref, 2, 1)
    assert seen[0]["epochs"][0] != seen[0]["epochs"][1]


# --------------------------------------------------------------------------- huge values
def test_padding_efficiency_sums_exactly_past_int64():
    big = 2**62
    stats = padding_efficiency([big] * 4, [[0, 1], [2, 3]])
    assert stats == PaddingStats(2, 4, 4 * big, 4 * big, 1.0)
    assert padding_efficiency([big, 1, big, 1], [[0, 1, 2, 3]]).padded_tokens == 4 * big


def test_efficiency_sums_exactly_past_int64():
    big = 2**62
    s = BucketBatchSampler([big] * 4 + [1], batch_size=2, seed=0)
    for bucketed in (True, False):
        stats = s.efficiency(bucketed=bucketed)
        assert stats.real_tokens == 4 * big + 1 and stats.samples == 5
        assert stats.padded_tokens >= stats.real_tokens


@pytest.mark.parametrize("kwargs", [
    dict(max_tokens=2**63 - 1), dict(max_tokens=2**80), dict(batch_size=2**63),
    dict(batch_size=2**70, max_tokens=2**70), dict(batch_size=2, bucket_size=2**64),
    dict(batch_size=2**40, bucket_size=2**40),
])
def test_huge_limits_behave_like_no_limit(kwargs):
    import sys
    kwargs.setdefault("max_tokens", None)
    if kwargs["max_tokens"] is None and kwargs.get("batch_size") is None:
        kwargs["max_tokens"] = sys.maxsize
    L = [5, 1, 4, 2, 3]
    s = BucketBatchSampler(L, shuffle=False, **kwargs)
    batches = list(s)
    assert len(s) == len(batches) and flat(batches) == [0, 1, 2, 3, 4]
    limit = kwargs.get("batch_size") or 2**63
    want = 1 if limit >= len(L) else -(-len(L) // limit)
    assert len(batches) == want
    assert s.efficiency().samples == len(L)


def test_max_tokens_sys_maxsize():
    import sys
    s = BucketBatchSampler([5, 1, 4], max_tokens=sys.maxsize)
    assert len(s) == 1 and sorted(next(iter(s))) == [0, 1, 2]


def test_huge_num_replicas_rank_seed_and_epoch():
    L = [5, 1, 4, 2, 3]
    world = 2**70
    a = BucketBatchSampler(L, batch_size=2, num_replicas=world, rank=world - 1, seed=2**100)
    a.set_epoch(2**80)
    batches = list(a)
    assert len(a) == len(batches) == 1 and batches[0] in a.epoch_batches()
    b = BucketBatchSampler(L, batch_size=2, num_replicas=world, rank=0, drop_last=True)
    assert len(b) == 0 and list(b) == []
    state = a.state_dict()
    c = BucketBatchSampler(L, batch_size=2, num_replicas=world, rank=3)
    c.load_state_dict(state)
    assert len(c) == 0


def test_lengths_near_int64_max():
    top = 2**63 - 1
    s = BucketBatchSampler([top, 1, top - 1], batch_size=2, shuffle=False)
    assert s.epoch_batches() == [[0, 2], [1]]
    assert s.efficiency().real_tokens == 2 * top


@pytest.mark.parametrize("lengths", [[1, 2**63], [2**64 + 5, 1], [1, 2, -2**64]])
def test_python_int_lengths_outside_int64_name_the_index(lengths):
    i = next(j for j, v in enumerate(lengths) if not -2**63 <= v < 2**63)
    with pytest.raises(ValueError, match=rf"lengths\[{i}\] = {lengths[i]} does not fit in int64"):
        BucketBatchSampler(lengths, batch_size=2)


@pytest.mark.parametrize("batches, exc, msg", [
    ([[0.5, 1]], TypeError, r"batch 0 holds float64 values; sample indices must be ints"),
    ([[0], [True, False]], TypeError, r"batch 1 holds bool values"),
    ([[0], [2**64]], IndexError, r"batch 1: index 18446744073709551616 is out of range"),
    ([[0], [1, -1]], IndexError, r"batch 1: index -1 is out of range for 2 lengths"),
])
def test_padding_efficiency_rejects_bad_indices(batches, exc, msg):
    with pytest.raises(exc, match=msg):
        padding_efficiency([1, 3], batches)
