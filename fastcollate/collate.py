"""DataLoader collate functions that emit ready PackedSequence (or padded) batches.

``PackedCollate`` turns a list of samples into a batch that mirrors the sample's
structure: ragged fields become ``PackedSequence`` (or padded tensors), the other fields
are collated like ``torch.utils.data.default_collate`` (in input order). Inside a
DataLoader worker every tensor of a batch is a view into one shared-memory block, so
the hand-over to the main process costs one storage instead of one per tensor.
"""
from __future__ import annotations

import dataclasses
import math
from operator import attrgetter, itemgetter
from collections.abc import Mapping
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import default_collate, get_worker_info

from . import _core
from .packing import Plan, packed_by_torch, plan_batch, wrap_packed, write_plan
from .padding import (check_padding_side, padded_by_torch, padded_length, padded_shape,
                      write_padded)

__all__ = ["PackedCollate", "packed_collate", "padded_collate", "to_device"]

_ALIGN = 64
Key = Hashable


def _is_sequence_sample(x: Any) -> bool:
    """A bare sequence: tensor/array with a leading dimension, or a flat list/tuple of
    Python numbers (not a record of fields)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return True
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return all(isinstance(v, (int, float, complex)) for v in x)
    return False


def _looks_ragged(value: Any) -> bool:
    """Auto-detection of a ragged field: a tensor/array with >= 1 dimension, or a
    list/tuple (of numbers or of rows)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim >= 1
    return isinstance(value, (list, tuple)) and not hasattr(value, "_fields")


def _alloc(nbytes: int, where: str) -> torch.Tensor:
    """A uint8 tensor of ``nbytes`` in shared, pinned or ordinary memory."""
    if where == "shared":
        return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=where == "pinned")


