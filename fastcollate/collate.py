"""DataLoader collate functions that emit ready PackedSequence (or padded) batches.

``PackedCollate`` turns a list of samples into a batch that mirrors the sample's
structure: ragged fields become ``PackedSequence`` (or padded tensors), the other fields
are collated like ``torch.utils.data.default_collate`` (in input order). Inside a
DataLoader worker every tensor of a batch is a view into one shared-memory block, so
the hand-over to the main process costs one storage instead of one per tensor.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from operator import attrgetter, itemgetter
from collections.abc import Mapping, MutableMapping, MutableSequence
from collections.abc import Sequence as SequenceABC
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import get_worker_info

from . import _core
from .packing import (_NP_TO_TORCH, _TORCH_TO_NP, Replan, Plan, new_output, packed_by_torch,
                      packed_in_one_call, plan_batch, torch_functions_off, wrap_arrays,
                      wrap_packed, write_plan)
from .store import RaggedBatch, StoreBatch
from .padding import (check_multiple, check_padding_side, padded_by_torch, padded_length,
                      padded_shape, write_padded)
from .flat import check_collate_flat, flat_options_for, flat_specs, plan_flat, write_flat_field

__all__ = ["PackedCollate", "packed_collate", "padded_collate", "to_device"]

_ALIGN = 64
Key = Hashable


class _ReplanField(Exception):
    """Internal: the deferred plan of field ``key`` did not hold (int-looking lists
    held other numbers, small tensors of mixed dtypes...): plan it again."""

    def __init__(self, key: Any):
        super().__init__(key)
        self.key = key


_ARRAY_TYPES = frozenset((torch.Tensor, np.ndarray))
# option values that are not dicts of fields, checked before the slower Mapping ABC
_PLAIN_OPTIONS = frozenset((bool, int, float, type(None), torch.dtype))


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


_PY_NUMBERS = (bool, int, float, complex)
_NUMBERS = (bool, int, float, complex, np.bool_, np.number)
_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1


def _as_keys(ragged: Any) -> Optional[Tuple[Key, ...]]:
    """``ragged=``: None, one key (a str, bytes or int is one key, not an iterable of
    them) or an iterable of keys."""
    if ragged is None:
        return None
    if isinstance(ragged, (bool, np.bool_)):
        raise TypeError(f"ragged must be a key or an iterable of keys, got {ragged!r}")
    if isinstance(ragged, (str, bytes, int, np.integer)):
        return (ragged,)
    try:
        return tuple(ragged)
    except TypeError:
        raise TypeError("ragged must be a key or an iterable of keys, got a "
                        f"{type(ragged).__name__}") from None


def _as_groups(groups: Any) -> Tuple[Tuple[Key, ...], ...]:
    """``groups=``: an iterable of non-empty tuples (or lists...) of keys."""
    usage = "groups must be an iterable of tuples of keys, e.g. groups=[('x', 'y')]"
    if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Iterable):
        raise TypeError(f"{usage}; got a {type(groups).__name__}")
    groups = list(groups)
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, (str, bytes)) or not isinstance(g, Iterable) or isinstance(
                g, Mapping):
            if len(groups) > 1 and not any(
                    isinstance(h, Iterable) and not isinstance(h, (str, bytes))
                    for h in groups):       # one flat group: say how to nest it
                raise TypeError(f"{usage}; for one group pass groups=[{tuple(groups)!r}]")
            what = f"the str {g!r}" if isinstance(g, (str, bytes)) else f"a {type(g).__name__}"
            raise TypeError(f"groups: group {i} is {what}; {usage} (a group of one key "
                            f"is a 1-tuple: ({g!r},))")
        g = tuple(g)
        if not g:
            raise ValueError(f"groups: group {i} is empty; a group names the fields that "
                             "must have equal lengths")
        out.append(g)
    return tuple(out)


def _check_dtype_option(dtype: Any) -> None:
    values = dtype.values() if isinstance(dtype, Mapping) else [dtype]
    for v in values:
        if v is not None and not isinstance(v, torch.dtype):
            raise TypeError("dtype must be a torch.dtype or a dict of key -> torch.dtype, "
                            f"got {v!r}")


def _check_pad_options(padding_value: Any, pad_to_multiple_of: Any) -> Optional[int]:
    """The padding options' types (their fit to the data's dtype is checked per batch);
    returns ``pad_to_multiple_of`` as an int."""
    values = padding_value.items() if isinstance(padding_value, Mapping) else [(None, padding_value)]
    for key, value in values:
        given = value
        if isinstance(value, torch.Tensor) and value.dim() == 0:
            value = value.item()
        if not isinstance(value, _NUMBERS):
            where = "" if key is None else f"[{key!r}]"
            raise TypeError(f"padding_value{where} must be a number, got "
                            f"{type(given).__name__} (padding_value is a number or a dict "
                            "of field -> number)")
    return check_multiple(pad_to_multiple_of)


def _check_names_option(what: str, value: Any) -> None:
    """``lengths=``/``mask=``: a bool, or a dict of ragged field -> name of the output
    key (dict samples), e.g. ``mask={"input_ids": "attention_mask"}``."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{what}={{}} names no field; pass {what}=False for none")
        for k, name in value.items():     # (one key made twice: _check_extra_keys)
            if not isinstance(name, str):
                raise TypeError(f"{what}[{k!r}] must be a str (the output key), got "
                                f"{type(name).__name__}")
    elif not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool or a dict of field -> output key, got "
                        f"{type(value).__name__}")


def _fixed_kind(t: type) -> str:
    """How default_collate treats a value of type ``t`` in a non-ragged field."""
    if issubclass(t, torch.Tensor):
        return "tensor"
    if issubclass(t, (np.ndarray,) + _NUMBERS):
        return "numeric"
    if issubclass(t, (str, bytes)):
        return "string"
    if issubclass(t, Mapping):
        return "mapping"
    if issubclass(t, tuple) and hasattr(t, "_fields"):
        return "namedtuple"
    if issubclass(t, SequenceABC):
        return "sequence"
    return "other"


