"""Length bucketing for streaming datasets: token-budget batches from any iterable.

:class:`BucketStream` is a :class:`torch.utils.data.IterableDataset` that reads samples
from an iterable (a generator, a list of files, a Hugging Face ``IterableDataset``),
keeps at most ``buffer_size`` of them, groups them by length into buckets and yields
batches under the same ``max_tokens`` / ``batch_size`` rules as
:class:`fastcollate.sampler.BucketBatchSampler`, collated by any ``collate_fn``. Use it
with ``DataLoader(stream, batch_size=None)``: the stream batches, the loader only moves
batches. The bucket bookkeeping (bucket assignment, choosing a bucket, cutting a batch)
is the Cython class :class:`fastcollate._stream.BucketBuffer`; Python only moves
samples. :func:`bucket_lengths` runs the same algorithm over a list of lengths, to
measure padding before training. :func:`stop_together` keeps DDP ranks in step.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _sampler, _stream
from .sampler import PaddingStats, _check_int, distributed_defaults

__all__ = ["BucketStream", "bucket_lengths", "estimate_boundaries", "stop_together"]

_STATE_VERSION = 1


def estimate_boundaries(lengths: Any, num_buckets: int) -> List[int]:
    """Bucket boundaries that split ``lengths`` into buckets of about equal tokens.

    Boundary ``j`` is the smallest length at which the running token sum of the sorted
    lengths reaches ``j / num_buckets`` of the total; duplicates, and boundaries not
    below the largest length, are left out (so there may be fewer buckets). Bucket
    ``k`` holds lengths in ``(b[k - 1], b[k]]``.

    Examples
    --------
    >>> estimate_boundaries([1, 1, 2, 2, 4, 4, 8, 8], 3)
    [4]
    """
    num_buckets = _check_int("num_buckets", num_buckets, 1)
    s = np.sort(np.asarray(lengths, dtype=np.int64).reshape(-1))
    if s.size == 0 or num_buckets == 1:
        return []
    cum = np.cumsum(s, dtype=np.float64)
    targets = cum[-1] * np.arange(1, num_buckets) / num_buckets
    q = s[np.minimum(np.searchsorted(cum, targets), s.size - 1)]
    return [int(v) for v in np.unique(q) if v < s[-1]]


class _LengthOfField:
    """``len(sample[key])``; a class, not a lambda, so that spawned workers can
    unpickle it."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __call__(self, sample: Any) -> int:
        return len(sample[self.key])


def _length_of(length: Any) -> Callable[[Any], Any]:
    if length is None:
        return len
    if callable(length):
        return length
    if isinstance(length, (str, int)) and not isinstance(length, bool):
        return _LengthOfField(length)
    raise TypeError("length must be None (len(sample)), a key or index (len(sample[key])) "
                    f"or a callable, got {type(length).__name__}")


def _is_hf_iterable(source: Any) -> bool:
    return (type(source).__module__.startswith("datasets.")
            and hasattr(source, "num_shards") and hasattr(source, "set_epoch"))


_NAMED_ERRORS = (TypeError, ValueError, KeyError, IndexError, OverflowError)


