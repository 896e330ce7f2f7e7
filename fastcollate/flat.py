"""The flattened (varlen) layout: samples concatenated in input order, plus offsets.

What attention models consume instead of padding: flash-attention's varlen kernels take
the concatenated tokens with ``cu_seqlens`` (int32, ``B + 1``) and ``max_seqlen``;
Hugging Face's ``DataCollatorWithFlattening`` emits ``input_ids`` of shape
``(1, total)`` with ``position_ids`` restarting at 0 for every sample; a ``torch.nested``
jagged tensor is exactly values + offsets. The batch is planned as for :func:`pack`
(the same input kinds, dtype rules and errors) and every sample copied once, in input
order, to its place (kernels in :mod:`fastcollate._flat`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import (Any, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple, Union,
                    cast, overload)

import numpy as np
import torch

from . import _core, _flat
from .packing import (Plan, _as_batch, cast_into, check_list_code, check_out, plan_batch,
                      torch_functions_off)
from .padding import _check_padding_value, _pad_element

__all__ = ["FlatSequence", "PackedRows", "FlatteningCollator", "flatten", "pack_rows",
           "plan_flat", "write_flat", "check_flat_options"]

_LABELS = (None, "mask_first", "shift")
_OPTIONS = ("offsets_dtype", "position_ids", "segment_ids", "labels", "ignore_index",
            "nested")


class FlatSequence(NamedTuple):
    """A flattened ragged batch (what :func:`flatten` returns).

    Attributes
    ----------
    values : Tensor ``(total, *row)``
        The samples concatenated in input order.
    cu_seqlens : Tensor ``(B + 1,)``, int32 (or int64)
        Sample ``i`` is ``values[cu_seqlens[i]:cu_seqlens[i + 1]]``.
    max_seqlen : int
        The longest sample, a Python int (no device sync to read it).
    position_ids, segment_ids, labels : Tensor ``(total,)`` int64, or None
        When asked: positions restarting at 0 for every sample, the sample index of
        every token, labels with ``ignore_index`` at sample boundaries.
    """

    values: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: Optional[torch.Tensor] = None
    segment_ids: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None

    def lengths(self) -> torch.Tensor:
        """The samples' lengths, int64, on the offsets' device."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    def nested(self) -> torch.Tensor:
        """The batch as a ``torch.nested`` jagged tensor, zero-copy over ``values`` and
        ``cu_seqlens`` (``unbind()`` gives back the samples)."""
        return torch.nested.nested_tensor_from_jagged(
            self.values, offsets=self.cu_seqlens, max_seqlen=self.max_seqlen)

    def unbind(self) -> List[torch.Tensor]:
        """The samples, as views of ``values``."""
        return list(self.values.split(self.lengths().tolist()))


class PackedRows(NamedTuple):
    """Samples packed whole into rows of ``max_length`` tokens (:func:`pack_rows`).

    Attributes
    ----------
    values : Tensor ``(R, max_length, *row)``, each row's tail filled with padding.
    position_ids : Tensor ``(R, max_length)`` int64, restarting at 0 for every sample
        (and for every row's padding tail).
    segment_ids : Tensor ``(R, max_length)`` int64, the input index of the sample each
        token comes from, -1 on padding.
    cu_seqlens : Tensor int32 over the ``R * max_length`` tokens of ``values`` flattened:
        one segment per sample and one per non-empty padding tail, so
        ``values.view(R * max_length, ...)`` goes straight to a varlen attention kernel.
    max_seqlen : int, the longest segment.
    row_splits : Tensor ``(R + 1,)`` int64: the segments of row ``r`` are
        ``row_splits[r] .. row_splits[r + 1]`` (indices into ``cu_seqlens``).
    rows : list of lists of input indices, the samples of each row (input order).
    efficiency : float, real tokens / ``R * max_length``.
    """

    values: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    row_splits: torch.Tensor
    rows: List[List[int]]
    efficiency: float


