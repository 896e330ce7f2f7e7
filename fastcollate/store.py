"""Flat ragged stores: samples as one array of rows plus offsets, packed by indices.

A corpus on disk is rarely a list of per-sample objects: it is flat values plus offsets
(Arrow list columns, fairseq/Megatron indexed datasets, NumPy token files).
:class:`RaggedArray` is that layout; ``store[indices]`` is a lightweight selection that
:func:`fastcollate.pack`, :func:`fastcollate.pad` and :class:`fastcollate.PackedCollate`
pack in one pass (lengths from the offsets, counting sort, one copy of every row from
the store into its place), converting uint16/uint32 token ids to int64 inside that
copy. :class:`StoreDataset` serves such stores to a ``DataLoader``: its
``__getitems__`` hands the collate one :class:`StoreBatch`, never a Python object per
sample. :func:`write_store` / :func:`open_store` are the on-disk format (two ``.npy``
files, memory-mapped on open).
"""
from __future__ import annotations

import json
import math
import mmap
import os
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union, cast

import numpy as np
import torch

from . import _store
from torch.nn.utils.rnn import PackedSequence

from .packing import (BATCH_PACKERS, BATCH_PLANNERS, Plan, _NP_TO_TORCH, _SUPPORTED_NAMES,
                      _TORCH_TO_NP, _plan_from_flat, _sorted, check_dtype, wrap_arrays)

__all__ = ["RaggedArray", "RaggedBatch", "StoreDataset", "StoreBatch", "write_store",
           "open_store", "build_store"]

# element codes of the converting copies (fastcollate._store)
_CODES = {np.dtype(t): c for t, c in [
    (np.int8, "b"), (np.uint8, "B"), (np.int16, "h"), (np.uint16, "H"), (np.int32, "i"),
    (np.uint32, "I"), (np.int64, "q"), (np.uint64, "Q"), (np.float32, "f"),
    (np.float64, "d")]}


def _as_values(values: Any) -> np.ndarray:
    """The values as a C-contiguous, native-order NumPy array of a supported dtype
    (memory maps and CPU tensors are used in place; anything else is copied once)."""
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu" or values.requires_grad:
            raise TypeError("values must be a CPU tensor that does not require grad")
        values = values.numpy()
    if not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy.ndarray (or np.memmap, or a CPU tensor), "
                        f"got {type(values).__name__}")
    if values.ndim == 0:
        raise ValueError("values must have at least one dimension (rows), got a 0-d array")
    if values.dtype.newbyteorder("=") not in _NP_TO_TORCH:
        raise TypeError(f"values dtype {values.dtype} is not supported; expected one of "
                        f"{_SUPPORTED_NAMES}")
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    if not values.flags.c_contiguous:
        values = np.ascontiguousarray(values)
    return values


def _as_offsets(offsets: Any) -> np.ndarray:
    """The offsets as a 1-D C-contiguous int64 array (other integer arrays converted;
    anything that is not integers refused)."""
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.detach().cpu().numpy()
    arr = offsets if isinstance(offsets, np.ndarray) else np.asarray(offsets)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"offsets must be integers (int64), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"offsets must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != np.int64:
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > 2**63 - 1:
            raise ValueError("offsets do not fit int64")
        arr = arr.astype(np.int64)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _mapped_state(arr: np.ndarray) -> Optional[Tuple[str, int, str, Tuple[int, ...]]]:
    """(file name, byte position, dtype, shape) of a C-contiguous view into a read-only
    ``np.memmap``, so that a pickle can re-open the file instead of holding its bytes."""
    mm = getattr(arr, "_mmap", None)
    name = getattr(arr, "filename", None)
    if not isinstance(arr, np.memmap) or mm is None or not name or arr.flags.writeable:
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
    return (name, start + arr.ctypes.data - base, arr.dtype.str, arr.shape)


def _map(name: str, pos: int, dtype: str, shape: Tuple[int, ...]) -> np.ndarray:
    if math.prod(shape) == 0:          # mmap refuses empty maps
        return np.empty(shape, dtype=dtype)
    return np.memmap(name, mode="r", dtype=dtype, offset=pos, shape=shape)