def _collate_numeric(column: Sequence[Any], where: str, types: set) -> torch.Tensor:
    """Numbers, NumPy scalars and arrays, stacked. Python numbers alone: bool if all
    are bools, else complex128 if any is complex, float64 if any is a float, int64
    otherwise (default_collate takes the dtype from sample 0 alone: [1, 2.5] would be
    float32, [2.5, 1] float64). With NumPy values, NumPy's promotion of the values as
    arrays (Python ints as int64, floats as float64)."""
    if all(issubclass(t, _PY_NUMBERS) and not issubclass(t, np.generic) for t in types):
        if all(issubclass(t, bool) for t in types):
            dtype = torch.bool
        elif any(issubclass(t, complex) for t in types):
            dtype = torch.complex128
        elif any(issubclass(t, float) for t in types):
            dtype = torch.float64
        else:
            dtype = torch.int64
        try:
            return torch.tensor(column, dtype=dtype)
        except (OverflowError, RuntimeError, ValueError, TypeError) as e:
            for i, v in enumerate(column):
                try:
                    torch.tensor(v, dtype=dtype)
                except (OverflowError, RuntimeError, ValueError, TypeError):
                    raise OverflowError(f"field {where}: sample {i}: value {v!r} does not "
                                        f"fit {dtype}") from e
            raise ValueError(f"field {where}: {e}") from e
    arrays: Sequence[Any] = column
    if not all(issubclass(t, (np.ndarray, np.generic)) for t in types):
        arrays = []                    # Python ints as int64 (NumPy: uint64, floats...)
        for i, v in enumerate(column):
            if isinstance(v, int) and not isinstance(v, (bool, np.generic)):
                if not _INT64_MIN <= v <= _INT64_MAX:
                    raise OverflowError(f"field {where}: sample {i}: value {v!r} does "
                                        "not fit int64")
                v = np.int64(v)
            arrays.append(v)
    try:
        out = np.stack(arrays)
    except ValueError as e:
        shape = np.shape(arrays[0])
        j = next((j for j, a in enumerate(arrays) if np.shape(a) != shape), None)
        if j is None:
            raise ValueError(f"field {where}: {e}") from e
        raise ValueError(f"field {where}: sample {j} has shape {np.shape(arrays[j])}, "
                         f"but sample 0 has shape {shape}") from e
    if out.dtype.kind not in "biufc":
        dtypes = [np.asarray(a).dtype for a in arrays]
        j = next((j for j, d in enumerate(dtypes) if d.kind not in "biufc"), 0)
        raise TypeError(f"field {where}: sample {j} has dtype {dtypes[j]}; a non-ragged "
                        "field of arrays must hold numbers")
    if out.dtype.kind in "fc":         # int64 with uint64: NumPy rounds to float64
        found = {getattr(a, "dtype", None) for a in arrays}
        if all(d is not None and d.kind in "biu" for d in found):
            kinds = " and ".join(sorted(map(str, found)))
            raise TypeError(f"field {where}: samples mix {kinds}, which have no common "
                            "integer dtype")
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(out)
    except TypeError as e:
        raise TypeError(f"field {where}: {e}") from e


def _collate_fixed(column: Sequence[Any], where: str) -> Any:
    """A non-ragged field (``where`` names it in errors), collated like default_collate:
    numbers and arrays into one tensor, tensors stacked, strings kept as a list, dicts,
    namedtuples and sequences field by field. Every sample must hold the same kind of
    value (same keys, same length) as sample 0, else an error naming the sample."""
    numbers = _core.exact_numbers(column)    # all ints -> int64, all floats -> float64
    if numbers is not None:
        return torch.from_numpy(numbers)
    first = column[0]
    types = set(map(type, column))
    kinds = {t: _fixed_kind(t) for t in types}
    kind = kinds[type(first)]
    bad = -1                           # the first sample that does not fit sample 0
    if kind == "other":
        bad = 0
    elif kind == "namedtuple" and len(types) > 1:
        bad = next(i for i, v in enumerate(column) if type(v) is not type(first))
    elif len(set(kinds.values())) > 1:
        bad = next(i for i, v in enumerate(column) if kinds[type(v)] != kind)
    if bad >= 0:
        detail = (f", but sample 0 is a {type(first).__name__}: every sample must hold "
                  "the same kind of value" if bad else
                  "; a non-ragged field must hold numbers, tensors, arrays, strings, dicts "
                  "or lists (as for default_collate)")
        raise TypeError(f"field {where}: sample {bad} is a {type(column[bad]).__name__}"
                        f"{detail}")
    if kind == "numeric":
        return _collate_numeric(column, where, types)
    if kind == "tensor":
        try:
            return torch.stack(cast(Any, column))
        except RuntimeError as e:
            for i, t in enumerate(column):
                if t.shape != first.shape:
                    raise ValueError(f"field {where}: sample {i} has shape "
                                     f"{tuple(t.shape)}, but sample 0 has shape "
                                     f"{tuple(first.shape)}") from e
                if t.device != first.device:
                    raise ValueError(f"field {where}: sample {i} is on {t.device}, but "
                                     f"sample 0 is on {first.device}") from e
            raise ValueError(f"field {where}: {e}") from e
    if kind == "string":
        return column                  # as default_collate: the batch's own list/tuple
    if kind == "mapping":
        keys = first.keys()
        for i, d in enumerate(column):
            if d.keys() != keys:
                raise ValueError(f"field {where}: sample {i} has keys "
                                 f"{sorted(map(str, d.keys()))}, but sample 0 has "
                                 f"{sorted(map(str, keys))}")
        values = {k: _collate_fixed([d[k] for d in column], f"{where}[{k!r}]")
                  for k in first}
        try:                           # the mapping type, as default_collate does
            if isinstance(first, MutableMapping):
                clone = copy.copy(first)
                clone.update(values)
                return clone
            return type(first)(values)
        except TypeError:
            return values
    n = len(first)
    for i, v in enumerate(column):
        if len(v) != n:
            raise ValueError(f"field {where}: sample {i} has {len(v)} items, but sample 0 "
                             f"has {n}")
    items = [_collate_fixed(col, f"{where}[{j}]")
             for j, col in enumerate(zip(*column))]
    if kind == "namedtuple":
        return type(first)(*items)
    if isinstance(first, tuple):
        return items                   # default_collate's backward compatibility
    try:
        if isinstance(first, MutableSequence):
            seq = copy.copy(first)
            for j, item in enumerate(items):
                seq[j] = item
            return seq
        return type(first)(items)
    except TypeError:
        return items