def check_flat_options(options: Optional[Mapping] = None, **kwargs: Any
                       ) -> Dict[str, Any]:
    """The options of the flattened layout, checked, with defaults filled in
    (:func:`flatten`'s keyword arguments; ``PackedCollate(mode="flat", flat=...)``)."""
    opts: Dict[str, Any] = dict(offsets_dtype=torch.int32, position_ids=False,
                                segment_ids=False, labels=None, ignore_index=-100,
                                nested=False)
    given = dict(options or {}, **kwargs)
    unknown = sorted(set(given) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"unknown flat options {unknown}; expected some of {list(_OPTIONS)}")
    opts.update(given)
    if opts["offsets_dtype"] not in (torch.int32, torch.int64):
        raise TypeError(f"offsets_dtype must be torch.int32 or torch.int64, got "
                        f"{opts['offsets_dtype']!r}")
    if opts["labels"] not in _LABELS:
        raise ValueError(f"labels must be None, 'mask_first' or 'shift', got "
                         f"{opts['labels']!r}")
    ignore = opts["ignore_index"]
    if isinstance(ignore, (bool, np.bool_)) or not isinstance(ignore, (int, np.integer)) \
            or not -2**63 <= ignore < 2**63:
        raise TypeError(f"ignore_index must be an int64 integer, got {ignore!r}")
    for name in ("position_ids", "segment_ids", "nested"):
        if not isinstance(opts[name], (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {opts[name]!r}")
    if opts["nested"] and (opts["position_ids"] or opts["segment_ids"] or opts["labels"]):
        raise ValueError("nested=True returns a jagged tensor, which carries its offsets "
                         "only; for position_ids/segment_ids/labels take the FlatSequence "
                         "and call .nested() on it")
    return opts


def check_collate_flat(flat: Any) -> Dict[Any, Dict[str, Any]]:
    """``PackedCollate(flat=...)``: one dict of :func:`flatten` options for every
    ragged field (kept under the key None), or a dict of field key -> such a dict."""
    if isinstance(flat, Mapping) and flat and all(isinstance(v, Mapping)
                                                  for v in flat.values()):
        return {k: check_flat_options(v) for k, v in flat.items()}
    if flat is not None and not isinstance(flat, Mapping):
        raise TypeError(f"flat must be a dict of flatten() options, or of field -> such a "
                        f"dict; got a {type(flat).__name__}")
    return {None: check_flat_options(flat)}


def flat_options_for(table: Dict[Any, Dict[str, Any]], key: Any, fields: Sequence[Any]
                     ) -> Dict[str, Any]:
    """The options of ragged field ``key`` (``fields``: all the ragged fields of the
    batch; a per-field table naming another key is a KeyError, not ignored)."""
    if None in table and len(table) == 1:
        return table[None]
    unknown = [k for k in table if k not in fields]
    if unknown:
        raise KeyError(f"flat names fields {unknown} that are not ragged fields of the "
                       f"samples ({list(fields)})")
    return table.get(key) or check_flat_options()


_CHECKED: Dict[Tuple[Any, ...], Dict[str, Any]] = {}


def _cached_options(*values: Any) -> Dict[str, Any]:
    """check_flat_options for flatten()'s arguments, remembered per combination
    (checking costs a few microseconds, as much as copying a small batch)."""
    key = tuple((type(v), v) for v in values)
    try:
        return _CHECKED[key]
    except (KeyError, TypeError):      # TypeError: an unhashable value, checked below
        pass
    opts = check_flat_options(dict(zip(_OPTIONS, values)))
    if len(_CHECKED) < 64:
        _CHECKED[key] = opts
    return opts


@torch_functions_off
def plan_flat(sequences: Sequence[Any], dtype: Optional[torch.dtype] = None) -> Plan:
    """Validate a ragged batch for the flattened layout (a :class:`Plan` without a
    permutation, zero-length samples allowed). Lists of Python ints are read as int64
    in the same pass that checks them (``plan.ready`` holds the concatenation)."""
    seqs = _as_batch(sequences)
    if dtype in (None, torch.int64) and (type(seqs[0]) is list or type(seqs[0]) is tuple):
        lengths = _core.list_lengths(seqs)
        if not isinstance(lengths, tuple):
            starts = np.empty(len(seqs) + 1, dtype=np.int64)
            total, longest, _ = _flat.cu_seqlens(lengths, starts.ctypes.data, 8)
            ready = torch.empty(total, dtype=torch.int64)
            status = _core.read_ints(seqs, lengths, starts[:-1],
                                     np.arange(longest + 1, dtype=np.int64),
                                     ready.data_ptr(), total)
            if status == 0 or (status == 1 and dtype is not None):
                # no permutation (batch_sizes None), as plan_batch(..., sort=False)
                return Plan(lengths, (), torch.int64, cast(Any, None), None, None,
                            ready=ready).seal()
    return plan_batch(seqs, dtype=dtype, sort=False)


def _concatenation(plan: Plan) -> Optional[torch.Tensor]:
    """The plan's own concatenation of the samples, when it made one (tensor batches of
    small samples and mixed kinds go through one ``torch.cat``): then it is the flat
    values already, and no copy is needed. It is a tensor the plan allocated, never
    a caller's sample. None for plans that read the samples themselves."""
    if plan.ready is not None:
        return plan.ready
    if plan.ptrs is None or len(plan.keep) != 1 or len(plan.lengths) == 0:
        return None
    t = plan.keep[0]
    if (type(t) is torch.Tensor and t.dtype == plan.dtype and tuple(t.shape) == plan.shape
            and t.is_contiguous() and t.data_ptr() == int(plan.ptrs[0])):
        return t
    return None


@torch_functions_off
def write_flat(plan: Plan, out: torch.Tensor, starts: Optional[np.ndarray] = None, *,
               _trusted: bool = False) -> torch.Tensor:
    """Write a planned batch (:func:`plan_flat`) into ``out``, a contiguous CPU tensor
    of ``(n, *row)`` and ``plan.dtype`` (checked: ValueError otherwise), sample ``i``
    at row ``starts[i]`` (by default one after another: ``n`` must then be at least
    the total). The rows between the samples are left as they are. A list sample that
    changed length since it was planned raises ValueError naming it."""
    plan.check_planned()
    if _trusted:
        dst = out
    else:
        if not isinstance(out, torch.Tensor) or out.dim() < 1:
            raise ValueError(f"out must be a tensor of shape (rows, {plan.row}...)")
        dst = check_out(out, (out.shape[0],) + plan.row, plan.dtype)
    n = dst.shape[0]
    lengths = plan.lengths
    if plan.flat is not None:
        if starts is None:
            starts = _starts(lengths)
        if plan.total > n or (len(lengths) and int((starts + lengths).max()) > n):
            raise ValueError(f"out has {n} rows, too few for the batch")
        idx = torch.from_numpy(_rows_of(lengths, starts))
        dst.index_copy_(0, idx, plan.flat.detach().cpu())
        return out
    if plan.cast_from is not None:      # rows of another dtype, converted in the copy
        st = _starts(lengths) if starts is None else np.ascontiguousarray(starts, np.int64)
        if len(lengths) and (st.shape != lengths.shape or int(st.min()) < 0
                             or int((st + lengths).max()) > n):
            raise ValueError(f"out has {n} rows, too few for the batch")
        T = int(lengths.max()) if len(lengths) else 0
        cast_into(plan, dst, st, np.arange(T + 1, dtype=np.int64), n)
        return out
    if plan.lists is not None:
        target = dst if plan.list_via is None else torch.empty(dst.shape, dtype=plan.list_via)
        check_list_code(plan.list_code, target)
        if plan.list_via is not None:
            target.copy_(dst)       # keep the rows between the samples
        T = int(lengths.max()) if len(lengths) else 0
        _core.read_lists(plan.lists, lengths,
                         _starts(lengths) if starts is None else
                         np.ascontiguousarray(starts, dtype=np.int64),
                         np.arange(T + 1, dtype=np.int64), target.data_ptr(), target.numel(),
                         plan.list_code, plan.list_lo, plan.list_hi, plan.list_cast)
        if plan.list_via is not None:
            dst.copy_(target)
        return out
    if plan.ready is not None:
        ptrs = _core.chunk_pointers(plan.ready.data_ptr(), lengths, plan.row_bytes)
        _flat.concat(ptrs, lengths, plan.row_bytes, dst.data_ptr(), n, starts)
        return out
    _flat.concat(plan.require_ptrs(), lengths, plan.row_bytes, dst.data_ptr(), n, starts,
                 **plan.source_checks())
    return out


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where every sample starts in the flattened layout (int64)."""
    cu = np.empty(len(lengths) + 1, dtype=np.int64)
    _flat.cu_seqlens(lengths, cu.ctypes.data, 8)
    return cu[:-1]


def _rows_of(lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The output row of every row of the input-order concatenation."""
    total = int(lengths.sum())
    first = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths),
                      lengths)
    return np.arange(total, dtype=np.int64) + first