def _rebuild(values: Any, offsets: Any, dtype: Optional[torch.dtype]) -> "RaggedArray":
    if isinstance(values, tuple):
        values = _map(*values)
    if isinstance(offsets, tuple):
        offsets = _map(*offsets)
    return RaggedArray(values, offsets, dtype=dtype)


class RaggedArray:
    """A ragged store: ``n`` samples of shape ``(L_i, *row)`` as one array of rows.

    Sample ``i`` is ``values[offsets[i]:offsets[i + 1]]``. The store may be far larger
    than memory: with ``np.memmap`` values (:func:`open_store`,
    :func:`fastcollate.formats.read_indexed`) a batch reads only its own rows.

    Parameters
    ----------
    values : numpy.ndarray, np.memmap or CPU tensor, shape ``(N, *row)``
        The rows of every sample, concatenated. Used in place when C-contiguous and in
        native byte order (otherwise copied once, here).
    offsets : 1-D integer array of ``n + 1`` entries
        ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == N``; stored as int64
        (other integer dtypes are converted). Checked here, in one pass.
    dtype : torch.dtype, optional
        The dtype batches are packed to by default (``pack(store[idx])``); by default
        the values' own (uint16 token ids stay uint16). ``dtype=torch.int64`` converts
        inside the copy, with no intermediate array.

    Raises
    ------
    TypeError
        values or offsets of an unsupported type or dtype.
    ValueError
        offsets that do not describe the values (the message names the entry).

    Examples
    --------
    >>> import numpy as np, torch, fastcollate
    >>> store = fastcollate.RaggedArray(np.arange(6, dtype=np.uint16), [0, 2, 5, 6],
    ...                                 dtype=torch.int64)
    >>> len(store), store.lengths.tolist(), store[1].tolist()
    (3, [2, 3, 1], [2, 3, 4])
    >>> p = fastcollate.pack(store[[1, 0]])
    >>> p.data.dtype, p.data.tolist(), p.batch_sizes.tolist()
    (torch.int64, [2, 0, 3, 1, 4], [2, 2, 1])
    """

    def __init__(self, values: Any, offsets: Any, *, dtype: Optional[torch.dtype] = None):
        self.values = _as_values(values)
        self.offsets = _as_offsets(offsets)
        _store.check_offsets(self.offsets, self.values.shape[0])
        check_dtype(dtype)
        self.dtype: torch.dtype = _NP_TO_TORCH[self.values.dtype] if dtype is None else dtype
        self._lengths: Optional[np.ndarray] = None

    @classmethod
    def _trusted(cls, values: np.ndarray, offsets: np.ndarray,
                 dtype: torch.dtype) -> "RaggedArray":
        """A store made from checked parts (a slice of a checked store): no O(n) pass."""
        self = cls.__new__(cls)
        self.values, self.offsets, self.dtype, self._lengths = values, offsets, dtype, None
        return self

    @property
    def row(self) -> Tuple[int, ...]:
        """The shape of one row (``()`` for token ids)."""
        return tuple(self.values.shape[1:])

    @property
    def lengths(self) -> np.ndarray:
        """Length of every sample (int64, read-only; for ``BucketBatchSampler``)."""
        if self._lengths is None:
            lengths = np.diff(self.offsets)
            lengths.flags.writeable = False
            self._lengths = lengths
        return self._lengths

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def __getitem__(self, key: Any) -> Any:
        """``store[i]``: sample ``i`` as a view of the values (negative ``i`` counts
        from the end). ``store[a:b]``: a store of those samples (views, no copy).
        ``store[indices]`` (a list/array of ints, or a slice with a step): a
        :class:`RaggedBatch` to pack."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            n = len(self)
            i = int(key)
            if i < -n or i >= n:
                raise IndexError(f"index {i} is out of range for a store of {n} samples")
            i %= n
            return self.values[int(self.offsets[i]):int(self.offsets[i + 1])]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return RaggedBatch(self, np.arange(start, stop, step, dtype=np.int64))
            stop = max(stop, start)
            a, b = int(self.offsets[start]), int(self.offsets[stop])
            return RaggedArray._trusted(self.values[a:b], self.offsets[start:stop + 1] - a,
                                        self.dtype)
        return RaggedBatch(self, key)

    @property
    def values_dtype(self) -> np.dtype:
        """The dtype of the stored values (``dtype`` is the packed one)."""
        return self.values.dtype

    def rows(self, i: int) -> np.ndarray:
        """Sample ``i`` (a view)."""
        return self[i]

    def take(self, indices: Any) -> "RaggedBatch":
        """The samples ``indices`` (repeats allowed) as a :class:`RaggedBatch`."""
        return RaggedBatch(self, indices)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.values, np.memmap) else "array"
        return (f"RaggedArray({len(self)} samples, {self.values.shape[0]} rows of shape "
                f"{self.row} {self.values.dtype} ({kind}), dtype={self.dtype})")

    def __reduce__(self):
        # memory-mapped parts travel as (file, position, dtype, shape): a worker maps
        # the file again instead of receiving the corpus through the pickle
        values = _mapped_state(self.values) or self.values
        offsets = _mapped_state(self.offsets) or self.offsets
        return (_rebuild, (values, offsets, self.dtype))

    def sources(self, indices: Any) -> Tuple[np.ndarray, np.ndarray, List[Any]]:
        """Lengths, first-row addresses and the owners of that memory, for the samples
        ``indices`` (IndexError for an index outside ``0 .. len - 1``)."""
        values = self.values
        lengths, ptrs = _store.select(self.offsets, indices, values)
        return lengths, ptrs, [values]


def _checked_indices(indices: Any, n: int, what: str) -> np.ndarray:
    """A private, read-only int64 copy of ``indices``, each in ``0 .. n - 1``
    (IndexError naming the first that is not)."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    return _store.checked_indices(indices, n, what)


