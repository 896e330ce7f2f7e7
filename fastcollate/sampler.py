"""Length-bucketing batch sampler: batches of similar lengths, little padding.

:class:`BucketBatchSampler` is a ``batch_sampler`` for :class:`torch.utils.data.DataLoader`.
Each epoch it permutes the samples, sorts chunks of ``bucket_size`` of them by length,
cuts each sorted chunk greedily into batches under a sample count and/or a padded-token
budget, and shuffles the batch order. The epoch is built by one Cython kernel
(:func:`fastcollate._sampler.build_epoch`) into a flat index array plus batch offsets;
Python only slices it while iterating.

:func:`padding_efficiency` measures real / padded tokens of any list of batches, for
comparison with random batching.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping
from typing import (Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np
import torch
from torch.utils.data import Sampler

from . import _sampler

__all__ = ["BucketBatchSampler", "PaddingStats", "padding_efficiency", "column_lengths"]

_INT64_MAX = np.iinfo(np.int64).max
_STATE_VERSION = 1


class PaddingStats(NamedTuple):
    """Padding cost of a set of batches.

    Attributes
    ----------
    batches : int
        Number of batches.
    samples : int
        Number of samples in them.
    real_tokens : int
        Sum of the sample lengths (exact: Python ints, never wrapping at int64).
    padded_tokens : int
        Sum over batches of ``len(batch) * max(length in batch)``: the size of the
        padded tensors.
    efficiency : float
        ``real_tokens / padded_tokens`` (1.0 means no padding; 1.0 for no batches).
    """

    batches: int
    samples: int
    real_tokens: int
    padded_tokens: int
    efficiency: float


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _as_lengths(lengths: Any) -> np.ndarray:
    """Normalize ``lengths`` to a C-contiguous int64 array of values >= 1."""
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    elif not isinstance(lengths, np.ndarray):
        if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__len__"):
            raise TypeError("lengths must be a sequence, NumPy array or tensor of ints, "
                            f"got {type(lengths).__name__}")
        values = lengths
        try:
            lengths = np.asarray(values)
        except (ValueError, OverflowError) as e:
            raise TypeError(f"lengths must be a flat sequence of ints: {e}") from e
        if lengths.size == 0:
            lengths = lengths.astype(np.int64)
        elif lengths.ndim == 1 and lengths.dtype.kind in "fO":
            # NumPy stores Python ints outside int64 as float64 or objects: name them
            for i, v in enumerate(values):
                if (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                        and not -_INT64_MAX - 1 <= v <= _INT64_MAX):
                    raise ValueError(f"lengths[{i}] = {v} does not fit in int64")
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {lengths.shape}")
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.size:
        bad = np.flatnonzero(lengths < 1)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"lengths[{i}] = {lengths[i]}: every sample length must be "
                             f">= 1 ({bad.size} sample(s) are not)")
        if lengths.dtype == np.uint64 and lengths.max() > _INT64_MAX:
            i = int(np.argmax(lengths))
            raise ValueError(f"lengths[{i}] = {lengths[i]} does not fit in int64")
    return np.ascontiguousarray(lengths, dtype=np.int64)


def _stats(lengths: np.ndarray, idx: np.ndarray, off: np.ndarray) -> PaddingStats:
    nb = len(off) - 1
    if nb <= 0:
        return PaddingStats(0, 0, 0, 0, 1.0)
    flat = lengths[idx]
    sizes = np.diff(off)
    maxes = np.maximum.reduceat(flat, off[:-1])
    if len(flat) * int(maxes.max()) <= _INT64_MAX:   # no int64 sum can wrap
        real = int(flat.sum())
        padded = int((sizes * maxes).sum())
    else:                                            # exact, in Python ints
        real = sum(flat.tolist())
        padded = sum(map(operator.mul, sizes.tolist(), maxes.tolist()))
    return PaddingStats(nb, int(len(idx)), real, padded, real / padded)


def padding_efficiency(lengths: Any, batches: Iterable[Sequence[int]]) -> PaddingStats:
    """Real and padded token counts of ``batches`` (any batching, e.g. random).

    Parameters
    ----------
    lengths : sequence, ndarray or tensor of int
        Per-sample lengths (>= 1).
    batches : iterable of sequences of int
        Batches of sample indices, e.g. a list of lists or a batch sampler.

    Returns
    -------
    PaddingStats
        ``padded_tokens`` is ``sum(len(b) * max(lengths[b]))`` over non-empty batches.

    Examples
    --------
    >>> padding_efficiency([1, 3, 2, 2], [[0, 1], [2, 3]])
    PaddingStats(batches=2, samples=4, real_tokens=8, padded_tokens=10, efficiency=0.8)
    """
    lens = _as_lengths(lengths)
    n = len(lens)
    numbered = []
    for j, b in enumerate(batches):
        p = np.asarray(b).reshape(-1)
        if not p.size:
            continue
        if p.dtype.kind not in "iu":
            if p.dtype.kind in "fO" and not isinstance(b, np.ndarray):
                # NumPy stores Python ints outside int64 as floats or objects
                for v in p.tolist() if p.dtype.kind == "O" else b:
                    if (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                            and not 0 <= v < n):
                        raise IndexError(f"batch {j}: index {v} is out of range for "
                                         f"{n} lengths")
            raise TypeError(f"batch {j} holds {p.dtype} values; sample indices must be "
                            "ints")
        if p.dtype == np.uint64 and int(p.max()) >= n:
            raise IndexError(f"batch {j}: index {int(p.max())} is out of range for {n} "
                             "lengths")
        numbered.append((j, p.astype(np.int64, copy=False)))
    if not numbered:
        return PaddingStats(0, 0, 0, 0, 1.0)
    parts = [p for _, p in numbered]
    idx = np.concatenate(parts)
    if idx.min() < 0 or idx.max() >= n:
        j, p = next((j, p) for j, p in numbered if p.min() < 0 or p.max() >= n)
        v = int(p[(p < 0) | (p >= n)][0])
        raise IndexError(f"batch {j}: index {v} is out of range for {n} lengths")
    off = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([p.size for p in parts], out=off[1:])
    return _stats(lens, idx, off)


class _Epoch(NamedTuple):
    epoch: int
    replicas: tuple      # (num_replicas, rank) of the split
    idx: np.ndarray      # flat sample indices, batch b = idx[off[b]:off[b + 1]]
    off: np.ndarray
    order: np.ndarray    # batch ids of the whole epoch, in yield order, before padding
    mine: np.ndarray     # batch ids this rank yields, in order


def column_lengths(dataset: Any, column: str) -> np.ndarray:
    """Per-row lengths of ``dataset[column]`` as int64: the lengths of a ragged column
    (rows are sequences), or the values of an integer column. See
    :meth:`BucketBatchSampler.from_dataset`."""
    if not isinstance(column, str):
        raise TypeError(f"column must be a str, got {type(column).__name__}")
    names = getattr(dataset, "column_names", None)
    if names is None and isinstance(dataset, Mapping):
        names = list(dataset.keys())
    if names is not None and column not in names:
        raise KeyError(f"column {column!r} is not in the dataset's columns {list(names)}")
    if hasattr(dataset, "with_format") and hasattr(dataset, "data"):   # datasets.Dataset
        values = dataset.with_format("arrow")[column]
    else:
        try:
            values = dataset[column]
        except (KeyError, IndexError, TypeError) as e:
            raise KeyError(f"cannot read column {column!r} of the dataset: {e}") from e
    values = _from_arrow(values, column)
    if isinstance(values, np.ndarray) or isinstance(values, torch.Tensor):
        if values.ndim == 1 and values.dtype not in (object, np.object_):
            return _as_lengths(values)
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()                     # a pandas Series
    values = list(values)
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                      for v in values):
        return _as_lengths(values)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
            raise TypeError(f"column {column!r}, row {i}: a {type(v).__name__} is neither "
                            "a sequence nor an int length")
        out[i] = len(v)
    return _as_lengths(out)


def _from_arrow(values: Any, column: str) -> Any:
    """A pyarrow (chunked) array as NumPy lengths or values; other objects as they are."""
    if type(values).__module__.split(".")[0] != "pyarrow":
        return values
    import pyarrow as pa
    import pyarrow.compute as pc
    if values.null_count:
        i = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        raise ValueError(f"column {column!r}, row {i} is null")
    t = values.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        values = pc.list_value_length(values)
    elif not pa.types.is_integer(t):
        raise TypeError(f"column {column!r} has Arrow type {t}; expected lists (a ragged "
                        "column) or integers (lengths)")
    return np.asarray(values).astype(np.int64)


class _EpochIndices(Sampler[int]):
    """``BucketBatchSampler.sampler``: the sample indices its next iteration yields,
    flattened; ``set_epoch`` is the owner's. Iterating it leaves the owner's position
    (and a pending resumption) alone."""

    def __init__(self, owner: "BucketBatchSampler") -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def _mine(self) -> tuple:
        owner = self._owner
        ep = owner._epoch()
        return ep, ep.mine[owner._resume or 0:]

    def __iter__(self) -> Iterator[int]:
        ep, mine = self._mine()
        for b in mine.tolist():
            yield from ep.idx[ep.off[b]:ep.off[b + 1]].tolist()

    def __len__(self) -> int:
        ep, mine = self._mine()
        return int((ep.off[mine + 1] - ep.off[mine]).sum())

    def __repr__(self) -> str:
        return f"<indices of {self._owner!r}>"


def distributed_defaults(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    """``(num_replicas, rank)``: those given, the missing ones from torch.distributed
    (1 and 0 when it is not initialized)."""
    if num_replicas is None or rank is None:
        dist = torch.distributed
        initialized = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialized else 1
        if rank is None:
            rank = dist.get_rank() if initialized else 0
    return num_replicas, rank


class BucketBatchSampler(Sampler[List[int]]):
    """Batches of samples of similar length, for ``DataLoader(batch_sampler=...)``.

    Each epoch: draw a permutation of the samples (if ``shuffle``), split it into chunks
    of ``bucket_size``, stable-sort every chunk by length (longest first), cut each
    chunk greedily into batches under ``batch_size`` and/or ``max_tokens``, and shuffle
    the order of the batches (if ``shuffle``). Batches never span two chunks. Every
    sample that is not dropped appears exactly once per epoch (before distributed
    padding, below).

    Parameters
    ----------
    lengths : sequence, ndarray or tensor of int
        Length of every sample of the dataset (>= 1), e.g. its number of tokens.
    max_tokens : int, optional
        Budget on the padded size of a batch: ``len(batch) * max(lengths in batch)
        <= max_tokens`` (as fairseq's ``batch_by_size``).
    batch_size : int, optional
        Maximum number of samples per batch. At least one of ``max_tokens`` and
        ``batch_size`` is required; with both, both hold.
    shuffle : bool, default True
        Permute the samples and the batch order every epoch. With ``False`` the chunks
        are consecutive samples and batches come in chunk order (longest first within a
        chunk), the same for every epoch.
    seed : int, default 0
        The epoch's generator is ``numpy.random.default_rng([seed, epoch])``. Must be
        the same on every rank.
    drop_last : bool, default False
        Drop the last batch of the epoch (before the batch shuffle: the tail of the
        last chunk) if it holds fewer than ``batch_size`` samples (at most one batch;
        no effect on cutting without ``batch_size``). In distributed mode, also drop the
        ``num_batches % num_replicas`` batches at the end of the shuffled order instead
        of padding.
    drop_oversized : bool, default False
        Samples longer than ``max_tokens`` raise ``ValueError`` unless this is true;
        then they are left out of every epoch, with one ``UserWarning`` counting them.
    bucket_size : int, optional
        Samples sorted together. Default: 100 x the estimated batch size (``batch_size``,
        or ``max_tokens // mean length``, the smaller if both), rounded up to a multiple
        of ``batch_size``, so that in count-only mode every batch but the last is full.
    num_replicas, rank : int, optional
        Distributed split; default from ``sampler`` if given, else from
        :mod:`torch.distributed` when it is initialized at the time the epoch is built
        (so a sampler made before ``init_process_group`` splits too), else 1 and 0.
        Rank ``r`` yields batches ``r, r + R, r + 2R, ...`` of the shuffled order. If
        their number is not a multiple of ``R``, the order is padded with batches from
        its start (so those samples are seen twice this epoch), or truncated with
        ``drop_last``, so every rank yields the same number of batches.
    sampler : torch.utils.data.DistributedSampler, optional
        Take ``num_replicas`` and ``rank`` from it (any object with those int
        attributes). PyTorch Lightning passes one when it re-creates the batch sampler
        for DDP; only its rank and world size are used, the batches are still this
        sampler's own (split by batch, so every rank yields the same count).

    Attributes
    ----------
    sampler : Sampler[int]
        This rank's sample indices of the current epoch, flattened in batch order. Its
        ``set_epoch`` sets this sampler's epoch: trainers that call
        ``batch_sampler.sampler.set_epoch(epoch)`` (PyTorch Lightning) advance epochs.

    Notes
    -----
    ``len(sampler)`` is the number of batches the next ``iter(sampler)`` yields on this
    rank (the remaining ones after :meth:`load_state_dict`). It builds the epoch (cached
    per epoch): about 0.5 s for 10 million samples, milliseconds for a million.

    Examples
    --------
    >>> s = BucketBatchSampler([5, 1, 4, 2, 3, 6], max_tokens=8, seed=0)
    >>> sorted(i for b in s for i in b)
    [0, 1, 2, 3, 4, 5]
    >>> all(len(b) * max([5, 1, 4, 2, 3, 6][i] for i in b) <= 8 for b in s)
    True
    >>> BucketBatchSampler([5, 1, 4, 2], batch_size=2, shuffle=False, bucket_size=4).epoch_batches()
    [[0, 2], [3, 1]]
    """

    def __init__(self, lengths: Any, *, max_tokens: Optional[int] = None,
                 batch_size: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, drop_oversized: bool = False,
                 bucket_size: Optional[int] = None, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, sampler: Optional[Any] = None) -> None:
        super().__init__()
        if isinstance(lengths, Sampler):
            raise TypeError(
                f"BucketBatchSampler got a {type(lengths).__name__} where it expects the "
                "sample lengths: something (PyTorch Lightning's DDP setup) is re-creating "
                "it as if it were a torch BatchSampler(sampler, batch_size, drop_last). "
                "BucketBatchSampler splits batches across ranks itself: set "
                "Trainer(use_distributed_sampler=False), or pass the DistributedSampler "
                "as BucketBatchSampler(lengths, ..., sampler=...)")
        self.lengths = _as_lengths(lengths)
        if max_tokens is None and batch_size is None:
            raise ValueError("BucketBatchSampler needs max_tokens, batch_size or both")
        self.max_tokens = None if max_tokens is None else _check_int("max_tokens", max_tokens, 1)
        self.batch_size = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        self.shuffle = bool(shuffle)
        self.seed = _check_int("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.drop_oversized = bool(drop_oversized)
        n = len(self.lengths)

        # Samples kept every epoch (all of them unless drop_oversized).
        self._kept: Optional[np.ndarray] = None
        if self.max_tokens is not None and n:
            over = np.flatnonzero(self.lengths > self.max_tokens)
            if over.size and not self.drop_oversized:
                i = int(over[0])
                raise ValueError(
                    f"sample {i} has length {self.lengths[i]} > max_tokens={self.max_tokens}"
                    f" ({over.size} sample(s) are longer); pass drop_oversized=True to "
                    "leave them out")
            if over.size:
                warnings.warn(f"BucketBatchSampler: dropping {over.size} of {n} samples "
                              f"longer than max_tokens={self.max_tokens}", UserWarning,
                              stacklevel=2)
                self._kept = np.flatnonzero(self.lengths <= self.max_tokens)
        self.num_samples = n if self._kept is None else len(self._kept)
        kept_lengths = self.lengths if self._kept is None else self.lengths[self._kept]
        self._max_length = int(kept_lengths.max()) if len(kept_lengths) else 0

        if bucket_size is None:
            est = self.batch_size if self.batch_size is not None else 1
            if self.max_tokens is not None and len(kept_lengths):
                by_tokens = max(1, self.max_tokens // max(1, round(float(kept_lengths.mean()))))
                est = by_tokens if self.batch_size is None else min(est, by_tokens)
            bucket_size = 100 * est
            if self.batch_size is not None:
                bucket_size = -(-bucket_size // self.batch_size) * self.batch_size
        self.bucket_size = _check_int("bucket_size", bucket_size, 1)

        # The kernel computes count * max_len in int64: a budget above the largest
        # possible padded batch changes nothing, so clamp it there.
        self._kernel_max_tokens = 0
        if self.max_tokens is not None:
            cap = max(1, self.num_samples) * max(1, self._max_length)
            if cap > _INT64_MAX:
                raise ValueError("lengths too large: len(lengths) * max(lengths) overflows int64")
            self._kernel_max_tokens = min(self.max_tokens, cap)

        if sampler is not None:
            given = {"num_replicas": num_replicas, "rank": rank}
            for name in given:
                value = getattr(sampler, name, None)
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"sampler must be a DistributedSampler (an object with "
                                    f"int num_replicas and rank), got a "
                                    f"{type(sampler).__name__} without an int {name}")
                if given[name] is not None and given[name] != value:
                    raise ValueError(f"{name}={given[name]} but the sampler has {name}="
                                     f"{value}; pass one or the other")
            num_replicas, rank = sampler.num_replicas, sampler.rank
        self._num_replicas = None if num_replicas is None else _check_int(
            "num_replicas", num_replicas, 1)
        self._rank = None if rank is None else _check_int("rank", rank, 0)
        self._replicas()                     # check rank < num_replicas now

        self.epoch = 0
        self._cache: Optional[_Epoch] = None
        self._resume: Optional[int] = None   # batches to skip on the next __iter__
        self._yielded = 0                    # batches yielded so far in this epoch
        self.sampler: Sampler[int] = _EpochIndices(self)
        # Lightning re-creates a batch sampler for DDP from these (the protocol of its
        # own wrapper of BatchSampler.__init__), passing its DistributedSampler as
        # `sampler`; without them it would call BucketBatchSampler(sampler, batch_size=,
        # drop_last=) and fail.
        if not hasattr(self, "__pl_saved_args"):
            saved = {"max_tokens": max_tokens, "batch_size": batch_size, "shuffle": shuffle,
                     "seed": seed, "drop_last": drop_last, "drop_oversized": drop_oversized,
                     "bucket_size": bucket_size, "num_replicas": num_replicas,
                     "rank": rank, "sampler": sampler}
            if sampler is not None:     # its rank/world size were copied from it
                saved["num_replicas"] = saved["rank"] = None
            object.__setattr__(self, "__pl_saved_args", (self.lengths,))
            object.__setattr__(self, "__pl_saved_kwargs", saved)
            object.__setattr__(self, "__pl_saved_arg_names", ("lengths",))
            object.__setattr__(self, "__pl_saved_default_kwargs", {})

    @classmethod
    def from_dataset(cls, dataset: Any, column: str = "input_ids",
                     **kwargs: Any) -> "BucketBatchSampler":
        """A sampler whose lengths come from a column of ``dataset``.

        Parameters
        ----------
        dataset : datasets.Dataset or a mapping of column name -> values
            A Hugging Face ``datasets.Dataset`` (read through Arrow: no Python object
            per row, ``select``/``shuffle``/``filter`` views respected), or anything
            with ``dataset[column]`` (a dict of lists, a pandas DataFrame).
        column : str, default "input_ids"
            A ragged column (each row a sequence: its length is used) or an integer
            column of lengths (e.g. ``"length"``).
        **kwargs
            The other arguments of :class:`BucketBatchSampler` (``max_tokens``, ...).

        Examples
        --------
        >>> s = BucketBatchSampler.from_dataset({"input_ids": [[1, 2, 3], [4], [5, 6]]},
        ...                                     batch_size=2)
        >>> s.lengths.tolist()
        [3, 1, 2]
        """
        return cls(column_lengths(dataset, column), **kwargs)

    # ------------------------------------------------------------------ ranks
    def _replicas(self) -> tuple:
        """``(num_replicas, rank)``: as given, else torch.distributed's now."""
        R, rank = distributed_defaults(self._num_replicas, self._rank)
        if rank >= R:
            raise ValueError(f"rank must be in [0, num_replicas={R}), got {rank}")
        return R, rank

    @property
    def num_replicas(self) -> int:
        """Number of ranks the epoch is split across."""
        return self._replicas()[0]

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._replicas()[1]

    # ------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (as
        ``DistributedSampler.set_epoch``). A pending resumption (from
        :meth:`load_state_dict`) is kept only if ``epoch`` is its epoch."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._resume = None
            self._yielded = 0
        self.epoch = epoch

    def _build(self, epoch: int, sort: bool = True) -> tuple:
        """The epoch's batches, uncached: ``(idx, off, order)`` with ``order`` the
        global batch order (after ``drop_last`` and the batch shuffle)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            perm = rng.permutation(self.num_samples)
            order = perm if self._kept is None else self._kept[perm]
        else:
            order = np.arange(self.num_samples) if self._kept is None else self._kept
        # Chunks and batches never hold more than every sample: larger limits are
        # clamped there, so that any Python int fits the kernel's C integers.
        cap = max(1, self.num_samples)
        idx, off = _sampler.build_epoch(order, self.lengths, self._max_length,
                                        min(self.bucket_size, cap),
                                        min(self.batch_size or 0, cap),
                                        self._kernel_max_tokens, sort)
        nb = len(off) - 1
        if (self.drop_last and self.batch_size is not None and nb
                and int(off[nb] - off[nb - 1]) < self.batch_size):
            nb -= 1
            off = off[:nb + 1]
            idx = idx[:off[nb]]
        batch_order = rng.permutation(nb) if self.shuffle else np.arange(nb)
        return idx, off, batch_order

    def _epoch(self) -> _Epoch:
        replicas = self._replicas()
        if self._cache is None or self._cache.epoch != self.epoch:
            self._cache = None   # free the previous epoch first
            idx, off, order = self._build(self.epoch)
            self._cache = _Epoch(self.epoch, replicas, idx, off, order,
                                 self._split(order, *replicas))
        elif self._cache.replicas != replicas:
            self._cache = self._cache._replace(replicas=replicas,
                                               mine=self._split(self._cache.order, *replicas))
        return self._cache

    def _split(self, order: np.ndarray, R: int, rank: int) -> np.ndarray:
        """This rank's batches: positions ``rank, rank + R, ...`` of ``order``, padded
        by repeating it from its start (or truncated with ``drop_last``) to a multiple
        of ``R``. Computed without materializing the padded order (``R`` may be huge)."""
        nb = len(order)
        if R == 1:
            return order
        count = nb // R if self.drop_last else -(-nb // R)
        if count == 0:
            return order[:0]
        if count == 1:                      # also R > nb, where R may not fit int64
            return order[rank % nb:rank % nb + 1]
        # count >= 2, so R < nb: every position below count * R fits int64
        return order[(rank + R * np.arange(count, dtype=np.int64)) % nb]

    def __iter__(self) -> Iterator[List[int]]:
        ep = self._epoch()
        start = self._resume or 0
        self._resume = None
        idx, off, mine = ep.idx, ep.off, ep.mine
        self._yielded = start
        for b in mine[start:].tolist():
            self._yielded += 1
            yield idx[off[b]:off[b + 1]].tolist()

    def __len__(self) -> int:
        return len(self._epoch().mine) - (self._resume or 0)

    def epoch_batches(self) -> List[List[int]]:
        """All batches of the current epoch, in yield order, before the distributed
        split (the same on every rank)."""
        ep = self._epoch()
        return [ep.idx[ep.off[b]:ep.off[b + 1]].tolist() for b in ep.order.tolist()]

    def efficiency(self, bucketed: bool = True) -> PaddingStats:
        """Padding cost of the current epoch's batches (all ranks, before padding).

        Parameters
        ----------
        bucketed : bool, default True
            ``False`` reports what the same permutation cut greedily under the same
            limits *without* the per-chunk sort would cost: random batching, for
            comparison.

        Examples
        --------
        >>> import numpy as np
        >>> L = np.random.default_rng(0).integers(1, 100, 1000)
        >>> s = BucketBatchSampler(L, max_tokens=800)
        >>> s.efficiency().efficiency > s.efficiency(bucketed=False).efficiency
        True
        """
        if bucketed:
            ep = self._epoch()
            return _stats(self.lengths, ep.idx, ep.off)
        idx, off, _ = self._build(self.epoch, sort=False)
        return _stats(self.lengths, idx, off)

    # ------------------------------------------------------------------ state
    def _config(self) -> Dict[str, Any]:
        return {"dataset_size": len(self.lengths), "max_tokens": self.max_tokens,
                "batch_size": self.batch_size, "bucket_size": self.bucket_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last,
                "drop_oversized": self.drop_oversized, "num_replicas": self.num_replicas}

    def state_dict(self, batches_consumed: Optional[int] = None) -> Dict[str, Any]:
        """Position in the epoch, for :meth:`load_state_dict`.

        Parameters
        ----------
        batches_consumed : int, optional
            Batches of this epoch the training loop has consumed. Default: the number
            this sampler has yielded. A ``DataLoader`` with workers draws batches ahead
            of the loop (``prefetch_factor * num_workers``), so pass your own step
            count there for an exact resumption.

        Returns
        -------
        dict
            ``{"version", "epoch", "seed", "batches_yielded", "rank", ...config}``;
            plain ints, bools and ``None`` only. Every rank yields the same number of
            batches, so one rank's state resumes all of them.

        Examples
        --------
        >>> s = BucketBatchSampler(range(1, 21), batch_size=4, seed=1)
        >>> it = iter(s); first = next(it)
        >>> t = BucketBatchSampler(range(1, 21), batch_size=4)
        >>> t.load_state_dict(s.state_dict())
        >>> list(t) == list(it)
        True
        """
        done = self._yielded if batches_consumed is None else _check_int(
            "batches_consumed", batches_consumed, 0)
        return {"version": _STATE_VERSION, "epoch": self.epoch, "seed": self.seed,
                "batches_yielded": done, "rank": self.rank, **self._config()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the remaining batches of
        its epoch, later iterations full epochs (``set_epoch`` to another epoch cancels
        the resumption). The seed is taken from ``state``; the configuration (lengths
        count, limits, bucket size, shuffle, drop flags, ``num_replicas``) must match.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = [k for k in ("epoch", "seed", "batches_yielded") if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state['version']}")
        mismatch = [f"{k}: saved {state[k]!r}, now {v!r}" for k, v in self._config().items()
                    if k in state and state[k] != v]
        if mismatch:
            raise ValueError("state was saved with another configuration (" +
                             "; ".join(mismatch) + ")")
        epoch = _check_int("epoch", state["epoch"], 0)
        seed = _check_int("seed", state["seed"], 0)
        done = _check_int("batches_yielded", state["batches_yielded"], 0)
        if seed != self.seed:
            self._cache = None
        self.seed, self.epoch = seed, epoch
        total = len(self._epoch().mine)
        if done > total:
            raise ValueError(f"batches_yielded={done} but epoch {epoch} has only {total} "
                             "batches on this rank")
        self._resume = done
        self._yielded = done

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, "
                f"max_tokens={self.max_tokens}, batch_size={self.batch_size}, "
                f"bucket_size={self.bucket_size}, shuffle={self.shuffle}, seed={self.seed}, "
                f"epoch={self.epoch}, num_replicas={self.num_replicas}, rank={self.rank})")