def _rebuild_dataclass(record: Any, values: Dict[str, Any]) -> Any:
    """``record`` with its fields set to ``values``: ``dataclasses.replace`` for the
    ``init`` fields, then the ``init=False`` ones set directly (replace refuses them)."""
    fields = dataclasses.fields(record)
    try:
        out = dataclasses.replace(record, **{f.name: values[f.name] for f in fields
                                             if f.init})
    except Exception as e:
        raise TypeError(f"cannot build the batch as a {type(record).__name__}: its "
                        f"__init__ refused the batched fields ({type(e).__name__}: {e})"
                        ) from e
    for f in fields:
        if not f.init:
            object.__setattr__(out, f.name, values[f.name])   # frozen dataclasses too
    return out


def _alloc(nbytes: int, where: str) -> torch.Tensor:
    """A uint8 tensor of ``nbytes`` in shared, pinned or ordinary memory."""
    if where == "shared":
        return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
    return new_output((nbytes,), torch.uint8, pin_memory=where == "pinned")


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
    if where == "plain":
        return _plain_views(_core.new_block(total), starts, sizes, specs)
    block = _alloc(total, where)
    # 1-D int64 tensors (batch_sizes, indices, lengths, labels) are slices of one int64
    # view: one op each instead of three.
    words = block.view(torch.int64)
    return [words[start // 8:start // 8 + shape[0]] if dtype == torch.int64 and len(shape) == 1
            else block[start:start + n].view(dtype).view(shape)
            for start, n, (shape, dtype) in zip(starts, sizes, specs)]


def _plain_views(block: np.ndarray, starts: List[int], sizes: List[int],
                 specs: List[Tuple[Tuple[int, ...], torch.dtype]]) -> List[torch.Tensor]:
    """:func:`_arena`'s views of a block in ordinary memory, made as NumPy views and
    wrapped by ``torch.from_numpy`` (~0.8 us each; torch's slice and two views cost
    ~5 us). Dtypes NumPy lacks (bfloat16) are viewed by torch."""
    words = block.view(np.int64)
    f = torch.from_numpy
    out = []
    for start, n, (shape, dtype) in zip(starts, sizes, specs):
        if dtype == torch.int64 and len(shape) == 1:
            out.append(f(words[start // 8:start // 8 + shape[0]]))
            continue
        np_dtype = _TORCH_TO_NP.get(dtype)
        if np_dtype is None:
            out.append(f(block[start:start + n]).view(dtype).view(shape))
        else:
            out.append(f(block[start:start + n].view(np_dtype).reshape(shape)))
    return out


def _may_have_one_length(column: Sequence[Any]) -> bool:
    """Whether the arrays/tensors of a column may all have one length (then the general
    path decides whether to stack them); False only when they surely do not. Three
    samples' lengths tell most ragged batches apart; only when they agree is every
    length read: at C speed for exact tensors and arrays (``_core.one_leading_length``,
    ~70 ns per tensor against ~400 for ``len()``), else with ``len()``."""
    try:
        one = _core.one_leading_length(column, torch.Tensor)   # tensors/arrays: C speed
        if one is not None:
            return one
        if len({len(column[0]), len(column[len(column) // 2]), len(column[-1])}) > 1:
            return False
        return len(set(map(len, column))) == 1
    except Exception:   # a 0-d sample, a len() or shape that raises (nested tensors):
        return True     # the general path names it


def _rows_of(x: Any) -> Tuple[Optional[torch.dtype], Tuple[int, ...]]:
    """The dtype and row of a tensor/array sample, as its plan would have them."""
    if isinstance(x, np.ndarray):
        return _NP_TO_TORCH.get(x.dtype), tuple(x.shape[1:])
    return x.dtype, tuple(x.shape[1:])


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
    With ``ragged=`` given, a tuple/list sample is a record of fields even when it
    holds only numbers.

    Parameters
    ----------
    ragged : key or iterable of keys, optional
        Fields to pack: positions for tuple samples, keys for dicts, names for
        dataclasses. A str, bytes or int is one key (``ragged="tokens"``, ``ragged=0``).
        Given, exactly these fields are ragged. Without it, a field is ragged if a
        per-field option names it (``dtype``, ``padding_value``, ``lengths`` or
        ``mask`` as a dict, ``groups``), if sample 0 holds a list/tuple there, or if
        it holds tensors/arrays with >= 1 dimension whose leading sizes differ within
        the batch; tensors/arrays of one shape (an image, a 2-vector label) are
        stacked like ``default_collate`` does. So a tensor field whose lengths may all
        be equal in a batch (bucketing, a batch of one) must be declared, else that
        batch stacks it (once a collate has seen a field ragged it keeps it ragged; a
        ``UserWarning`` says so when a stacked field turns ragged). A bare sequence
        sample is always ragged.
    mode : {"pack", "pad", "flat"}
        Ragged fields become ``PackedSequence`` (default), padded tensors, or
        :class:`fastcollate.FlatSequence` (concatenated in input order, with
        ``cu_seqlens`` and ``max_seqlen``: the varlen layout of attention models).
    flat : dict, optional
        Flat mode: the options of :func:`fastcollate.flatten` (``offsets_dtype``,
        ``position_ids``, ``segment_ids``, ``labels``, ``ignore_index``, ``nested``)
        for every ragged field, or a dict of field key -> such options (fields it
        does not name get the defaults), e.g. ``{"input_ids": {"labels": "shift"}}``.
    groups : iterable of tuples of keys
        Fields that must have equal lengths in each sample (inputs and per-step
        targets), e.g. ``groups=[("x", "y")]``. Fields of equal lengths get the same
        permutation anyway (the sort is stable and deterministic), so
        ``outputs.data[i]`` lines up with ``targets.data[i]``; a group adds the check,
        naming the sample that breaks it. An empty group, a str or a flat
        ``("x", "y")`` is refused (``TypeError``/``ValueError``); a one-key group
        ``("x",)`` only checks that the field is ragged.
    lengths : bool or dict of key -> str
        Add each ragged field's lengths (CPU int64, input order). A dict (dict
        samples) adds them only for the fields it names, under the keys it gives:
        ``lengths={"input_ids": "length"}``.
    mask : bool or dict of key -> str
        Pad mode: add a boolean ``(B, T)`` (or ``(T, B)``) mask, True on real steps.
        A dict names the output keys, e.g. ``mask={"input_ids": "attention_mask"}``.
    dtype : torch.dtype or dict of key -> dtype
        Cast ragged fields. A dict naming a field the samples lack (``KeyError``) or a
        non-ragged field (``ValueError``) is an error, not ignored.
    enforce_sorted : bool
        Samples come sorted by length, decreasing (pack mode; see ``pack``).
    batch_first, padding_value, padding_side, pad_to_multiple_of :
        Pad mode options, as in :func:`fastcollate.pad`. ``padding_value`` may be a
        dict of field -> value (fields it omits pad with 0), e.g. Hugging Face's
        ``{"input_ids": pad_id, "labels": -100, "attention_mask": 0}``. A padding value
        that is not a number or a ``pad_to_multiple_of`` that is not a positive int is
        refused here, at construction. Every dict option (``dtype``, ``padding_value``,
        ``lengths``, ``mask``) naming a field the samples lack raises ``KeyError``, one
        naming a field that is not a sequence ``ValueError``: a typo is never ignored.
    pin_memory : bool
        Write the batch straight into page-locked memory (main-process loading; with
        workers, use ``DataLoader(pin_memory=True)`` instead).
    shared_memory : bool, optional
        Allocate the batch in shared memory. Default: only inside a DataLoader worker,
        where it saves the copy into shared memory on the way to the main process.
    one_block : bool, default True
        In shared or pinned memory, every tensor of the batch is a view of one
        allocation (one storage to share and hand over). ``False`` allocates each
        tensor separately, as ``default_collate`` does; it is there to measure the
        difference. In ordinary memory (the main process without ``pin_memory``), where
        one block saves nothing, the batch is made the cheapest way instead: a
        pack-mode batch whose ragged fields are plain arrays or small tensors (no
        ``dtype``) takes :func:`fastcollate.pack`'s one-call kernels field by field;
        otherwise only the written tensors share a block, and ``batch_sizes``, the
        indices and the lengths are fresh tensors of their own.

    Non-ragged fields are collated like ``default_collate`` (numbers and arrays into
    one tensor, tensors stacked, strings kept as a list, dicts/namedtuples/lists field
    by field), with two differences: Python numbers give ``bool`` (all bools),
    ``int64`` (ints), ``float64`` (any float) or ``complex128`` (any complex) whatever
    sample comes first (``default_collate`` makes ``[1, 2.5]`` float32 but ``[2.5, 1]``
    float64), and every sample must hold the same kind of value as sample 0 (same
    keys, same length, no tensor among numbers), else a ``TypeError``/``ValueError``
    naming the field and the sample; ints outside int64 raise ``OverflowError``.

    Extra outputs (``lengths``, ``mask``): for dict samples, keys ``"<key>_lengths"``
    and ``"<key>_mask"`` (``ValueError`` if such a key is already a field of the
    samples, or two fields, e.g. ``1`` and ``"1"``, would make the same key); otherwise
    the batch becomes a tuple with the lengths (one
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
                 shared_memory: Optional[bool] = None, one_block: bool = True,
                 flat: Optional[Dict[Any, Any]] = None):
        if mode not in ("pack", "pad", "flat"):
            raise ValueError(f"mode must be 'pack', 'pad' or 'flat', got {mode!r}")
        if flat is not None and mode != "flat":
            raise ValueError("flat= options need mode='flat'")
        if mask and mode != "pad":
            raise ValueError("mask=True needs mode='pad'")
        check_padding_side(padding_side)
        _check_dtype_option(dtype)
        _check_names_option("lengths", lengths)
        _check_names_option("mask", mask)
        pad_to_multiple_of = _check_pad_options(padding_value, pad_to_multiple_of)
        self.ragged = _as_keys(ragged)
        self.mode = mode
        self.groups = _as_groups(groups)
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
        self.flat = check_collate_flat(flat) if mode == "flat" else None
        # auto-detected tensor fields -> stacked in the last batch (for the warning
        # when one changes kind between batches)
        self._auto_kinds: Dict[Tuple[Key, Optional[torch.dtype], Tuple[int, ...]], bool] = {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    # -- structure -----------------------------------------------------------------

    def _fields_of(self, samples: Sequence[Any]) -> Tuple[str, List[Key], Dict[Key, list]]:
        """The sample structure, its field keys and the batch's columns (key -> values);
        every sample must share the structure of sample 0."""
        first = samples[0]
        keys: List[Key]
        if _is_sequence_sample(first) and not (self.ragged is not None
                                               and isinstance(first, (list, tuple))):
            # (with ragged= naming fields, a tuple of numbers is a record of fields)
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
        if type(first) is dict:     # exact dicts of one key set, split at C speed
            cols = _core.split_dicts(cast(list, samples), keys)   # (__call__'s copy)
            if cols is not None:
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
        if kind == "bare":     # (the common case at C speed: exact tensors and arrays)
            return set(map(type, samples)) <= _ARRAY_TYPES or all(
                map(_is_sequence_sample, samples))
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

    def _named(self) -> List[Tuple[str, Iterable[Key]]]:
        """The per-field options given as dicts, with the fields they name."""
        named: List[Tuple[str, Iterable[Key]]] = []
        for what in ("dtype", "padding_value", "lengths", "mask"):
            v = getattr(self, what)
            # (isinstance against the Mapping ABC costs ~1 us: the usual values first)
            if type(v) not in _PLAIN_OPTIONS and isinstance(v, Mapping):
                named.append((what, list(v)))
        return named

    def _ragged_keys(self, columns: Dict[Key, list], kind: str,
                     keys: List[Key]) -> Tuple[List[Key], List[Key]]:
        """The ragged fields, and those of them that were auto-detected as tensors or
        arrays: these are stacked instead when all their lengths are equal.

        A field is ragged if ``ragged=`` lists it; without ``ragged=``, if a per-field
        option names it (``dtype``/``padding_value``/``lengths``/``mask`` dicts,
        ``groups``), or if sample 0 holds a list/tuple, or a tensor/array with >= 1
        dimension whose leading sizes differ within the batch."""
        if kind == "bare":
            if self._named():
                what = self._named()[0][0]
                raise TypeError(f"{what}= is a dict of fields, but the samples are bare "
                                "sequences, which have no fields; pass one value")
            return [None], []
        if self.ragged is not None:
            unknown = [k for k in self.ragged if k not in keys]
            if unknown:
                raise KeyError(f"ragged fields {unknown} are not in the samples' fields "
                               f"{keys}")
            declared = set(self.ragged)
        else:
            declared = set()
        for what, named in self._named():
            unknown = [k for k in named if k not in keys]
            if unknown:
                raise KeyError(f"{what} names fields {unknown} that are not in the "
                               f"samples' fields {keys}")
            if what in ("lengths", "mask") and kind != "dict":
                raise TypeError(f"{what}= as a dict names output keys, which needs dict "
                                f"samples (these are {kind}s); pass {what}=True")
            for k in named:
                if self.ragged is not None and k not in declared:
                    raise ValueError(f"{what} names field {k!r}, which is not ragged: "
                                     f"ragged={list(self.ragged)!r} does not list it")
                if self.ragged is None and not _looks_ragged(columns[k][0]):
                    raise ValueError(f"{what} names field {k!r}, which is not ragged: "
                                     f"sample 0 holds a {type(columns[k][0]).__name__} "
                                     "there, not a sequence")
            if self.ragged is None:
                declared.update(named)
        if self.ragged is not None:
            return [k for k in keys if k in declared], []
        # grouped fields are ragged too (_check_groups names those that are not)
        declared.update(k for g in self.groups for k in g
                        if k in columns and _looks_ragged(columns[k][0]))
        ragged = [k for k in keys if k in declared or _looks_ragged(columns[k][0])]
        auto = [k for k in ragged if k not in declared
                and isinstance(columns[k][0], (torch.Tensor, np.ndarray))]
        return ragged, auto

    def _stacks(self, key: Key, plan: Plan) -> bool:
        """An auto-detected tensor/array field is stacked (as ``default_collate``
        does) when all its samples have one length, unless an earlier batch of this
        collate had it ragged (then it stays ragged). Warns when a stacked field
        becomes ragged, since the batch changes type."""
        lo, hi = plan.length_range
        return self._remember_kind(key, plan.dtype, plan.row,
                                   bool(len(plan.lengths)) and lo == hi, hi)

    def _stacked_before(self, key: Key, dtype: Optional[torch.dtype],
                        row: Tuple[int, ...]) -> Optional[bool]:
        # remembered per field and kind of rows: a shared collate (packed_collate) used
        # for another dataset does not carry one dataset's memory into the other
        return self._auto_kinds.get((key, dtype, row))

    def _remember_kind(self, key: Key, dtype: torch.dtype, row: Tuple[int, ...],
                       equal: bool, length: int) -> bool:
        """Whether the field is stacked in this batch (``equal``: all its samples have
        ``length``), remembered for the next one."""
        before = self._stacked_before(key, dtype, row)
        # once ragged, always ragged for this collate: a later batch whose lengths
        # happen to be equal (a batch of one, bucketed ties) keeps the field's type
        stacked = equal and before is not False
        self._auto_kinds[key, dtype, row] = stacked
        if before is not None and before != stacked:
            now = (f"all its samples have length {length} in this one, so it is "
                   "stacked like a fixed-shape field" if stacked else
                   "its lengths differ in this one, so it is ragged")
            warnings.warn(
                f"PackedCollate: field {key!r} was {'ragged' if stacked else 'stacked'} in "
                f"the previous batch, but {now}; pass ragged=[{key!r}, ...] to always "
                "treat it as ragged", UserWarning, stacklevel=5)
        return stacked

    def _wants(self, what: str, key: Key) -> bool:
        option = getattr(self, what)
        return key in option if isinstance(option, Mapping) else bool(option)

    def _extra_key(self, what: str, key: Key) -> str:
        option = getattr(self, what)
        return option[key] if isinstance(option, Mapping) else f"{key}_{what}"

    def _check_extra_keys(self, keys: List[Key], ragged: List[Key]) -> None:
        """The keys added to dict batches (``"<key>_lengths"``/``"<key>_mask"``, or the
        names given) must not be fields of the samples, nor be made twice (keys 1 and
        "1")."""
        taken = set(keys)
        made: Dict[str, Key] = {}
        for what in ("lengths", "mask"):
            for k in ragged:
                if not self._wants(what, k):
                    continue
                name = self._extra_key(what, k)
                if name in taken:
                    raise ValueError(f"{what}= adds the key {name!r} for field {k!r}, "
                                     f"but the samples already have a field {name!r}")
                if name in made:
                    raise ValueError(f"{what}= would add the key {name!r} for both "
                                     f"field {made[name]!r} and field {k!r}")
                made[name] = k

    def _flat_for(self, key: Key, fields: Dict[Key, Any]) -> Dict[str, Any]:
        return flat_options_for(cast(Dict[Any, Dict[str, Any]], self.flat), key, list(fields))

    def _dtype_for(self, key: Key) -> Optional[torch.dtype]:
        if isinstance(self.dtype, Mapping):
            return self.dtype.get(key)
        return self.dtype

    def _padding_for(self, key: Key) -> Any:
        if isinstance(self.padding_value, Mapping):
            return self.padding_value.get(key, 0)
        return self.padding_value

    # -- collation -----------------------------------------------------------------

    @torch_functions_off
    def __call__(self, samples: Sequence[Any]):
        # a private copy: whatever another thread (or a sample's own methods) does to
        # the caller's list, every sample stays referenced until the batch is written
        from_store = type(samples) is StoreBatch   # StoreDataset.__getitems__: columns
        samples = cast(Any, samples) if from_store else list(samples)
        if len(samples) == 0:
            raise ValueError("cannot collate an empty batch")
        one_call = not from_store and self._one_call_options()
        if (one_call and type(samples[0]) in _ARRAY_TYPES and not self.lengths
                and not self.groups and not self._named()):
            # bare arrays/tensors: the kernel checks every sample (exact type, dtype, row)
            try:
                arrays = packed_in_one_call(samples, self.enforce_sorted)
            except (ValueError, TypeError, OverflowError):
                arrays = None   # the general path raises it
            if arrays is not None:
                return wrap_arrays(arrays)
            one_call = False    # _one_call_batch would try the same column again
        kind, keys, columns = (cast(Any, samples).columns() if from_store else
                               self._fields_of(samples))
        ragged, auto = (
            (self._store_ragged_keys(columns, keys), []) if from_store else
            self._ragged_keys(columns, kind, keys))
        if one_call:
            batch = self._one_call_batch(samples[0], kind, keys, columns, ragged, auto)
            if batch is not None:
                return batch
        fields: Dict[Key, _Field] = {}
        for key in ragged:
            field = self._plan_field(columns[key], key, kind, defer=True)
            if key in auto and self._stacks(key, field.plan):
                continue
            fields[key] = field
        if kind == "dict" and (self.lengths or self.mask):
            self._check_extra_keys(keys, list(fields))
        self._check_groups({k: f.plan.lengths for k, f in fields.items()})
        fixed = ({k: columns[k] for k in keys if k not in fields} if from_store else
                 self._fixed(columns, keys, fields))
        while True:     # at most once more per ragged field: re-plans never defer
            try:
                out = self._write(fields, fixed)
                break
            except _ReplanField as e:   # lists of other numbers, mixed dtypes...
                key = e.key
            # planned again out of the except block: the first batch block is freed
            fields[key] = self._plan_field(columns[key], key, kind, defer=False)
            self._check_groups({k: f.plan.lengths for k, f in fields.items()})
        values = {k: (self._ragged_value(k, fields[k], out) if k in fields
                      else out[k, "fixed"]) for k in keys}
        extras = [(self._extra_key(what, k), out[k, what])
                  for what in ("lengths", "mask") for k in fields if (k, what) in out]
        return self._assemble(() if from_store else samples[0], kind, keys, values, extras)

    @staticmethod
    def _fixed(columns: Dict[Key, Any], keys: List[Key], ragged: Any) -> Dict[Key, Any]:
        """The non-ragged fields, collated like default_collate."""
        try:
            return {k: _collate_fixed(columns[k], repr(k)) for k in keys if k not in ragged}
        except RecursionError as e:    # a dict or list field that contains itself
            raise ValueError("a non-ragged field is nested too deeply (does a sample "
                             "contain itself?)") from e

    def _one_call_options(self) -> bool:
        """Whether the options allow the one-call path: pack mode without ``dtype``, in
        ordinary memory (shared or pinned memory wants the one block: one storage to
        hand over)."""
        return self.mode == "pack" and self.dtype is None and self._where() == "plain"

    def _one_call_batch(self, first: Any, kind: str, keys: List[Key],
                        columns: Dict[Key, list], ragged: List[Key],
                        auto: List[Key]) -> Any:
        """The batch, when every ragged field is packed by pack()'s one-call kernels
        (plain arrays, small tensors: scan, sort, allocation and scatter in one
        Cython call each, no plan, no batch block); None to take the general path.

        Only with :meth:`_one_call_options`; ``lengths`` (and ``groups``' checks) come
        from each packing's ``batch_sizes`` and ``unsorted_indices``
        (``_core.packed_lengths``). The general path takes any batch the
        kernels refuse, any error (it names the field and the sample) and an
        auto-detected field whose lengths are all equal (it stacks it, unless it was
        ragged before)."""
        if not all(type(columns[k][0]) in _ARRAY_TYPES for k in ragged):
            return None
        for key in auto:
            column = columns[key]
            if _may_have_one_length(column):
                try:            # (a nested tensor has no shape: the general path names it)
                    rows = _rows_of(column[0])
                except Exception:
                    return None
                if self._stacked_before(key, *rows) is not False:
                    return None
        packed: Dict[Key, PackedSequence] = {}
        lengths: Dict[Key, np.ndarray] = {}
        for key in ragged:
            column = columns[key]
            try:
                arrays = packed_in_one_call(column, self.enforce_sorted)
            except (ValueError, TypeError, OverflowError):
                return None
            if arrays is None:
                return None
            if self.lengths or self.groups:
                lengths[key] = _core.packed_lengths(arrays[1], arrays[3])
            p = packed[key] = cast(PackedSequence, wrap_arrays(arrays))
            if (key in auto and arrays[1][-1] == len(column)     # promoted: memo per dtype
                    and self._stacked_before(key, p.data.dtype, tuple(p.data.shape[1:]))
                    is not False):
                return None
        for key in auto:        # ragged in this batch (a flip from stacked warns)
            data = packed[key].data
            self._remember_kind(key, data.dtype, tuple(data.shape[1:]), False, 0)
        if kind == "dict" and self.lengths:
            self._check_extra_keys(keys, ragged)
        self._check_groups(lengths)
        values: Dict[Key, Any] = self._fixed(columns, keys, packed)
        values.update(packed)
        extras = [(self._extra_key("lengths", k), torch.from_numpy(lengths[k]))
                  for k in ragged if self._wants("lengths", k)]
        return self._assemble(first, kind, keys, values, extras)

    def _store_ragged_keys(self, columns: Dict[Key, Any], keys: List[Key]) -> List[Key]:
        """A store batch's ragged fields are its stores; ``ragged=`` must name them all."""
        ragged = [k for k in keys if isinstance(columns[k], RaggedBatch)]
        if self.ragged is not None and set(self.ragged) != set(ragged):
            raise ValueError(f"ragged={list(self.ragged)}, but the dataset's ragged fields "
                             f"(its stores) are {ragged}")
        return ragged

    def _plan_field(self, column: list, key: Key, kind: str, defer: bool) -> "_Field":
        """Plan one ragged field. Lists of ints are planned from their lengths and read
        straight into the batch block, large batches of small tensors are concatenated
        a chunk at a time into it (``defer``: no temporary the size of the data);
        ``_write`` raises ``_ReplanField`` if they are not what was planned (other
        numbers, mixed dtypes...)."""
        try:
            if self.mode == "flat":
                plan = plan_flat(column, self._dtype_for(key))
            else:
                plan = plan_batch(column, enforce_sorted=self.enforce_sorted,
                                  dtype=self._dtype_for(key), sort=self.mode == "pack",
                                  defer_ints=defer, defer_tensors=defer)
        except (ValueError, TypeError, OverflowError) as e:
            if kind == "bare":
                raise
            raise type(e)(f"field {key!r}: {e}") from e
        field = _Field(key, plan)
        if self.mode == "pad":
            field.T = padded_length(plan, self.pad_to_multiple_of)
        return field

    def _check_groups(self, lengths: Dict[Key, np.ndarray]) -> None:
        """Every group's fields (keys of ``lengths``: the ragged fields, each one's
        lengths in input order) have equal lengths in each sample."""
        for group in self.groups:
            missing = [k for k in group if k not in lengths]
            if missing:
                raise KeyError(f"group {group}: fields {missing} are not ragged fields of "
                               "the samples")
            base = lengths[group[0]]
            for k in group[1:]:
                other = lengths[k]
                bad = np.flatnonzero(base != other)
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(
                        f"sample {i}: field {k!r} has length {int(other[i])} but field "
                        f"{group[0]!r} has length {int(base[i])}; fields of group {group} "
                        "must have equal lengths")

    def _where(self) -> str:
        if self.pin_memory:
            return "pinned"
        shared = self.shared_memory
        if shared is None:
            shared = get_worker_info() is not None
        return "shared" if shared else "plain"

    def _write(self, fields: Dict[Key, _Field], fixed: Dict[Key, Any]) -> Dict:
        """Allocate every output tensor of the batch in one block and fill it.

        In ordinary memory, where one block saves nothing, only the written tensors
        (data, masks, flat outputs) are in the block: the plans' tables (batch sizes,
        indices, lengths: fresh arrays of this call) are wrapped zero-copy, and the
        fixed fields are the tensors their collation made."""
        where = self._where()
        tables = where != "plain" or self.flat is not None
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
            if self.flat is not None:
                for name, shape, dtype in flat_specs(p, self._flat_for(key, fields)):
                    want(key, name, shape, dtype)
            elif key in host_fields:
                if self.mode == "pack":
                    want(key, "data", p.shape, p.dtype)
                else:
                    want(key, "data", padded_shape(p, f.T, self.batch_first), p.dtype)
            if self._wants("mask", key):
                want(key, "mask", (B, f.T) if self.batch_first else (f.T, B), torch.bool)
            if not tables:
                continue
            if self.mode == "pack":
                want(key, "batch_sizes", p.batch_sizes.shape, torch.int64)
                if p.sorted_indices is not None and key in host_fields:
                    want(key, "sorted_indices", (B,), torch.int64)
                    want(key, "unsorted_indices", (B,), torch.int64)
            if self._wants("lengths", key):
                want(key, "lengths", (B,), torch.int64)
        for key, value in fixed.items():
            if tables and isinstance(value, torch.Tensor) and value.device.type == "cpu":
                want(key, "fixed", value.shape, value.dtype)
        views = _arena(specs, where, self.one_block)
        out: Dict[Tuple[Key, str], Any] = dict(zip(names, views))
        for key, f in fields.items():
            p = f.plan
            if self.flat is not None:
                opts = self._flat_for(key, fields)
                flat = write_flat_field(p, opts, {n: out[key, n]
                                                  for n, _, _ in flat_specs(p, opts)})
                out[key, "data"] = flat.nested() if opts["nested"] else flat
            elif key in host_fields:
                if self.mode == "pack":
                    try:
                        write_plan(p, out[key, "data"], _trusted=True)
                    except Replan:
                        raise _ReplanField(key) from None
                else:
                    try:
                        write_padded(p, out[key, "data"], batch_first=self.batch_first,
                                     padding_value=self._padding_for(key),
                                     padding_side=self.padding_side, _trusted=True)
                    except Replan:
                        raise _ReplanField(key) from None
            elif self.mode == "pack":
                out[key, "data"] = packed_by_torch(p)
            else:
                out[key, "data"] = padded_by_torch(p, f.T, self.batch_first,
                                                   self._padding_for(key),
                                                   self.padding_side == "left")
            si, ui = p.sorted_indices, p.unsorted_indices
            if not tables:
                if self.mode == "pack":
                    out[key, "batch_sizes"] = torch.from_numpy(p.batch_sizes)
                    if si is not None and ui is not None and key in host_fields:
                        out[key, "sorted_indices"] = torch.from_numpy(si)
                        out[key, "unsorted_indices"] = torch.from_numpy(ui)
                if self._wants("lengths", key):
                    out[key, "lengths"] = torch.from_numpy(p.lengths)
            elif self.mode == "pack":
                _core.copy_array(out[key, "batch_sizes"].data_ptr(), p.batch_sizes)
                if (key, "sorted_indices") in out and si is not None and ui is not None:
                    _core.copy_array(out[key, "sorted_indices"].data_ptr(), si)
                    _core.copy_array(out[key, "unsorted_indices"].data_ptr(), ui)
            if tables and (key, "lengths") in out:
                _core.copy_array(out[key, "lengths"].data_ptr(), p.lengths)
            if (key, "mask") in out:
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
        if self.flat is not None:
            return out[key, "data"]
        if (key, "sorted_indices") in out or f.plan.sorted_indices is None:
            return PackedSequence._make((out[key, "data"], out[key, "batch_sizes"],
                                         out.get((key, "sorted_indices")),
                                         out.get((key, "unsorted_indices"))))
        # torch path (autograd / CUDA): indices on the data's device
        packed = wrap_packed(out[key, "data"], f.plan)
        return PackedSequence._make((packed.data, out[key, "batch_sizes"],
                                     packed.sorted_indices, packed.unsorted_indices))

    @staticmethod
    def _assemble(first: Any, kind: str, keys: List[Key], values: Dict[Key, Any],
                  extras: List[Tuple[str, torch.Tensor]]) -> Any:
        """The batch in the samples' structure, from each field's batched value and the
        extra outputs (key for dict batches, tensor), appended in order."""
        if kind == "dict":
            batch = {k: values[k] for k in keys}
            for name, tensor in extras:
                batch[name] = tensor
            return batch
        if kind == "bare":
            record = values[None]
        elif kind == "tuple":
            record = tuple(values[k] for k in keys)
            if not extras:
                return record if isinstance(first, tuple) else list(record)
            return record + tuple(tensor for _, tensor in extras)
        elif kind == "namedtuple":
            record = type(first)(*(values[k] for k in keys))
        else:
            record = _rebuild_dataclass(first, {str(k): v for k, v in values.items()})
        if not extras:
            return record
        return (record,) + tuple(tensor for _, tensor in extras)


packed_collate = PackedCollate()
"""Ready collate_fn: ragged fields (auto-detected) become PackedSequences."""

padded_collate = PackedCollate(mode="pad", lengths=True)
"""Ready collate_fn: ragged fields become batch-first padded tensors, with lengths."""


def to_device(batch: Any, device: Union[str, torch.device], non_blocking: bool = True) -> Any:
    """Move a nested batch to ``device``: tensors, PackedSequences (``batch_sizes`` stays
    on the CPU, as ``nn.LSTM`` requires), dicts (any mapping type: ``defaultdict`` keeps
    its factory), lists, tuples, namedtuples, dataclasses (``init=False`` fields kept,
    ``__post_init__`` not run again). Other objects are returned as they are.

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
    return _moved(batch, device, non_blocking, 0)


_MISSING = object()


def _moved(batch: Any, device: Union[str, torch.device], non_blocking: bool,
           depth: int) -> Any:
    """``to_device``'s recursion: containers are rebuilt as a shallow copy of their own
    type (``defaultdict`` keeps its factory, a dataclass its ``init=False`` fields and
    no ``__post_init__`` runs again); what it does not know is returned as is."""
    if isinstance(batch, (torch.Tensor, PackedSequence)):
        # PackedSequence.to moves data and the indices and keeps batch_sizes on the CPU
        return cast(Any, batch).to(device, non_blocking=non_blocking)
    if isinstance(batch, (str, bytes)) or batch is None or isinstance(batch, _NUMBERS):
        return batch
    if depth > 64:
        raise ValueError("to_device: the batch is nested more than 64 levels deep (does "
                         "it contain itself?)")
    depth += 1
    if isinstance(batch, Mapping):
        moved = {k: _moved(v, device, non_blocking, depth) for k, v in batch.items()}
        if type(batch) is dict:
            return moved
        try:
            if isinstance(batch, MutableMapping):
                clone = copy.copy(batch)
                clone.update(moved)
                return clone
            return cast(Any, type(batch))(moved)
        except TypeError:
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_moved(v, device, non_blocking, depth) for v in batch))
    if isinstance(batch, (list, tuple)):
        items = [_moved(v, device, non_blocking, depth) for v in batch]
        try:
            return type(batch)(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        record = copy.copy(batch)
        for f in dataclasses.fields(batch):
            value = getattr(batch, f.name, _MISSING)   # an init=False field may be unset
            if value is not _MISSING:
                object.__setattr__(record, f.name, _moved(value, device, non_blocking, depth))
        return record
    return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        moved = {k: to_device(v, device, non_blocking) for k, v in batch.items()}
        return moved if type(batch) is dict else cast(Any, type(batch))(moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return _rebuild_dataclass(batch, {
            f.name: to_device(getattr(batch, f.name), device, non_blocking)
            for f in dataclasses.fields(batch)})
    return batch