class _Selection(SequenceABC):
    """Items ``indices`` of a store or dataset, not yet read; a sequence of them."""

    def __init__(self, source: Any, indices: Any, what: str):
        self._source = source
        self.indices = _checked_indices(indices, len(source), what)

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return cast(Any, type(self))(self._source, self.indices[k])   # subclass init
        return self._source[int(self.indices[k])]


class RaggedBatch(_Selection):
    """Samples ``indices`` of a store, not yet read: what ``store[indices]`` returns.

    :func:`fastcollate.pack`, :func:`fastcollate.pad` and
    :class:`fastcollate.PackedCollate` read it in one pass, with the same result as
    the list ``[store[i] for i in indices]`` packed with the store's dtype. It is also a
    sequence of those samples (views), for code that wants them one by one.
    Indices are checked here: integers in ``0 .. len(store) - 1``, repeats allowed.
    """

    def __init__(self, store: Any, indices: Any):
        if not isinstance(store, (RaggedArray, ChunkedRaggedArray)):
            raise TypeError(f"store must be a RaggedArray, got {type(store).__name__}")
        super().__init__(store, indices, "a store")

    @property
    def store(self) -> Any:
        return self._source

    @property
    def lengths(self) -> np.ndarray:
        return self.store.sources(self.indices)[0]

    def __repr__(self) -> str:
        return f"RaggedBatch({len(self)} samples of {self.store!r})"


_HOW: Dict[Tuple[np.dtype, bool, torch.dtype], str] = {}


def _copy_method(values: np.dtype, one_element: bool, target: torch.dtype) -> str:
    """How rows of ``values`` become ``target``: "" (bytes as they are: the row
    scatter), two element codes (a converting kernel) or "torch" (gather, then cast)."""
    src = _CODES.get(values, "")
    if target == _NP_TO_TORCH[values]:
        # token ids (one element a row): the kernel that writes the output in order
        # beats the row scatter there; wider rows take the scatter, tuned for them
        return src + src if one_element and _store.can_convert(src, src) else ""
    dst = _CODES.get(np.dtype(_TORCH_TO_NP[target]), "") if target in _TORCH_TO_NP else ""
    return src + dst if src and dst and _store.can_convert(src, dst) else "torch"