class _Config:
    """Validated options shared by :class:`BucketStream` and :func:`bucket_lengths`."""

    def __init__(self, max_tokens, batch_size, buffer_size, num_buckets, boundaries,
                 seed, drop_last, drop_oversized):
        if max_tokens is None and batch_size is None:
            raise ValueError("bucketing needs max_tokens, batch_size or both")
        self.max_tokens = None if max_tokens is None else _check_int("max_tokens", max_tokens, 1)
        self.batch_size = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        self.buffer_size = _check_int("buffer_size", buffer_size, 1)
        self.num_buckets = _check_int("num_buckets", num_buckets, 1)
        if boundaries is not None:
            b = [_check_int(f"boundaries[{i}]", v, 1) for i, v in enumerate(boundaries)]
            if any(x >= y for x, y in zip(b, b[1:])):
                raise ValueError(f"boundaries must be strictly increasing, got {b}")
            boundaries = b
        self.boundaries = boundaries
        self.seed = _check_int("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.drop_oversized = bool(drop_oversized)
        # the kernel's limits are int64; larger ones act as no limit (as in the sampler)
        self._bs = min(self.batch_size or 0, self.buffer_size)
        self._mt = min(self.max_tokens or 0, 2**62)

    def state(self, epoch: int, consumer: int) -> int:
        return int(np.random.default_rng([self.seed, epoch, consumer]).integers(2**63))

    def as_dict(self) -> Dict[str, Any]:
        return {"max_tokens": self.max_tokens, "batch_size": self.batch_size,
                "buffer_size": self.buffer_size, "num_buckets": self.num_buckets,
                "boundaries": self.boundaries, "drop_last": self.drop_last,
                "drop_oversized": self.drop_oversized}


class _Run:
    """One consumer's pass over its samples: the buffer and its statistics."""

    def __init__(self, cfg: _Config, epoch: int, consumer: int) -> None:
        self.cfg = cfg
        self.buf = _stream.BucketBuffer(cfg.buffer_size, cfg._bs, cfg._mt,
                                        cfg.state(epoch, consumer))
        if cfg.boundaries is not None:
            self.buf.set_boundaries(cfg.boundaries)
        self.bucketed = cfg.boundaries is not None
        self.slots: List[Any] = [None] * cfg.buffer_size
        self.batches = self.samples = self.real = self.padded = 0
        self.dropped = 0
        self.max_buffered = 0

    def batches_of(self, items: Iterable[Any], get_length: Callable[[Any], Any],
                   where: Callable[[int], str]) -> Iterator[List[Any]]:
        """Batches of samples (lists) from ``items``, in yield order."""
        cfg, buf, slots = self.cfg, self.buf, self.slots
        cap, mt = cfg.buffer_size, cfg.max_tokens
        push, pop = buf.push, buf.pop_batch
        for i, sample in enumerate(items):
            try:
                s = push(get_length(sample))
            except (TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
                if type(e) not in _NAMED_ERRORS:
                    raise                    # a subclass may take other arguments
                raise type(e)(f"{where(i)}: {e}") from e
            if s < 0:                        # longer than max_tokens
                n = get_length(sample)
                if n <= mt:                  # only above the kernel's 2**62 cap
                    raise OverflowError(f"{where(i)}: length {n} does not fit the "
                                        "buffer's int64 token sums")
                if not cfg.drop_oversized:
                    raise ValueError(f"{where(i)} has length {n} > max_tokens={mt}; pass "
                                     "drop_oversized=True to leave such samples out")
                if not self.dropped:
                    warnings.warn(f"BucketStream: dropping samples longer than "
                                  f"max_tokens={mt} (first: {where(i)}, length {n}); "
                                  "the count is in .dropped", UserWarning, stacklevel=3)
                self.dropped += 1
                continue
            slots[s] = sample
            if buf.size == cap:
                self.max_buffered = cap
                if not self.bucketed:
                    buf.set_boundaries(estimate_boundaries(buf.lengths(), cfg.num_buckets))
                    self.bucketed = True
                yield self._take(pop().tolist())
        yield from self._flush()

    def _take(self, sl: List[int]) -> List[Any]:
        slots = self.slots
        batch = [slots[s] for s in sl]   # the slots are refilled next
        self.batches += 1
        self.samples += len(sl)
        self.real += self.buf.last_real
        self.padded += self.buf.last_padded
        return batch

    def _flush(self) -> Iterator[List[Any]]:
        """The rest of the buffer: sorted longest first, cut, batch order shuffled."""
        buf, cfg = self.buf, self.cfg
        self.max_buffered = max(self.max_buffered, buf.size)
        if not buf.size:
            return
        order = buf.slots()
        lens = buf.slot_lengths()
        idx, off = _sampler.build_epoch(order, lens, int(lens[order].max()), len(order),
                                        cfg._bs, cfg._mt)
        nb = len(off) - 1
        if (cfg.drop_last and cfg.batch_size is not None and nb
                and off[nb] - off[nb - 1] < cfg.batch_size):
            nb -= 1
        perm = buf.shuffle(nb)
        buf.clear()
        for b in perm.tolist():
            sl = idx[off[b]:off[b + 1]]
            self.batches += 1
            self.samples += len(sl)
            k = lens[sl]
            self.real += int(k.sum())
            self.padded += len(sl) * int(k.max())
            yield [self.slots[s] for s in sl.tolist()]
        self.slots[:] = [None] * len(self.slots)

    def stats(self) -> PaddingStats:
        eff = self.real / self.padded if self.padded else 1.0
        return PaddingStats(self.batches, self.samples, self.real, self.padded, eff)


def bucket_lengths(lengths: Any, *, max_tokens: Optional[int] = None,
                   batch_size: Optional[int] = None, buffer_size: int = 10_000,
                   num_buckets: int = 16, boundaries: Optional[Sequence[int]] = None,
                   seed: int = 0, epoch: int = 0, drop_last: bool = False,
                   drop_oversized: bool = False) -> List[List[int]]:
    """The batches :class:`BucketStream` would yield for a stream of these lengths.

    One consumer (no sharding); the batches hold positions in ``lengths``. Use it with
    :func:`fastcollate.padding_efficiency` to choose ``buffer_size`` and
    ``num_buckets`` before training.

    Examples
    --------
    >>> from fastcollate import padding_efficiency
    >>> L = [5, 1, 4, 2, 3, 6, 2, 5]
    >>> batches = bucket_lengths(L, max_tokens=10, buffer_size=4)
    >>> sorted(i for b in batches for i in b)
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> all(len(b) * max(L[i] for i in b) <= 10 for b in batches)
    True
    """
    cfg = _Config(max_tokens, batch_size, buffer_size, num_buckets, boundaries, seed,
                  drop_last, drop_oversized)
    epoch = _check_int("epoch", epoch, 0)
    lens = [int(v) for v in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    run = _Run(cfg, epoch, 0)
    return list(run.batches_of(range(len(lens)), lens.__getitem__,
                               lambda i: f"sample {i}"))


class BucketStream(IterableDataset):
    """Batches of samples of similar length from a stream, for
    ``DataLoader(stream, batch_size=None)``.

    Reads samples one by one into a buffer of ``buffer_size`` slots. The first time the
    buffer is full, bucket boundaries are estimated from the lengths in it (buckets of
    about equal tokens, :func:`estimate_boundaries`), unless ``boundaries`` are given.
    From then on, every time the buffer is full one batch leaves it: a bucket is drawn
    among the *ready* ones (holding at least a full batch at their longest length),
    with probability proportional to the tokens it holds (if none is ready: the bucket
    holding the most tokens); the batch is a run of the bucket's samples sorted by
    length, grown around the bucket's oldest sample, first towards shorter samples,
    then towards longer ones, while the limits hold. When the stream ends, the rest of
    the buffer is sorted (longest first), cut greedily and yielded in shuffled order.

    Parameters
    ----------
    source : iterable, callable, sequence of shards or Hugging Face IterableDataset
        Where samples come from. ``iter(source)`` is called once per epoch (a
        zero-argument callable is called instead, e.g. a generator function). With
        ``open_shard``, ``source`` is a sequence of shards (file names, URLs) and
        ``open_shard(shard)`` returns the iterable of one shard's samples.
    max_tokens, batch_size : int, optional
        Limits, as :class:`~fastcollate.sampler.BucketBatchSampler`:
        ``len(batch) * max(lengths) <= max_tokens``, ``len(batch) <= batch_size``.
    length : None, str, int or callable
        A sample's length: ``len(sample)`` (None), ``len(sample[key])`` (a key or
        index, e.g. ``"input_ids"``) or ``length(sample)``. Must be an int >= 1.
    collate_fn : callable, optional
        Applied to every batch (a list of samples), e.g. ``PackedCollate()``. None
        yields the lists.
    buffer_size : int, default 10000
        Samples held at most (the memory bound; also the sample the boundaries are
        estimated from).
    num_buckets : int, default 16
        Buckets to estimate (fewer if lengths repeat).
    boundaries : sequence of int, optional
        Strictly increasing bucket boundaries instead of the estimate.
    seed : int, default 0
        The generator of epoch ``e`` on consumer ``c`` is seeded from
        ``(seed, e, c)``; also the shard order (``shuffle``) from ``(seed, e)``.
    drop_last : bool, default False
        With ``batch_size``: drop the final batch of the end-of-stream flush (the
        shortest samples) if it holds fewer than ``batch_size`` samples.
    drop_oversized : bool, default False
        Samples longer than ``max_tokens`` raise ``ValueError`` unless this is true;
        then they are skipped (one warning; the count is in :attr:`dropped`).
    open_shard : callable, optional
        Makes ``source`` a sequence of shards, split between consumers by shard.
    shuffle : bool, default True
        Shuffle the shard order every epoch (with ``open_shard``).
    num_replicas, rank : int, optional
        DDP world size and rank; default from :mod:`torch.distributed` when it is
        initialized, else 1 and 0.

    Notes
    -----
    Sharding. Consumer ``c = rank * num_workers + worker_id`` of
    ``C = num_replicas * num_workers`` (``get_worker_info()``). With ``open_shard``,
    consumer ``c`` reads shards ``c, c + C, ...`` of the epoch's shard order (nothing is
    read twice; consumers beyond the number of shards get nothing). A Hugging Face
    ``datasets.IterableDataset`` is split by ``datasets`` itself:
    ``split_dataset_by_node`` for the ranks (by shard when ``num_shards`` is a multiple
    of the world size, else by example) and its own per-worker split by shard. Any
    other iterable is split by skipping: every consumer reads the whole stream and
    keeps samples ``c, c + C, ...`` of it. Each sample is yielded by exactly one
    consumer; ranks may yield different numbers of batches, so wrap the loader in
    :func:`stop_together` under DDP.

    Examples
    --------
    >>> samples = [list(range(n)) for n in (5, 1, 4, 2, 3, 6, 2, 5)]
    >>> stream = BucketStream(samples, max_tokens=10, buffer_size=4, seed=0)
    >>> batches = list(stream)
    >>> sorted(len(s) for b in batches for s in b)
    [1, 2, 2, 3, 4, 5, 5, 6]
    >>> all(len(b) * max(map(len, b)) <= 10 for b in batches)
    True
    """

    def __init__(self, source: Any, *, max_tokens: Optional[int] = None,
                 batch_size: Optional[int] = None, length: Any = None,
                 collate_fn: Optional[Callable[[List[Any]], Any]] = None,
                 buffer_size: int = 10_000, num_buckets: int = 16,
                 boundaries: Optional[Sequence[int]] = None, seed: int = 0,
                 drop_last: bool = False, drop_oversized: bool = False,
                 open_shard: Optional[Callable[[Any], Iterable[Any]]] = None,
                 shuffle: bool = True, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None) -> None:
        super().__init__()
        self._cfg = _Config(max_tokens, batch_size, buffer_size, num_buckets, boundaries,
                            seed, drop_last, drop_oversized)
        if open_shard is not None:
            if not callable(open_shard):
                raise TypeError(f"open_shard must be callable, got {type(open_shard).__name__}")
            if isinstance(source, (str, bytes)) or not isinstance(source, Sequence):
                raise TypeError("with open_shard, source must be a sequence of shards, got "
                                f"{type(source).__name__}")
        elif not (callable(source) or hasattr(source, "__iter__")):
            raise TypeError("source must be an iterable or a callable returning one, got "
                            f"{type(source).__name__}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        self.source = source
        self.open_shard = open_shard
        self.collate_fn = collate_fn
        self.shuffle = bool(shuffle)
        self._get_length = _length_of(length)
        num_replicas, rank = distributed_defaults(num_replicas, rank)
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={self.num_replicas}), "
                             f"got {self.rank}")
        self.epoch = 0
        self._resume: Optional[int] = None
        self._yielded = 0
        self._run: Optional[_Run] = None
        self._consumer: Optional[tuple] = None   # (c, C) of the current or saved pass

    # ------------------------------------------------------------------ options
    @property
    def max_tokens(self) -> Optional[int]:
        return self._cfg.max_tokens

    @property
    def batch_size(self) -> Optional[int]:
        return self._cfg.batch_size

    @property
    def buffer_size(self) -> int:
        return self._cfg.buffer_size

    @property
    def seed(self) -> int:
        return self._cfg.seed

    @property
    def dropped(self) -> int:
        """Oversized samples skipped so far in the current pass (``drop_oversized``)."""
        return self._run.dropped if self._run is not None else 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (call it in the main process before
        creating the loader's iterator; with ``persistent_workers=True`` workers keep
        the epoch they started with). A pending resumption is kept only for its
        epoch."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._resume = None
            self._yielded = 0
        self.epoch = epoch

    # ------------------------------------------------------------------ sharding
    def _consumer_index(self) -> tuple:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self.rank * workers + worker, self.num_replicas * workers

    def _samples(self, c: int, C: int) -> tuple:
        """This consumer's samples, and a function naming sample ``i`` of them."""
        src = self.source
        if self.open_shard is not None:
            n = len(src)
            order = (np.random.default_rng([self.seed, self.epoch]).permutation(n)
                     if self.shuffle else np.arange(n))
            mine = order[c::C].tolist()
            items = itertools.chain.from_iterable(self.open_shard(src[k]) for k in mine)
            return items, lambda i: f"sample {i} of consumer {c}'s shards"
        if _is_hf_iterable(src):
            if self.num_replicas > 1:
                from datasets.distributed import split_dataset_by_node
                src = split_dataset_by_node(src, rank=self.rank, world_size=self.num_replicas)
            src.set_epoch(self.epoch)
            return iter(src), lambda i: f"sample {i} of rank {self.rank}'s dataset split"
        it = src() if callable(src) and not hasattr(src, "__iter__") else iter(src)
        if C > 1:
            it = itertools.islice(it, c, None, C)
        return it, (lambda i: f"stream sample {c + i * C}")

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        c, C = self._consumer_index()
        skip = self._resume or 0
        saved = self._consumer
        if self._resume is not None and saved is not None and saved != (c, C):
            raise ValueError(f"the state was saved by consumer {saved[0]} of "
                             f"{saved[1]}, this is consumer {c} of {C} "
                             "(same num_workers and world size needed to resume)")
        self._resume = None
        self._consumer = (c, C)
        run = self._run = _Run(self._cfg, self.epoch, c)
        items, where = self._samples(c, C)
        self._yielded = 0
        collate = self.collate_fn
        for batch in run.batches_of(items, self._get_length, where):
            self._yielded += 1
            if self._yielded <= skip:
                continue       # resuming: replayed, not collated
            yield collate(batch) if collate is not None else batch

    def efficiency(self) -> PaddingStats:
        """Padding cost of the batches this object has produced in the current (or
        last) pass in this process, resumed batches included. In DataLoader workers
        each worker holds its own copy: measure with :func:`bucket_lengths` then.

        Examples
        --------
        >>> s = BucketStream([[0] * n for n in (3, 1, 3, 2, 2, 1, 4, 1)], max_tokens=6,
        ...                  buffer_size=4)
        >>> [[len(x) for x in b] for b in s]
        [[3, 3], [2, 2], [4], [1, 1, 1]]
        >>> s.efficiency()
        PaddingStats(batches=4, samples=8, real_tokens=17, padded_tokens=17, efficiency=1.0)
        """
        return self._run.stats() if self._run is not None else PaddingStats(0, 0, 0, 0, 1.0)

    # ------------------------------------------------------------------ state
    def state_dict(self, batches_consumed: Optional[int] = None) -> Dict[str, Any]:
        """Position in the epoch: plain ints, bools, lists and ``None``.

        Resumption replays: the next iteration after :meth:`load_state_dict` reads the
        consumer's stream from its start again and skips (without collating) the
        batches already yielded, so it neither repeats nor skips a sample, provided
        the source yields the same samples in the same order again. Inside
        ``torchdata``'s ``StatefulDataLoader`` this is called in each worker.

        Parameters
        ----------
        batches_consumed : int, optional
            Batches the training loop consumed (default: batches yielded so far).
        """
        done = self._yielded if batches_consumed is None else _check_int(
            "batches_consumed", batches_consumed, 0)
        c, C = self._consumer if self._consumer is not None else self._consumer_index()
        return {"version": _STATE_VERSION, "epoch": self.epoch, "seed": self.seed,
                "batches_yielded": done, "consumer": c, "consumers": C,
                "num_replicas": self.num_replicas, **self._cfg.as_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from ``state`` on the next iteration (same configuration, world
        size and number of workers)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = [k for k in ("epoch", "seed", "batches_yielded", "consumer", "consumers")
                   if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state['version']}")
        now = {"num_replicas": self.num_replicas, **self._cfg.as_dict()}
        mismatch = [f"{k}: saved {state[k]!r}, now {v!r}" for k, v in now.items()
                    if k in state and state[k] != v]
        if mismatch:
            raise ValueError("state was saved with another configuration (" +
                             "; ".join(mismatch) + ")")
        self.epoch = _check_int("epoch", state["epoch"], 0)
        self._cfg.seed = _check_int("seed", state["seed"], 0)
        self._resume = self._yielded = _check_int("batches_yielded",
                                                  state["batches_yielded"], 0)
        self._consumer = (_check_int("consumer", state["consumer"], 0),
                          _check_int("consumers", state["consumers"], 1))

    def __repr__(self) -> str:
        cfg = self._cfg
        return (f"{type(self).__name__}(max_tokens={cfg.max_tokens}, "
                f"batch_size={cfg.batch_size}, buffer_size={cfg.buffer_size}, "
                f"num_buckets={cfg.num_buckets}, seed={cfg.seed}, epoch={self.epoch}, "
                f"num_replicas={self.num_replicas}, rank={self.rank})")


def stop_together(iterable: Iterable[Any], group: Any = None,
                  device: Any = None) -> Iterator[Any]:
    """Yield from ``iterable`` until it is exhausted on *any* DDP rank.

    Every step all ranks agree (one ``all_reduce`` of one int, ``MIN``) on whether each
    has a next item, so no rank waits in a collective for a rank that has stopped. The
    items the other ranks still had are not yielded this epoch. Without an initialized
    process group it yields everything.

    Parameters
    ----------
    group : ProcessGroup, optional
        Default: the world.
    device : torch.device or str, optional
        Where the flag tensor lives: default ``"cuda"`` for the NCCL backend, else
        ``"cpu"``.

    Examples
    --------
    >>> list(stop_together(iter([1, 2, 3])))     # no process group: everything
    [1, 2, 3]
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        yield from iterable
        return
    if device is None:
        device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
    it = iter(iterable)
    flag = torch.zeros(1, dtype=torch.int64, device=device)
    while True:
        try:
            item = next(it)
            have = 1
        except StopIteration:
            item, have = None, 0
        flag.fill_(have)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
        if not int(flag.item()):
            return
        yield item