def flat_specs(plan: Plan, opts: Dict[str, Any]) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
    """The tensors of one flattened field: (name, shape, dtype), for the caller to
    allocate (one block in :class:`PackedCollate`). Values are left out for plans
    that come from torch ops (autograd, CUDA): those stay on their device."""
    B, total = len(plan.lengths), plan.total
    specs = []
    if plan.flat is None:
        specs.append(("values", plan.shape, plan.dtype))
    specs.append(("cu_seqlens", (B + 1,), opts["offsets_dtype"]))
    for name in ("position_ids", "segment_ids"):
        if opts[name]:
            specs.append((name, (total,), torch.int64))
    if opts["labels"]:
        specs.append(("labels", (total,), torch.int64))
    return specs


def _labels_source(values: torch.Tensor) -> torch.Tensor:
    if values.numel() and (values.dtype.is_floating_point or values.dtype.is_complex
                           or values.dtype == torch.bool):   # (no tokens: float, no matter)
        raise TypeError(f"labels need integer token ids, but the values are {values.dtype}")
    return values if values.dtype == torch.int64 else values.to(torch.int64)


def write_flat_field(plan: Plan, opts: Dict[str, Any], views: Dict[str, torch.Tensor],
                     values: Optional[torch.Tensor] = None) -> FlatSequence:
    """Fill the tensors of :func:`flat_specs` (``views``, by name) and wrap them;
    ``values``, if given, is the batch's concatenation already made."""
    lengths = plan.lengths
    itemsize = opts["offsets_dtype"].itemsize
    cu = views["cu_seqlens"]
    _, longest, _ = _flat.cu_seqlens(lengths, cu.data_ptr(), itemsize)
    if values is None:
        values = (plan.flat if plan.flat is not None
                  else write_flat(plan, views["values"], _trusted=True))
    by_torch = values.device.type != "cpu" or values.requires_grad
    extra: Dict[str, torch.Tensor] = {}
    for name, segments in (("position_ids", False), ("segment_ids", True)):
        if opts[name]:
            t = views[name]
            _flat.positions(lengths, t.data_ptr(), t.numel(), 0, segments)
            extra[name] = t
    if opts["labels"]:
        lab = views["labels"]
        shift = opts["labels"] == "shift"
        if by_torch:
            extra["labels"] = _labels_by_torch(values, lengths, shift, opts["ignore_index"])
        else:
            src = _labels_source(values)
            _flat.boundary_labels(src.data_ptr(), lengths, lab.data_ptr(), lab.numel(),
                                  shift, opts["ignore_index"])
            extra["labels"] = lab
    if values.device.type != "cpu":
        cu = cu.to(values.device)
        extra = {k: v.to(values.device) for k, v in extra.items()}
    return FlatSequence(values, cu, longest, **extra)