def _plan_selection(batch: RaggedBatch, order: str, dtype: Optional[torch.dtype]) -> Plan:
    """The plan of a store selection: lengths and addresses from the offsets (checked
    against the values' real size), the counting sort, and how to copy: bytes as they
    are, a converting copy, or (a conversion the kernels lack) through torch."""
    store = batch.store
    if len(batch) == 0:
        raise ValueError("cannot pack an empty batch: expected at least one sample")
    lengths, ptrs, keep = store.sources(batch.indices)
    try:
        bs, si, ui = _sorted(lengths, order)
    except ValueError as e:             # name the store's sample too
        zeros = np.flatnonzero(lengths == 0)
        k = int(zeros[0]) if zeros.size else -1
        if k < 0 or f"sample {k} has length 0" not in str(e):
            raise
        raise ValueError(f"{e} (store sample {int(batch.indices[k])})") from e
    target = store.dtype if dtype is None else dtype
    row = store.row
    plan = Plan(lengths, row, target, bs, si, ui, ptrs=ptrs, keep=keep)
    key = (store.values_dtype, row == (), target)
    how = _HOW.get(key)
    if how is None:
        how = _HOW[key] = _copy_method(*key)
    if how != "torch":
        plan.convert = how
        return plan
    # rare conversions (e.g. uint16 -> float32): the rows gathered, then torch's cast
    parts = [store.rows(int(i)) for i in batch.indices]
    flat = torch.from_numpy(np.concatenate(parts)).to(target)
    return _plan_from_flat(flat, lengths, store.row, order, None)