def _arena(specs: List[Tuple[Tuple[int, ...], torch.dtype]], where: str,
           one_block: bool = True) -> List[torch.Tensor]:
    """Empty tensors of the given shapes/dtypes: aligned views of one block (one
    allocation, one storage to hand over), or separate allocations."""
    sizes = [math.prod(shape) * dtype.itemsize for shape, dtype in specs]
    if not one_block:
        return [_alloc(max(n, 1), where)[:n].view(dtype).view(shape)
                for n, (shape, dtype) in zip(sizes, specs)]
    starts = []
    total = 0
    for n in sizes:
        total = -(-total // _ALIGN) * _ALIGN
        starts.append(total)
        total += n
    total = max(-(-total // _ALIGN) * _ALIGN, _ALIGN)
    block = _alloc(total, where)
    # 1-D int64 tensors (batch_sizes, indices, lengths, labels) are slices of one int64
    # view: one op each instead of three.
    words = block.view(torch.int64)
    return [words[start // 8:start // 8 + shape[0]] if dtype == torch.int64 and len(shape) == 1
            else block[start:start + n].view(dtype).view(shape)
            for start, n, (shape, dtype) in zip(starts, sizes, specs)]


@dataclasses.dataclass
class _Field:
    key: Key
    plan: Plan
    T: int = 0            # padded length (pad mode)


class PackedCollate:
    """Collate samples into batches whose ragged fields are ``PackedSequence``s.

    Use as ``DataLoader(dataset, batch_size=..., collate_fn=PackedCollate(...))``.

    Samples may be a bare sequence (tensor, array, flat list of numbers), a tuple/list
    ``(seq, label, ...)``, a namedtuple, a dataclass or a dict; the batch mirrors it.

    Parameters
    ----------
    ragged : iterable of keys, optional
        Fields to pack: positions for tuple samples, keys for dicts, names for
        dataclasses. By default a field is ragged if it is a tensor/array with >= 1
        dimension or a list/tuple; numbers, 0-d tensors, strings... are not. A bare
        sequence sample is always ragged.
    mode : {"pack", "pad"}
        Ragged fields become ``PackedSequence`` (default) or padded tensors.
    groups : iterable of tuples of keys
        Fields that must have equal lengths in each sample (inputs and per-step
        targets). Fields of equal lengths get the same permutation anyway (the sort is
        stable and deterministic), so ``outputs.data[i]`` lines up with
        ``targets.data[i]``; a group adds the check, naming the sample that breaks it.
    lengths : bool
        Add each ragged field's lengths (CPU int64, input order).
    mask : bool
        Pad mode: add a boolean ``(B, T)`` (or ``(T, B)``) mask, True on real steps.
    dtype : torch.dtype or dict of key -> dtype
        Cast ragged fields.
    enforce_sorted : bool
        Samples come sorted by length, decreasing (pack mode; see ``pack``).
    batch_first, padding_value, padding_side, pad_to_multiple_of :
        Pad mode options, as in :func:`fastcollate.pad`.
    pin_memory : bool
        Write the batch straight into page-locked memory (main-process loading; with
        workers, use ``DataLoader(pin_memory=True)`` instead).
    shared_memory : bool, optional
        Allocate the batch in shared memory. Default: only inside a DataLoader worker,
        where it saves the copy into shared memory on the way to the main process.
    one_block : bool, default True
        Every tensor of the batch is a view of one allocation (one storage to share and
        hand over). ``False`` allocates each tensor separately, as ``default_collate``
        does; it is there to measure the difference.

    Extra outputs (``lengths``, ``mask``): for dict samples, keys ``"<key>_lengths"``
    and ``"<key>_mask"``; otherwise the batch becomes a tuple with the lengths (one
    tensor per ragged field, in field order) and then the masks appended: a bare
    sample gives ``(packed, lengths)``, a tuple sample ``(packed, label, lengths)``, a
    namedtuple/dataclass sample ``(record, lengths)``.

    Examples
    --------
    >>> from fastcollate import PackedCollate
    >>> collate = PackedCollate(lengths=True)
    >>> packed, labels, lengths = collate([([1, 2, 3], 0), ([4], 1)])
    >>> packed.data.tolist(), labels.tolist(), lengths.tolist()
    ([1, 4, 2, 3], [0, 1], [3, 1])
    """

    def __init__(self, ragged: Optional[Iterable[Key]] = None, *, mode: str = "pack",
                 groups: Iterable[Sequence[Key]] = (), lengths: bool = False,
                 mask: bool = False,
                 dtype: Union[None, torch.dtype, Dict[Key, torch.dtype]] = None,
                 enforce_sorted: bool = False, batch_first: bool = True,
                 padding_value: Union[int, float] = 0, padding_side: str = "right",
                 pad_to_multiple_of: Optional[int] = None, pin_memory: bool = False,
                 shared_memory: Optional[bool] = None, one_block: bool = True):
        if mode not in ("pack", "pad"):
            raise ValueError(f"mode must be 'pack' or 'pad', got {mode!r}")
        if mask and mode != "pad":
            raise ValueError("mask=True needs mode='pad'")
        check_padding_side(padding_side)
        self.ragged = None if ragged is None else tuple(ragged)
        self.mode = mode
        self.groups = tuple(tuple(g) for g in groups)
        self.lengths = lengths
        self.mask = mask
        self.dtype = dtype
        self.enforce_sorted = enforce_sorted
        self.batch_first = batch_first
        self.padding_value = padding_value
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pin_memory = pin_memory
        self.shared_memory = shared_memory
        self.one_block = one_block

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    # -- structure -----------------------------------------------------------------

    def _fields_of(self, samples: Sequence[Any]) -> Tuple[str, List[Key], Dict[Key, list]]:
        """The sample structure, its field keys and the batch's columns (key -> values);
        every sample must share the structure of sample 0."""
        first = samples[0]
        keys: List[Key]
        if _is_sequence_sample(first):
            kind, keys = "bare", [None]
        elif isinstance(first, Mapping):
            kind, keys = "dict", list(first.keys())
        elif dataclasses.is_dataclass(first) and not isinstance(first, type):
            kind, keys = "dataclass", [f.name for f in dataclasses.fields(first)]
        elif isinstance(first, tuple) and hasattr(first, "_fields"):
            kind, keys = "namedtuple", list(range(len(first)))
        elif isinstance(first, (tuple, list)):
            kind, keys = "tuple", list(range(len(first)))
        else:
            raise TypeError(
                f"sample 0 is a {type(first).__name__}; expected a tensor, array, list of "
                "numbers, tuple/list of fields, namedtuple, dataclass or dict")
        if kind in ("tuple", "namedtuple"):
            cols = _core.split_columns(samples, len(keys))    # checks type and size too
            if isinstance(cols, tuple):
                self._raise_structure_error(samples, kind, first, keys)
            return kind, keys, dict(zip(keys, cols))
        if not self._same_structure(samples, kind, first, keys):
            self._raise_structure_error(samples, kind, first, keys)
        if kind == "bare":
            return kind, keys, {None: list(samples)}
        if kind == "dataclass":
            return kind, keys, {k: list(map(attrgetter(str(k)), samples)) for k in keys}
        return kind, keys, {k: list(map(itemgetter(k), samples)) for k in keys}

    @staticmethod
    def _same_structure(samples: Sequence[Any], kind: str, first: Any, keys: list) -> bool:
        """Fast check (C-level loops) that every sample is shaped like the first."""
        if kind == "bare":
            return all(map(_is_sequence_sample, samples))
        if len(set(map(type, samples))) != 1:
            return False
        if kind == "dict":          # same keys, any order (fields are read by key)
            first_keys = first.keys()
            return all(s.keys() == first_keys for s in samples)
        return True

    @staticmethod
    def _raise_structure_error(samples: Sequence[Any], kind: str, first: Any,
                               keys: list) -> None:
        """Name the first sample whose structure differs from sample 0's."""
        for i, s in enumerate(samples):
            if kind == "bare":
                if not _is_sequence_sample(s):
                    raise TypeError(f"sample {i} is a {type(s).__name__}, but sample 0 is "
                                    "a sequence: every sample must have the same structure")
            elif type(s) is not type(first):
                raise TypeError(f"sample {i} is a {type(s).__name__}, but sample 0 is a "
                                f"{type(first).__name__}: every sample must have the same "
                                "structure")
            elif kind == "dict" and set(s.keys()) != set(keys):
                raise ValueError(f"sample {i} has keys {sorted(map(str, s.keys()))}, but "
                                 f"sample 0 has {sorted(map(str, keys))}")
            elif kind in ("tuple", "namedtuple") and len(s) != len(keys):
                raise ValueError(f"sample {i} has {len(s)} fields, but sample 0 has "
                                 f"{len(keys)}")
        raise AssertionError("unreachable: structures differ but no sample was found")

    def _ragged_keys(self, columns: Dict[Key, list], kind: str, keys: List[Key]) -> List[Key]:
        if kind == "bare":
            return [None]
        if self.ragged is not None:
            unknown = [k for k in self.ragged if k not in keys]
            if unknown:
                raise KeyError(f"ragged fields {unknown} are not in the samples' fields "
                               f"{keys}")
            return [k for k in keys if k in self.ragged]
        return [k for k in keys if _looks_ragged(columns[k][0])]

    def _dtype_for(self, key: Key) -> Optional[torch.dtype]:
        if isinstance(self.dtype, Mapping):
            return self.dtype.get(key)
        return self.dtype

    # -- collation -----------------------------------------------------------------

    def __call__(self, samples: Sequence[Any]):
        if not isinstance(samples, (list, tuple)):
            samples = list(samples)
        if len(samples) == 0:
            raise ValueError("cannot collate an empty batch")
        kind, keys, columns = self._fields_of(samples)
        ragged = self._ragged_keys(columns, kind, keys)
        fields: Dict[Key, _Field] = {}
        for key in ragged:
            try:
                plan = plan_batch(columns[key], enforce_sorted=self.enforce_sorted,
                                  dtype=self._dtype_for(key), sort=self.mode == "pack")
            except (ValueError, TypeError, OverflowError) as e:
                if kind == "bare":
                    raise
                raise type(e)(f"field {key!r}: {e}") from e
            field = _Field(key, plan)
            if self.mode == "pad":
                field.T = padded_length(plan, self.pad_to_multiple_of)
            fields[key] = field
        self._check_groups(fields)
        fixed = {k: self._collate_fixed(columns[k], k)
                 for k in keys if k not in fields}
        out = self._write(fields, fixed)
        return self._assemble(samples[0], kind, keys, fields, out)

    def _check_groups(self, fields: Dict[Key, _Field]) -> None:
        for group in self.groups:
            missing = [k for k in group if k not in fields]
            if missing:
                raise KeyError(f"group {group}: fields {missing} are not ragged fields of "
                               "the samples")
            base = fields[group[0]].plan.lengths
            for k in group[1:]:
                other = fields[k].plan.lengths
                bad = np.flatnonzero(base != other)
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(
                        f"sample {i}: field {k!r} has length {int(other[i])} but field "
                        f"{group[0]!r} has length {int(base[i])}; fields of group {group} "
                        "must have equal lengths")

    @staticmethod
    def _collate_fixed(column: list, key: Key) -> Any:
        """A non-ragged field, like default_collate (allocated plainly; _write copies
        tensors into the batch's block)."""
        first = column[0]
        try:
            numbers = _core.exact_numbers(column)  # all ints -> int64, floats -> float64
            if numbers is not None:
                return torch.from_numpy(numbers)
            if isinstance(first, (bool, int, float)):
                return torch.tensor(column)     # mixed numbers: torch.tensor's inference
            if isinstance(first, torch.Tensor) and not first.requires_grad:
                return torch.stack(column)
            if isinstance(first, (np.ndarray, np.number)) and first.dtype.kind in "biufc":
                return torch.from_numpy(np.stack(column))
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise type(e)(f"field {key!r}: {e}") from e
        return default_collate(column)   # strings, nested structures...

    def _where(self) -> str:
        if self.pin_memory:
            return "pinned"
        shared = self.shared_memory
        if shared is None:
            shared = get_worker_info() is not None
        return "shared" if shared else "plain"

    def _write(self, fields: Dict[Key, _Field], fixed: Dict[Key, Any]) -> Dict:
        """Allocate every output tensor of the batch in one block and fill it."""
        specs: List[Tuple[Tuple[int, ...], torch.dtype]] = []
        names: List[Tuple[Key, str]] = []

        def want(key, what, shape, dtype):
            names.append((key, what))
            specs.append((tuple(shape), dtype))

        # fields whose data comes from torch ops (autograd, CUDA) stay outside the block
        host_fields = {k for k, f in fields.items() if f.plan.flat is None}
        for key, f in fields.items():
            p = f.plan
            B = len(p.lengths)
            if key in host_fields:
                if self.mode == "pack":
                    want(key, "data", p.shape, p.dtype)
                else:
                    want(key, "data", padded_shape(p, f.T, self.batch_first), p.dtype)
            if self.mode == "pack":
                want(key, "batch_sizes", p.batch_sizes.shape, torch.int64)
                if p.sorted_indices is not None and key in host_fields:
                    want(key, "sorted_indices", (B,), torch.int64)
                    want(key, "unsorted_indices", (B,), torch.int64)
            if self.lengths:
                want(key, "lengths", (B,), torch.int64)
            if self.mask:
                want(key, "mask", (B, f.T) if self.batch_first else (f.T, B), torch.bool)
        for key, value in fixed.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                want(key, "fixed", value.shape, value.dtype)
        views = _arena(specs, self._where(), self.one_block)
        out: Dict[Tuple[Key, str], Any] = dict(zip(names, views))
        for key, f in fields.items():
            p = f.plan
            if key in host_fields:
                if self.mode == "pack":
                    write_plan(p, out[key, "data"], _trusted=True)
                else:
                    write_padded(p, out[key, "data"], batch_first=self.batch_first,
                                 padding_value=self.padding_value,
                                 padding_side=self.padding_side)
            elif self.mode == "pack":
                out[key, "data"] = packed_by_torch(p)
            else:
                out[key, "data"] = padded_by_torch(p, f.T, self.batch_first,
                                                   self.padding_value,
                                                   self.padding_side == "left")
            if self.mode == "pack":
                _core.copy_array(out[key, "batch_sizes"].data_ptr(), p.batch_sizes)
                si, ui = p.sorted_indices, p.unsorted_indices
                if (key, "sorted_indices") in out and si is not None and ui is not None:
                    _core.copy_array(out[key, "sorted_indices"].data_ptr(), si)
                    _core.copy_array(out[key, "unsorted_indices"].data_ptr(), ui)
            if self.lengths:
                _core.copy_array(out[key, "lengths"].data_ptr(), p.lengths)
            if self.mask:
                steps = torch.arange(f.T)
                lens = torch.from_numpy(p.lengths).unsqueeze(1)
                m = steps >= f.T - lens if self.padding_side == "left" else steps < lens
                out[key, "mask"].copy_(m if self.batch_first else m.t())
        for key, value in fixed.items():
            if (key, "fixed") in out:
                out[key, "fixed"].copy_(value)
            else:
                out[key, "fixed"] = value
        return out

    def _ragged_value(self, key: Key, f: _Field, out: Dict) -> Any:
        if self.mode == "pad":
            return out[key, "data"]
        if (key, "sorted_indices") in out or f.plan.sorted_indices is None:
            return PackedSequence._make((out[key, "data"], out[key, "batch_sizes"],
                                         out.get((key, "sorted_indices")),
                                         out.get((key, "unsorted_indices"))))
        # torch path (autograd / CUDA): indices on the data's device
        packed = wrap_packed(out[key, "data"], f.plan)
        return PackedSequence._make((packed.data, out[key, "batch_sizes"],
                                     packed.sorted_indices, packed.unsorted_indices))

    def _assemble(self, first: Any, kind: str, keys: List[Key], fields: Dict[Key, _Field],
                  out: Dict) -> Any:
        values = {k: (self._ragged_value(k, fields[k], out) if k in fields
                      else out[k, "fixed"]) for k in keys}
        extras = [(k, what) for what in ("lengths", "mask") for k in fields
                  if (k, what) in out]
        if kind == "dict":
            batch = {k: values[k] for k in keys}
            for k, what in extras:
                batch[f"{k}_{what}"] = out[k, what]
            return batch
        if kind == "bare":
            record = values[None]
        elif kind == "tuple":
            record = tuple(values[k] for k in keys)
            if not extras:
                return record if isinstance(first, tuple) else list(record)
            return record + tuple(out[k, what] for k, what in extras)
        elif kind == "namedtuple":
            record = type(first)(*(values[k] for k in keys))
        else:
            record = dataclasses.replace(first, **{str(k): v for k, v in values.items()})
        if not extras:
            return record
        return (record,) + tuple(out[k, what] for k, what in extras)


packed_collate = PackedCollate()
"""Ready collate_fn: ragged fields (auto-detected) become PackedSequences."""

padded_collate = PackedCollate(mode="pad", lengths=True)
"""Ready collate_fn: ragged fields become batch-first padded tensors, with lengths."""


def to_device(batch: Any, device: Union[str, torch.device], non_blocking: bool = True) -> Any:
    """Move a nested batch to ``device``: tensors, PackedSequences (``batch_sizes`` stays
    on the CPU, as ``nn.LSTM`` requires), dicts, lists, tuples, namedtuples, dataclasses.

    With pinned host memory (``DataLoader(pin_memory=True)`` or
    ``PackedCollate(pin_memory=True)``) and ``non_blocking=True`` the copies overlap
    with compute.

    Examples
    --------
    >>> import torch
    >>> from fastcollate import pack, to_device
    >>> batch = {"x": pack([[1, 2], [3]]), "y": torch.tensor([0, 1])}
    >>> moved = to_device(batch, "cpu")
    >>> moved["x"].batch_sizes.device.type, moved["y"].tolist()
    ('cpu', [0, 1])
    """
    if isinstance(batch, PackedSequence):
        move = (lambda t: None if t is None else t.to(device, non_blocking=non_blocking))
        return PackedSequence._make((move(batch.data), batch.batch_sizes,
                                     move(batch.sorted_indices),
                                     move(batch.unsorted_indices)))
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        moved = {k: to_device(v, device, non_blocking) for k, v in batch.items()}
        return moved if type(batch) is dict else cast(Any, type(batch))(moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{
            f.name: to_device(getattr(batch, f.name), device, non_blocking)
            for f in dataclasses.fields(batch)})
    return batch