def _labels_by_torch(values: torch.Tensor, lengths: np.ndarray, shift: bool,
                     ignore_index: int) -> torch.Tensor:
    """Boundary labels by torch ops (values on a device, or requiring grad)."""
    src = _labels_source(values.detach())
    ends = np.cumsum(lengths)
    starts = (ends - lengths)[lengths > 0]
    ends = ends[lengths > 0]
    lab = src.clone()
    if shift:
        lab[:-1] = src[1:]
        where = ends - 1
    else:
        where = starts
    lab[torch.from_numpy(where).to(values.device)] = ignore_index
    return lab


@overload
def flatten(sequences: Sequence[Any], *, dtype: Optional[torch.dtype] = ...,
            offsets_dtype: torch.dtype = ..., position_ids: bool = ...,
            segment_ids: bool = ..., labels: Optional[str] = ..., ignore_index: int = ...,
            nested: Literal[False] = ..., pin_memory: bool = ...) -> FlatSequence: ...


@overload
def flatten(sequences: Sequence[Any], *, dtype: Optional[torch.dtype] = ...,
            offsets_dtype: torch.dtype = ..., position_ids: bool = ...,
            segment_ids: bool = ..., labels: Optional[str] = ..., ignore_index: int = ...,
            nested: Literal[True], pin_memory: bool = ...) -> torch.Tensor: ...