class ChunkedRaggedArray:
    """Several :class:`RaggedArray` chunks (same row shape and dtype) seen as one store,
    without concatenating them: what a chunked Arrow column becomes
    (:func:`fastcollate.formats.from_arrow`). Supports ``len``, ``store[i]``,
    ``store[indices]``, ``lengths`` and pickling, like :class:`RaggedArray`."""

    def __init__(self, chunks: Iterable[RaggedArray], *, dtype: Optional[torch.dtype] = None):
        self.chunks = list(chunks)
        if not self.chunks:
            raise ValueError("a chunked store needs at least one chunk")
        first = self.chunks[0]
        for j, c in enumerate(self.chunks):
            if not isinstance(c, RaggedArray):
                raise TypeError(f"chunk {j} is a {type(c).__name__}, expected a RaggedArray")
            if c.row != first.row or c.values.dtype != first.values.dtype:
                raise ValueError(f"chunk {j} holds rows of shape {c.row} {c.values.dtype}, "
                                 f"but chunk 0 holds {first.row} {first.values.dtype}")
        check_dtype(dtype)
        self.dtype = first.dtype if dtype is None else dtype
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks]).astype(np.int64)
        self._lengths: Optional[np.ndarray] = None

    @property
    def row(self) -> Tuple[int, ...]:
        return self.chunks[0].row

    @property
    def values_dtype(self) -> np.dtype:
        return self.chunks[0].values.dtype

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            lengths = np.concatenate([c.lengths for c in self.chunks])
            lengths.flags.writeable = False
            self._lengths = lengths
        return self._lengths

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> Tuple[RaggedArray, int]:
        j = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.chunks[j], i - int(self.starts[j])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            n = len(self)
            if key < -n or key >= n:
                raise IndexError(f"index {int(key)} is out of range for a store of {n} "
                                 "samples")
            chunk, k = self._locate(int(key) % n)
            return chunk[k]
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)), dtype=np.int64)
        return RaggedBatch(self, key)

    def rows(self, i: int) -> np.ndarray:
        return self[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        for c in self.chunks:
            yield from c

    def __repr__(self) -> str:
        return (f"ChunkedRaggedArray({len(self)} samples in {len(self.chunks)} chunks, rows "
                f"of shape {self.row} {self.values_dtype}, dtype={self.dtype})")

    def sources(self, indices: Any) -> Tuple[np.ndarray, np.ndarray, List[Any]]:
        idx = _checked_indices(indices, len(self), "a store")
        which = np.searchsorted(self.starts, idx, side="right") - 1
        lengths = np.empty(idx.shape[0], dtype=np.int64)
        ptrs = np.empty(idx.shape[0], dtype=np.int64)
        for j in np.unique(which):
            sel = which == j
            lens_j, ptrs_j, _ = self.chunks[j].sources(idx[sel] - self.starts[j])
            lengths[sel], ptrs[sel] = lens_j, ptrs_j
        return lengths, ptrs, [c.values for c in self.chunks]


def _plan_whole(store: Any, order: str, dtype: Optional[torch.dtype]) -> Plan:
    return _plan_selection(RaggedBatch(store, np.arange(len(store), dtype=np.int64)),
                           order, dtype)


def _pack_selection(batch: RaggedBatch, enforce_sorted: bool) -> Optional[PackedSequence]:
    """:func:`fastcollate.pack` of a selection of a :class:`RaggedArray` in one call
    (``_store.pack_selection``): its values' dtype as it is, or converted by a
    converting copy (uint16 token ids into int64...); None for anything else (the
    plan packs it or names the odd sample)."""
    store = batch.store
    if type(store) is not RaggedArray:
        return None
    values = store.values
    if store.dtype == _NP_TO_TORCH.get(values.dtype):
        return wrap_arrays(_store.pack_selection(store.offsets, batch.indices, values,
                                                 enforce_sorted))
    key = (store.values_dtype, store.row == (), store.dtype)
    how = _HOW.get(key)
    if how is None:
        how = _HOW[key] = _copy_method(*key)
    if len(how) != 2:           # through torch: the plan
        return None
    return wrap_arrays(_store.pack_selection(store.offsets, batch.indices, values,
                                             enforce_sorted, how))


BATCH_PACKERS[RaggedBatch] = _pack_selection
BATCH_PLANNERS[RaggedBatch] = _plan_selection
BATCH_PLANNERS[RaggedArray] = _plan_whole
BATCH_PLANNERS[ChunkedRaggedArray] = _plan_whole


# ---------------------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------------------

_Store = Union[RaggedArray, ChunkedRaggedArray]


def _as_field(key: Any, value: Any, n: Optional[int]) -> Any:
    field: Any = value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        if arr.ndim == 0:
            raise ValueError(f"field {key!r}: a per-sample array needs a leading dimension")
        if np.dtype(arr.dtype).newbyteorder("=") not in _NP_TO_TORCH:
            raise TypeError(f"field {key!r}: dtype {arr.dtype} is not supported")
        field = arr
    elif not isinstance(value, (RaggedArray, ChunkedRaggedArray)):
        raise TypeError(f"field {key!r} is a {type(value).__name__}; expected a "
                        "RaggedArray or a per-sample numpy array / tensor")
    if n is not None and len(field) != n:
        raise ValueError(f"field {key!r} has {len(field)} samples, but the first field has "
                         f"{n}: every field must have one entry per sample")
    return field


def _sample(store: _Store, i: int) -> np.ndarray:
    rows = store[i]
    target = _TORCH_TO_NP.get(store.dtype)
    return rows if target is None or rows.dtype == target else rows.astype(target)


class StoreDataset(torch.utils.data.Dataset):
    """A map-style dataset over aligned fields: ragged stores and per-sample arrays.

    ``dataset[i]`` is one sample (views into the stores, like any dataset), and
    ``dataset.__getitems__(indices)``, which ``DataLoader`` calls to fetch a whole
    batch when it batches (``batch_size=`` or ``batch_sampler=``), returns one
    :class:`StoreBatch` that :class:`fastcollate.PackedCollate` packs straight from the
    stores, without a Python object per sample. With workers the collated batch still
    leaves each worker as one shared-memory block.

    Parameters
    ----------
    fields : RaggedArray, dict of key -> field, or tuple/list of fields
        Samples are bare sequences, dicts or tuples accordingly. A field is a
        :class:`RaggedArray` (ragged) or an array/tensor with one entry per sample
        (labels, speaker ids...), all of the same length.
    length_key : key, optional
        The ragged field whose lengths :attr:`lengths` reports (default: the first).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch.utils.data import DataLoader
    >>> from fastcollate import PackedCollate, RaggedArray, StoreDataset
    >>> tokens = RaggedArray(np.arange(10, dtype=np.uint16), [0, 3, 4, 8, 10],
    ...                      dtype=torch.int64)
    >>> ds = StoreDataset({"tokens": tokens, "label": np.array([0, 1, 0, 1])})
    >>> ds.lengths.tolist()
    [3, 1, 4, 2]
    >>> batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=PackedCollate())))
    >>> batch["tokens"].data.tolist(), batch["label"].tolist()
    ([0, 3, 1, 2], [0, 1])
    """

    def __init__(self, fields: Any, *, length_key: Any = None):
        if isinstance(fields, Mapping):
            self.kind = "dict"
            items = list(fields.items())
        elif isinstance(fields, (tuple, list)):
            self.kind = "tuple"
            items = list(enumerate(fields))
        else:
            self.kind = "bare"
            items = [(None, fields)]
        if not items:
            raise ValueError("a StoreDataset needs at least one field")
        n: Optional[int] = None
        self.fields: Dict[Any, Any] = {}
        for key, value in items:
            self.fields[key] = _as_field(key, value, n)
            n = len(self.fields[key]) if n is None else n
        self._n = int(n or 0)
        ragged = [k for k, v in self.fields.items() if not isinstance(v, np.ndarray)]
        if self.kind == "bare" and not ragged:
            raise TypeError("a StoreDataset of one field needs a RaggedArray")
        if length_key is not None and length_key not in ragged:
            raise KeyError(f"length_key {length_key!r} is not a ragged field ({ragged})")
        self.length_key = length_key if length_key is not None else (
            ragged[0] if ragged else None)

    @property
    def lengths(self) -> np.ndarray:
        """Lengths of the samples of ``length_key`` (for ``BucketBatchSampler``)."""
        if self.length_key is None and self.kind != "bare":
            raise ValueError("this dataset has no ragged field")
        return self.fields[self.length_key].lengths

    def __len__(self) -> int:
        return self._n

    def _record(self, values: Dict[Any, Any]) -> Any:
        if self.kind == "bare":
            return values[None]
        if self.kind == "dict":
            return values
        return tuple(values.values())

    def __getitem__(self, i: int) -> Any:
        """Sample ``i``: views into the stores (copies in the store's ``dtype`` where it
        is not the values' own), per-sample array entries for the other fields."""
        return self._record({k: f[i] if isinstance(f, np.ndarray) else _sample(f, i)
                             for k, f in self.fields.items()})

    def __getitems__(self, indices: Any) -> "StoreBatch":
        return StoreBatch(self, indices)

    def __repr__(self) -> str:
        return f"StoreDataset({len(self)} samples, fields {list(self.fields)})"


class StoreBatch(_Selection):
    """A batch of a :class:`StoreDataset`, not yet read: the dataset and the indices.

    :class:`fastcollate.PackedCollate` packs it from the stores in one pass per field.
    It is also a sequence of the batch's samples (``batch[k]`` is
    ``dataset[indices[k]]``), so any other collate function (``default_collate``)
    still works, one sample at a time.
    """

    def __init__(self, dataset: StoreDataset, indices: Any):
        super().__init__(dataset, indices, "a dataset")

    @property
    def dataset(self) -> StoreDataset:
        return self._source

    def columns(self) -> Tuple[str, List[Any], Dict[Any, Any]]:
        """(sample kind, field keys, key -> column): a :class:`RaggedBatch` for each
        ragged field, the gathered values (a tensor) for the others."""
        cols: Dict[Any, Any] = {}
        for key, field in self.dataset.fields.items():
            if isinstance(field, np.ndarray):
                taken = np.take(field, self.indices, axis=0)
                if not taken.dtype.isnative:
                    taken = taken.astype(taken.dtype.newbyteorder("="))
                cols[key] = torch.from_numpy(taken)
            else:
                cols[key] = RaggedBatch(field, self.indices)
        return self.dataset.kind, list(cols), cols

    def __repr__(self) -> str:
        return f"StoreBatch({len(self)} samples of {self.dataset!r})"


# ---------------------------------------------------------------------------------------
# On-disk format: <dir>/values.npy + <dir>/offsets.npy (+ meta.json), memory-mapped
# ---------------------------------------------------------------------------------------

_HEADER_BYTES = 128          # fixed .npy header size, rewritten once the count is known


def _npy_header(dtype: np.dtype, shape: Tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header of exactly ``_HEADER_BYTES`` bytes."""
    d = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(int(x) for x in shape)})
    pad = _HEADER_BYTES - 10 - len(d) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} is too long for the store header")
    text = (d + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


class _NpyStream:
    """Append rows to a .npy file without knowing their number in advance."""

    def __init__(self, path: str, dtype: np.dtype, row: Tuple[int, ...]):
        self.path, self.dtype, self.row, self.rows = path, dtype, row, 0
        self.f = open(path, "wb")
        self.f.write(_npy_header(dtype, (0,) + row))

    def write(self, a: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(a).tobytes())
        self.rows += a.shape[0]

    def close(self) -> None:
        self.f.seek(0)
        self.f.write(_npy_header(self.dtype, (self.rows,) + self.row))
        self.f.close()


def _as_rows(i: int, seq: Any, dtype: np.dtype, row: Optional[Tuple[int, ...]]) -> np.ndarray:
    a = seq.detach().cpu().numpy() if isinstance(seq, torch.Tensor) else np.asarray(seq)
    if a.ndim == 0:
        raise ValueError(f"sequence {i} is zero-dimensional; expected (L, *row)")
    if row is not None and a.shape[1:] != row:
        raise ValueError(f"sequence {i} has shape {a.shape}, expected rows of shape {row} "
                         "like sequence 0")
    if a.dtype != dtype:
        if a.size and a.dtype.kind not in "biuf":
            raise TypeError(f"sequence {i} has dtype {a.dtype}; expected numbers")
        b = a.astype(dtype)
        if a.size and not np.array_equal(b, a):
            raise OverflowError(f"sequence {i} has values that do not fit {dtype} "
                                f"(range {a.min()}..{a.max()})")
        a = b
    return a


def write_store(path: Union[str, os.PathLike], sequences: Iterable[Any], *,
                dtype: Any = np.int64, progress: bool = False,
                buffer_bytes: int = 1 << 24) -> RaggedArray:
    """Write sequences to a store directory and open it (memory-mapped).

    Streams: the corpus is never held, only a buffer of about ``buffer_bytes``; the
    number of sequences need not be known. ``path/values.npy`` holds the rows,
    ``path/offsets.npy`` the ``n + 1`` int64 offsets (plain ``.npy`` files, readable
    with ``np.load``). Values must fit ``dtype`` exactly (OverflowError naming the
    sequence otherwise); pick ``np.uint16`` for vocabularies below 65536 and pack them
    as int64 with ``open_store(path, dtype=torch.int64)``.

    Parameters
    ----------
    path : directory to create (it must not hold a store already).
    sequences : iterable of array-likes of shape ``(L_i, *row)`` (lists, arrays, tensors).
    dtype : NumPy dtype of the stored values.
    progress : bool
        Print sequences, rows and bytes written to stderr as it goes.

    Examples
    --------
    >>> import tempfile, os
    >>> from fastcollate import write_store, open_store
    >>> d = os.path.join(tempfile.mkdtemp(), "corpus")
    >>> store = write_store(d, ([1, 2, 3], [4], [5, 6]), dtype="uint16")
    >>> store.lengths.tolist(), open_store(d)[2].tolist()
    ([3, 1, 2], [5, 6])
    """
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in _NP_TO_TORCH:
        raise TypeError(f"dtype {dtype} is not supported; expected one of {_SUPPORTED_NAMES}")
    os.makedirs(path, exist_ok=True)
    vpath, opath = os.path.join(path, "values.npy"), os.path.join(path, "offsets.npy")
    if os.path.exists(vpath) or os.path.exists(opath):
        raise FileExistsError(f"{path} already holds a store")
    row: Optional[Tuple[int, ...]] = None
    values: Optional[_NpyStream] = None
    offsets = _NpyStream(opath, np.dtype(np.int64), ())
    pending: List[np.ndarray] = []
    lens: List[int] = []
    pending_bytes, n, total = 0, 0, 0
    last = time.monotonic()

    def flush() -> None:
        nonlocal pending_bytes
        if values is not None and pending:
            values.write(np.concatenate(pending))
        offsets.write(np.cumsum(np.array(lens, dtype=np.int64)) + (total - sum(lens)))
        pending.clear()
        lens.clear()
        pending_bytes = 0

    try:
        offsets.write(np.zeros(1, dtype=np.int64))
        for i, seq in enumerate(sequences):
            a = _as_rows(i, seq, dtype, row)
            if values is None:
                row = tuple(a.shape[1:])
                values = _NpyStream(vpath, dtype, row)
            pending.append(a)
            lens.append(a.shape[0])
            pending_bytes += a.nbytes + 8
            n += 1
            total += a.shape[0]
            if pending_bytes >= buffer_bytes:
                flush()
            if progress and time.monotonic() - last > 0.5:
                last = time.monotonic()
                print(f"\r{n:,} sequences, {total:,} rows", end="", file=sys.stderr)
        if values is None:
            values = _NpyStream(vpath, dtype, ())
        flush()
    finally:
        offsets.close()
        if values is not None:
            values.close()
    if progress:
        mb = (values.rows * dtype.itemsize * max(math.prod(values.row), 1)) / 2**20
        print(f"\r{n:,} sequences, {total:,} rows, {mb:,.1f} MiB -> {path}", file=sys.stderr)
    return open_store(path)


def open_store(path: Union[str, os.PathLike], *, dtype: Optional[torch.dtype] = None,
               mmap_mode: Optional[str] = "r") -> RaggedArray:
    """Open a store written by :func:`write_store` (memory-mapped unless
    ``mmap_mode=None``); ``dtype`` is the packed dtype (e.g. ``torch.int64`` for
    uint16 token ids)."""
    vpath, opath = os.path.join(path, "values.npy"), os.path.join(path, "offsets.npy")
    for p in (vpath, opath):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} does not exist: is {path} a store "
                                    "(fastcollate.write_store)?")
    mode: Any = mmap_mode if mmap_mode is None or (
        os.path.getsize(vpath) > _HEADER_BYTES and os.path.getsize(opath) > _HEADER_BYTES
    ) else None
    values = np.load(vpath, mmap_mode=mode)
    offsets = np.load(opath, mmap_mode=mode)
    return RaggedArray(values, offsets, dtype=dtype)


# ---------------------------------------------------------------------------------------
# A store from a text file (python -m fastcollate build-store)
# ---------------------------------------------------------------------------------------

def _text_lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def build_store(text_path: str, out: str, *, tokenizer: str = "bytes",
                progress: bool = True) -> RaggedArray:
    """A store from a text file, one sample per non-empty line.

    ``tokenizer="bytes"``: the line's UTF-8 bytes (uint8 ids 0..255).
    ``tokenizer="whitespace"``: words split on whitespace, numbered in order of first
    appearance (uint32 ids); the vocabulary goes to ``out/vocab.txt``, one word a line
    (line ``k`` is id ``k``). Memory is bounded by the vocabulary, not the file.
    """
    if tokenizer == "bytes":
        seqs: Iterable[Any] = (np.frombuffer(line, dtype=np.uint8) for line in _text_lines(
            text_path))
        store = write_store(out, seqs, dtype=np.uint8, progress=progress)
    elif tokenizer == "whitespace":
        vocab: Dict[bytes, int] = {}

        def ids() -> Iterator[np.ndarray]:
            for line in _text_lines(text_path):
                words = line.split()
                if words:
                    yield np.array([vocab.setdefault(w, len(vocab)) for w in words],
                                   dtype=np.uint32)

        store = write_store(out, ids(), dtype=np.uint32, progress=progress)
        with open(os.path.join(out, "vocab.txt"), "wb") as f:
            for w in vocab:
                f.write(w + b"\n")
    else:
        raise ValueError(f"tokenizer must be 'bytes' or 'whitespace', got {tokenizer!r}")
    with open(os.path.join(out, "meta.json"), "w") as meta:
        json.dump({"source": os.path.abspath(text_path), "tokenizer": tokenizer,
                   "samples": len(store), "tokens": int(store.values.shape[0])}, meta)
    return store