@torch_functions_off
def flatten(sequences: Sequence[Any], *, dtype: Optional[torch.dtype] = None,
            offsets_dtype: torch.dtype = torch.int32, position_ids: bool = False,
            segment_ids: bool = False, labels: Optional[str] = None,
            ignore_index: int = -100, nested: bool = False, pin_memory: bool = False
            ) -> Union[FlatSequence, torch.Tensor]:
    """Concatenate a ragged batch in input order, with its offsets, in one pass.

    Parameters
    ----------
    sequences : list or tuple
        Samples of shape ``(L_i, *row)``, as for :func:`fastcollate.pack` (tensors,
        NumPy arrays, lists of numbers, mixed). ``L_i`` may be 0.
    dtype : torch.dtype, optional
        Cast to this dtype; by default the rules of ``pack`` (promotion like
        ``torch.cat``, Python numbers like ``torch.tensor``).
    offsets_dtype : torch.int32 (default) or torch.int64
        Of ``cu_seqlens`` (flash-attention takes int32).
    position_ids : bool
        Add positions restarting at 0 for every sample (int64).
    segment_ids : bool
        Add the index of the sample every token belongs to (int64).
    labels : None, "mask_first" or "shift"
        Add int64 labels from the (integer) values: ``"mask_first"`` sets the first
        token of every sample to ``ignore_index`` (Hugging Face's flattened causal-LM
        batches, where the model shifts); ``"shift"`` gives every token the next token
        of its sample and the last one ``ignore_index``.
    ignore_index : int, default -100
    nested : bool
        Return a ``torch.nested`` jagged tensor over the same values and offsets
        instead (no position ids, segment ids or labels then).
    pin_memory : bool
        Allocate the result in page-locked memory.

    Returns
    -------
    FlatSequence ``(values, cu_seqlens, max_seqlen, position_ids, segment_ids,
    labels)``, or a jagged tensor with ``nested=True``. Inputs on a device or requiring
    grad give values by torch ops on that device (differentiable), and the other
    tensors on the same device.

    Raises
    ------
    The errors of :func:`fastcollate.pack` (empty batch, row-shape mismatch, bad
    elements..., naming the sample), except that zero-length samples are fine;
    OverflowError when int32 offsets cannot hold the total.

    Examples
    --------
    >>> from fastcollate import flatten
    >>> f = flatten([[1, 2, 3], [4], [5, 6]], position_ids=True, labels="mask_first")
    >>> f.values.tolist(), f.cu_seqlens.tolist(), f.max_seqlen
    ([1, 2, 3, 4, 5, 6], [0, 3, 4, 6], 3)
    >>> f.position_ids.tolist(), f.labels.tolist()
    ([0, 1, 2, 0, 0, 1], [-100, 2, 3, -100, -100, 6])
    >>> [t.tolist() for t in f.nested().unbind()]
    [[1, 2, 3], [4], [5, 6]]
    """
    opts = _cached_options(offsets_dtype, position_ids, segment_ids, labels, ignore_index,
                           nested)
    plan = plan_flat(sequences, dtype)
    values = None if pin_memory else _concatenation(plan)
    if plan.flat is not None:
        values = plan.flat
        if pin_memory and values.device.type == "cpu":
            values = values.pin_memory()
    views = {name: torch.empty(shape, dtype=dt, pin_memory=pin_memory)
             for name, shape, dt in flat_specs(plan, opts)
             if not (name == "values" and values is not None)}
    out = write_flat_field(plan, opts, views, values)
    return out.nested() if opts["nested"] else out


@torch_functions_off
def pack_rows(sequences: Sequence[Any], max_length: int, *, padding_value: Any = 0,
              dtype: Optional[torch.dtype] = None, pin_memory: bool = False) -> PackedRows:
    """Pack whole samples into rows of ``max_length`` tokens (pre-training batches).

    First-fit decreasing over the batch: samples are taken longest first, each into
    the first row with room left; within a row the samples keep their input order.
    Every sample must fit in a row (ValueError naming it otherwise); zero-length
    samples take no room. Pack a buffer of samples larger than a batch and cut the
    rows into batches for better efficiency.

    Returns
    -------
    PackedRows ``(values, position_ids, segment_ids, cu_seqlens, max_seqlen,
    row_splits, rows, efficiency)``.

    Examples
    --------
    >>> from fastcollate import pack_rows
    >>> r = pack_rows([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], 5, padding_value=-1)
    >>> r.values.tolist(), r.rows
    ([[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]], [[2, 3], [0, 1]])
    >>> r.position_ids.tolist(), r.cu_seqlens.tolist(), r.efficiency
    ([[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]], [0, 4, 5, 8, 10], 1.0)
    """
    if isinstance(max_length, (bool, np.bool_)) or not isinstance(max_length, (int, np.integer)):
        raise TypeError(f"max_length must be a positive int, got {max_length!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length}")
    plan = plan_flat(sequences, dtype)
    _check_padding_value(padding_value, plan.dtype)
    lengths = plan.lengths
    bins, used = _flat.first_fit_decreasing(lengths, max_length)
    R = max(len(used), 1)
    order = np.argsort(bins, kind="stable")             # row by row, input order inside
    counts = np.bincount(bins, minlength=R)
    row_of = bins[order]
    # the start of every sample: its row's base plus the samples before it in the row
    lens_sorted = lengths[order]
    cum = np.cumsum(lens_sorted) - lens_sorted
    row_first = np.cumsum(counts) - counts                  # first sample of each row
    row_base_tokens = cum[row_first[row_of]] if len(order) else cum
    starts = np.empty(len(lengths), dtype=np.int64)
    starts[order] = row_of * max_length + (cum - row_base_tokens)
    device = plan.flat.device if plan.flat is not None else torch.device("cpu")
    if plan.flat is not None:
        values = plan.flat.new_full((R * max_length,) + plan.row, padding_value)
        idx = torch.from_numpy(_rows_of(lengths, starts)).to(device)
        values = values.index_copy(0, idx, plan.flat)
    else:
        values = torch.empty((R * max_length,) + plan.row, dtype=plan.dtype,
                             pin_memory=pin_memory)
    used_full = np.zeros(R, dtype=np.int64)
    used_full[:len(used)] = used
    tails = max_length - used_full
    if plan.flat is None:
        # the padding tails only: the padded layout's kernel, with every row a
        # "sample" of its used length whose data is written by someone else
        _core.pad_scatter(np.zeros(R, dtype=np.int64), used_full, max_length,
                          plan.row_bytes, values.data_ptr(), True, False,
                          _pad_element(padding_value, plan.dtype))
        write_flat(plan, values, starts, _trusted=True)
    # segments in token order: each row's samples (input order), then its padding
    # tail if any; a stable sort on (row, tail after samples) puts them in place
    real = lens_sorted > 0
    tail_rows = np.flatnonzero(tails > 0)
    seg_rows = np.concatenate([row_of[real], tail_rows])
    seg_key = np.argsort(np.concatenate([2 * row_of[real], 2 * tail_rows + 1]), kind="stable")
    seg_arr = np.concatenate([lens_sorted[real], tails[tail_rows]])[seg_key]
    seg_id = np.concatenate([order[real], np.full(len(tail_rows), -1, dtype=np.int64)])[seg_key]
    row_splits = np.searchsorted(seg_rows[seg_key], np.arange(R + 1), side="left")
    rows = [r.tolist() for r in np.split(order, np.cumsum(counts)[:-1])]
    cu = torch.empty(len(seg_arr) + 1, dtype=torch.int32)
    _, longest, _ = _flat.cu_seqlens(seg_arr, cu.data_ptr(), 4)
    positions = torch.empty(R * max_length, dtype=torch.int64)
    _flat.positions(seg_arr, positions.data_ptr(), positions.numel())
    segments = torch.from_numpy(np.repeat(seg_id, seg_arr))
    efficiency = float(lengths.sum()) / (R * max_length)
    shape2 = (R, max_length)
    return PackedRows(values.view(shape2 + plan.row), positions.view(shape2).to(device),
                      segments.view(shape2).to(device), cu.to(device), longest,
                      torch.from_numpy(row_splits.astype(np.int64)), rows, efficiency)


class FlatteningCollator:
    """A drop-in for ``transformers.DataCollatorWithFlattening``, in one pass.

    Same constructor options and the same output (keys, shapes, dtypes, values):
    ``input_ids``, ``labels`` and, by default, ``position_ids`` of shape
    ``(1, total)`` (int64), optionally ``seq_idx`` (int32) and the flash-attention
    kwargs ``cu_seq_lens_q/k`` (int32) and ``max_length_q/k`` (Python ints). Features
    are dicts with ``input_ids`` (lists of ints, arrays or tensors) and optionally
    ``labels`` (then of the same length; ValueError naming the sample otherwise);
    empty samples are dropped, as there. Other keys are ignored, as there.

    Examples
    --------
    >>> from fastcollate import FlatteningCollator
    >>> collate = FlatteningCollator(return_flash_attn_kwargs=True)
    >>> batch = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist()
    ([[5, 6, 7, 8, 9]], [[-100, 6, 7, -100, 9]])
    >>> batch["position_ids"].tolist(), batch["cu_seq_lens_q"].tolist(), batch["max_length_q"]
    ([[0, 1, 2, 0, 1]], [0, 3, 5], 3)
    """

    def __init__(self, *, return_position_ids: bool = True, separator_id: int = -100,
                 return_flash_attn_kwargs: bool = False, return_seq_idx: bool = False,
                 position_ids_start: int = 0, return_tensors: str = "pt"):
        self.return_position_ids = return_position_ids
        self.separator_id = separator_id
        self.return_flash_attn_kwargs = return_flash_attn_kwargs
        self.return_seq_idx = return_seq_idx
        self.position_ids_start = position_ids_start
        self.return_tensors = return_tensors
        check_flat_options(ignore_index=separator_id)
        self._check_tensors(return_tensors)

    @staticmethod
    def _check_tensors(kind: str) -> None:
        if kind not in ("pt", "np"):
            raise ValueError(f'return_tensors must be one of ("pt", "np"), '
                             f'{kind=} not supported')

    @torch_functions_off
    def __call__(self, features: Sequence[Dict[str, Any]], return_tensors: Optional[str] = None,
                 separator_id: Optional[int] = None) -> Dict[str, Any]:
        kind = self.return_tensors if return_tensors is None else return_tensors
        sep = self.separator_id if separator_id is None else separator_id
        self._check_tensors(kind)
        check_flat_options(ignore_index=sep)
        features = [f for f in features if len(f["input_ids"]) > 0]
        if not features:
            raise ValueError("DataCollatorWithFlattening received a batch where every "
                             "example is empty.")
        has_labels = "labels" in features[0]
        plan = plan_flat([f["input_ids"] for f in features], torch.int64)
        values = _concatenation(plan)
        if values is None:
            values = write_flat(plan, torch.empty(plan.shape, dtype=torch.int64), _trusted=True)
        if values.dim() != 1:
            raise ValueError(f"input_ids must be sequences of token ids, got rows of shape "
                             f"{plan.row}")
        lengths, B, total = plan.lengths, len(plan.lengths), plan.total
        want_cu = self.return_flash_attn_kwargs
        labels = torch.empty(total, dtype=torch.int64)
        if has_labels:
            lplan = plan_flat([f["labels"] for f in features], torch.int64)
            bad = np.flatnonzero(lplan.lengths != lengths)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"sample {i}: labels has length {int(lplan.lengths[i])} but "
                                 f"input_ids has length {int(lengths[i])}")
            src = _concatenation(lplan)
            if src is None:
                src = write_flat(lplan, torch.empty(lplan.shape, dtype=torch.int64),
                                 _trusted=True)
        else:
            src = values
        _flat.boundary_labels(src.data_ptr(), lengths, labels.data_ptr(), total, False, sep)
        batch: Dict[str, Any] = {"input_ids": values.view(1, total), "labels": labels.view(1, total)}
        if self.return_position_ids:
            pos = torch.empty(total, dtype=torch.int64)
            _flat.positions(lengths, pos.data_ptr(), total, self.position_ids_start)
            batch["position_ids"] = pos.view(1, total)
        if self.return_seq_idx:
            seq = torch.from_numpy(np.repeat(np.arange(B, dtype=np.int32), lengths))
            batch["seq_idx"] = seq.view(1, total)
        if want_cu:
            cu = torch.empty(B + 1, dtype=torch.int32)
            _, longest, _ = _flat.cu_seqlens(lengths, cu.data_ptr(), 4)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
            batch["max_length_q"] = batch["max_length_k"] = longest
        if kind == "np":
            batch = {k: v.numpy() if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
        return batch
