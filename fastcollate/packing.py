"""pack() and pack_lengths(): validate and normalize a ragged batch, run the kernels, wrap.

Policy lives here (input kinds, dtype rules, errors, fallbacks); loops live in
:mod:`fastcollate._core`. A batch is first turned into a :class:`Plan` (lengths,
permutation, dtype, row shape and where every sample's rows are), then written into an
output tensor that the caller may allocate (pinned, shared memory) with
:func:`write_plan`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import _core

__all__ = ["pack", "pack_lengths", "Plan", "plan_batch", "write_plan", "wrap_packed"]

# NumPy <-> torch dtypes that both sides can store (bfloat16 has no NumPy twin).
_NP_TO_TORCH = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.complex64): torch.complex64,
    np.dtype(np.complex128): torch.complex128,
}

# How read_lists stores Python ints: (code, lo, hi) per integer dtype.
_INT_CODES = {
    torch.int64: ("q", -(2**63), 2**63 - 1),
    torch.int32: ("i", -(2**31), 2**31 - 1),
    torch.int16: ("h", -(2**15), 2**15 - 1),
    torch.int8: ("c", -(2**7), 2**7 - 1),
    torch.uint8: ("c", 0, 2**8 - 1),
}
_REAL_CODES = {torch.float64: "d", torch.float32: "f"}
_COMPLEX_CODES = {torch.complex128: "D", torch.complex64: "F"}

_ACCEPTED = "a torch.Tensor, a numpy.ndarray, or a list/tuple of numbers"


def _list_dtype(kind: int) -> torch.dtype:
    """The dtype torch.tensor infers for a flat list whose widest element is ``kind``."""
    if kind == _core.KIND_BOOL:
        return torch.bool
    if kind == _core.KIND_INT:
        return torch.int64
    if kind == _core.KIND_FLOAT:
        return torch.get_default_dtype()
    return torch.complex128 if torch.get_default_dtype() == torch.float64 else torch.complex64


@dataclass
class Plan:
    """Everything needed to write one packed field, before its output exists.

    Attributes
    ----------
    lengths : ndarray of int64, input order.
    row : trailing shape shared by every sample.
    dtype : dtype of the packed data.
    batch_sizes, sorted_indices, unsorted_indices : from the counting sort
        (the indices are None with ``enforce_sorted``).
    ptrs : address of each sample's contiguous rows (0 for samples read from lists).
    keep : objects that own the memory ``ptrs`` point into.
    lists, list_code, list_lo, list_hi, list_via : flat Python lists to read, the
        element code, the integer range, and the dtype to read them in when it is not
        ``dtype`` (then converted).
    flat : the samples concatenated, when the result must come from torch ops
        (inputs requiring grad, CUDA inputs); ``ptrs`` is then None.
    ready : the packed data itself, already written while planning (lists of ints).
    """

    lengths: np.ndarray
    row: Tuple[int, ...]
    dtype: torch.dtype
    batch_sizes: np.ndarray
    sorted_indices: Optional[np.ndarray]
    unsorted_indices: Optional[np.ndarray]
    ptrs: Optional[np.ndarray] = None
    keep: List[Any] = field(default_factory=list)
    lists: Optional[List[Any]] = None
    list_code: str = ""
    list_lo: int = 0
    list_hi: int = 0
    list_via: Optional[torch.dtype] = None
    flat: Optional[torch.Tensor] = None
    ready: Optional[torch.Tensor] = None

    def require_flat(self) -> torch.Tensor:
        """``flat``, for the torch-ops path (raises if this plan reads its sources)."""
        if self.flat is None:
            raise ValueError("this plan reads its samples directly; it has no torch path")
        return self.flat

    def require_ptrs(self) -> np.ndarray:
        """``ptrs``, for the kernels (raises if the data comes from torch ops or lists)."""
        if self.ptrs is None:
            raise ValueError("this plan has no sample addresses (torch path or lists)")
        return self.ptrs

    @cached_property
    def total(self) -> int:
        """Number of rows of the packed data."""
        return _core.sum_lengths(self.lengths)

    @cached_property
    def shape(self) -> Tuple[int, ...]:
        return (self.total,) + self.row

    @cached_property
    def row_bytes(self) -> int:
        """Bytes of one packed row."""
        n = self.dtype.itemsize
        for d in self.row:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.total * self.row_bytes


def _as_batch(sequences: Any) -> list:
    if isinstance(sequences, (torch.Tensor, np.ndarray)):
        raise TypeError(
            "expected a list or tuple of samples, got a single "
            f"{type(sequences).__name__}; wrap it as [x] or use list(x)")
    if not isinstance(sequences, (list, tuple)):
        raise TypeError(
            f"expected a list or tuple of samples, got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("cannot pack an empty batch: expected at least one sample")
    return sequences if type(sequences) is list else list(sequences)


def plan_batch(sequences: Sequence[Any], *, enforce_sorted: bool = False,
               dtype: Optional[torch.dtype] = None, sort: bool = True) -> Plan:
    """Validate a ragged batch and describe how to pack it (see :func:`pack`).

    With ``sort=False`` (padding) no permutation is made and zero-length samples are
    allowed.
    """
    seqs = _as_batch(sequences)
    order = "none" if not sort else ("sorted" if enforce_sorted else "sort")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    # Dispatch on the first sample; each fast path checks every sample's kind itself
    # and returns None for anything it does not handle.
    first = seqs[0]
    if type(first) is np.ndarray:
        plan = _plan_arrays(seqs, order, dtype)
    elif type(first) is list or type(first) is tuple:
        plan = _plan_lists(seqs, order, dtype)
    elif isinstance(first, torch.Tensor):
        plan = _plan_tensors(seqs, order, dtype)
    else:
        plan = None
    if plan is None:
        plan = _plan_general(seqs, order, dtype)
    return plan


def _sorted(lengths: np.ndarray, order: str):
    """Counting sort ("sort"), check-only ("sorted", enforce_sorted) or nothing ("none",
    for padding, where zero-length samples are allowed)."""
    if order == "none":
        return None, None, None
    return _core.sort_lengths(lengths, order == "sorted")


def _plan_arrays(seqs: list, order: str, dtype) -> Optional[Plan]:
    """All exact ndarrays: one Cython scan; anything unusual goes the general way."""
    ptrs, lengths, odd = _core.array_sources(seqs)
    if odd:
        return None
    a0 = seqs[0]
    tdtype = _NP_TO_TORCH.get(a0.dtype)     # native byte order: array_sources checked
    if tdtype is None or (dtype is not None and dtype != tdtype):
        return None
    bs, si, ui = _sorted(lengths, order)
    return Plan(lengths, tuple(a0.shape[1:]), tdtype, bs, si, ui, ptrs=ptrs, keep=[seqs])


def _plan_lists(seqs: list, order: str, dtype) -> Optional[Plan]:
    """All flat lists/tuples of Python numbers: read straight into the packed layout."""
    if order != "none" and dtype in (None, torch.int64):
        plan = _plan_int_lists(seqs, order, dtype)
        if plan is not None:
            return plan
    kind, lengths = _core.list_kind(seqs)
    if kind == _core.KIND_OTHER:
        return None
    # no elements at all (padding empty lists): torch.tensor([]) is float
    natural = _list_dtype(kind if lengths.any() else _core.KIND_FLOAT)
    target = natural if dtype is None else dtype
    bs, si, ui = _sorted(lengths, order)
    plan = Plan(lengths, (), target, bs, si, ui, lists=seqs)
    via = target
    if target in _INT_CODES and kind <= _core.KIND_INT:
        plan.list_code, plan.list_lo, plan.list_hi = _INT_CODES[target]
    elif target == torch.bool:
        plan.list_code = "b"
    elif target in _REAL_CODES and kind <= _core.KIND_FLOAT:
        plan.list_code = _REAL_CODES[target]
    elif target in _COMPLEX_CODES:
        plan.list_code = _COMPLEX_CODES[target]
    else:
        # e.g. float16/bfloat16, or floats cast to an int dtype: read in the widest type
        # of their kind, then cast like torch does.
        via = {_core.KIND_BOOL: torch.int64, _core.KIND_INT: torch.int64,
               _core.KIND_FLOAT: torch.float64, _core.KIND_COMPLEX: torch.complex128}[kind]
        if kind <= _core.KIND_INT:
            plan.list_code, plan.list_lo, plan.list_hi = _INT_CODES[torch.int64]
        else:
            plan.list_code = {torch.float64: "d", torch.complex128: "D"}[via]
        plan.list_via = via
    return plan


def _ranks(unsorted_indices: Optional[np.ndarray], B: int) -> np.ndarray:
    """Rank of every input sample (identity when the input is already sorted)."""
    return unsorted_indices if unsorted_indices is not None else np.arange(B, dtype=np.int64)


def _plan_int_lists(seqs: list, order: str, dtype) -> Optional[Plan]:
    """Token ids and the like: lists of Python ints, read in one pass while planning
    (no separate pass to infer their kind). None when the batch holds anything else."""
    lengths = _core.list_lengths(seqs)
    if isinstance(lengths, tuple):
        return None
    bs, si, ui = _sorted(lengths, order)
    total = _core.sum_lengths(lengths)
    ready = torch.empty(total, dtype=torch.int64)
    status = _core.read_ints(seqs, _ranks(ui, len(seqs)), _core.offsets_of(bs), ready.data_ptr())
    if status < 0 or (status == 1 and dtype is None):   # floats, others; all bools
        return None
    return Plan(lengths, (), torch.int64, bs, si, ui, ready=ready)


# Above this many bytes in the first sample, reading each tensor's address (six
# attribute reads, ~0.3 us) is cheaper than copying the batch twice (torch.cat, then
# scatter). Measured on the DESIGN.md workloads: speech (25 KB/sample) and embed
# (100 KB/sample) gain, tokens (300 B/sample) loses.
_DIRECT_TENSOR_BYTES = 4096


def _plan_tensors(seqs: list, order: str, dtype) -> Optional[Plan]:
    """All tensors. Large samples of one dtype: scatter straight from each tensor.
    Otherwise one torch.cat (validates devices and rows, promotes dtypes, handles any
    strides) then one scatter from the concatenation. Anything torch.cat refuses goes
    the general way, which names the bad sample."""
    t0 = seqs[0]
    if t0.nbytes >= _DIRECT_TENSOR_BYTES and (dtype is None or dtype == t0.dtype):
        row = tuple(t0.shape[1:])
        found = _core.tensor_sources(seqs, torch.Tensor, t0.dtype, row)
        if found is not None:
            ptrs, lengths = found
            bs, si, ui = _sorted(lengths, order)
            return Plan(lengths, row, t0.dtype, bs, si, ui, ptrs=ptrs, keep=[seqs])
    lengths, bad = _core.leading_lengths(seqs)
    if bad >= 0:
        return None
    try:
        flat = torch.cat(seqs)
    except (RuntimeError, TypeError, ValueError):
        return None
    if flat.shape[0] != int(lengths.sum()):     # torch.cat skips legacy 1-D empties
        return None
    return _plan_from_flat(flat, lengths, tuple(flat.shape[1:]), order, dtype)


def _plan_from_flat(flat: torch.Tensor, lengths: np.ndarray, row, order: str, dtype):
    bs, si, ui = _sorted(lengths, order)
    if dtype is not None and flat.dtype != dtype:
        flat = flat.to(dtype)
    plan = Plan(lengths, row, flat.dtype, bs, si, ui)
    if flat.requires_grad or flat.device.type != "cpu":
        plan.flat = flat      # differentiable / on-device: the caller uses torch ops
        return plan
    flat = flat.contiguous()
    plan.ptrs = _core.chunk_pointers(flat.data_ptr(), lengths, plan.row_bytes)
    plan.keep = [flat]
    return plan


def packed_by_torch(plan: Plan) -> torch.Tensor:
    """The packed data by torch ops on ``plan.flat`` (differentiable, any device)."""
    flat = plan.require_flat()
    gather = torch.from_numpy(_packed_positions(plan)).to(flat.device)
    return flat.index_select(0, gather)


def _packed_positions(plan: Plan) -> np.ndarray:
    """For every packed row, its row in the input-order concatenation."""
    n = plan.total
    src = np.arange(n, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    ptrs = _core.chunk_pointers(src.ctypes.data, plan.lengths, 8)
    _core.scatter(ptrs, plan.lengths, plan.sorted_indices, plan.batch_sizes, 8,
                  out.ctypes.data)
    return out


def _sample_error(exc_type, i: int, what: str):
    return exc_type(f"sample {i}: {what}")


def _normalize(i: int, x: Any) -> torch.Tensor:
    """One sample as a tensor (the general path), with errors naming the sample."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype.newbyteorder("=") not in _NP_TO_TORCH:
            raise _sample_error(
                TypeError, i, f"numpy dtype {x.dtype} is not supported; expected one of "
                "bool, uint8, int8/16/32/64, float16/32/64, complex64/128")
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        # copy unless C-contiguous with non-negative strides (a size-1 axis may carry
        # any stride and still count as contiguous; torch.from_numpy refuses < 0)
        if not x.flags.c_contiguous or any(s < 0 for s in x.strides):
            x = np.array(x, order="C", copy=True)
        t = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        try:
            t = torch.tensor(x)
        except OverflowError as e:
            raise _sample_error(OverflowError, i, f"{e}") from e
        except (TypeError, ValueError, RuntimeError) as e:
            msg = str(e)
            if "Overflow" in msg or "overflow" in msg:
                raise _sample_error(OverflowError, i, f"integer out of range ({msg})") from e
            bad = _non_numbers(x)
            if isinstance(e, TypeError) or bad:
                found = f"found {bad[0]!r}" if bad else "could not convert it"
                raise _sample_error(
                    TypeError, i, f"expected {_ACCEPTED}, {found} ({msg})") from e
            raise _sample_error(
                ValueError, i, f"nested lists must be rectangular ({msg})") from e
    else:
        raise _sample_error(TypeError, i, f"expected {_ACCEPTED}, got {type(x).__name__}")
    if t.dim() == 0:
        raise _sample_error(
            ValueError, i, "is zero-dimensional; expected a sequence with a leading "
            "(time) dimension")
    return t


def _non_numbers(x: Any) -> list:
    """The first leaf of nested lists that is not a number, as a 1-list ([] if none)."""
    stack = [x]
    while stack:
        y = stack.pop()
        if isinstance(y, (list, tuple)):
            stack.extend(reversed(y))
        elif not isinstance(y, (int, float, complex, np.number, np.bool_, torch.Tensor)):
            return [y]
    return []


def _shape_str(row: Tuple[int, ...]) -> str:
    return "(" + ", ".join(["L"] + [str(d) for d in row]) + ("," if not row else "") + ")"


def _plan_general(seqs: list, order: str, dtype) -> Plan:
    """Any mix of kinds: normalize each sample, check everything, name the bad one."""
    ts = [_normalize(i, x) for i, x in enumerate(seqs)]
    t0 = ts[0]
    row = tuple(t0.shape[1:])
    for i, t in enumerate(ts):
        if tuple(t.shape[1:]) != row:
            raise _sample_error(
                ValueError, i, f"has shape {tuple(t.shape)}, expected {_shape_str(row)} like sample 0 "
                "(every sample must share the shape after the leading length)")
        if t.device != t0.device:
            raise _sample_error(
                ValueError, i, f"is on {t.device}, expected {t0.device} like sample 0")
    lengths = np.array([t.shape[0] for t in ts], dtype=np.int64)
    target = dtype
    if target is None:
        target = ts[0].dtype
        for t in ts[1:]:
            if t.dtype != target:
                target = torch.promote_types(target, t.dtype)
    if dtype is not None and not dtype.is_complex and not dtype.is_floating_point:
        _check_int_lists(seqs, ts, dtype)
    flat = torch.cat([t.to(target) for t in ts])
    return _plan_from_flat(flat, lengths, row, order, None)


def _check_int_lists(seqs: list, ts: List[torch.Tensor], dtype: torch.dtype) -> None:
    """Python ints cast to a narrower integer dtype must fit it (OverflowError)."""
    if dtype not in _INT_CODES:
        return
    _, lo, hi = _INT_CODES[dtype]
    for i, (x, t) in enumerate(zip(seqs, ts)):
        if isinstance(x, (list, tuple)) and t.dtype == torch.int64 and t.numel():
            mn, mx = int(t.min()), int(t.max())
            if mn < lo or mx > hi:
                bad = mn if mn < lo else mx
                raise _sample_error(
                    OverflowError, i, f"value {bad} does not fit {dtype} (range {lo}..{hi})")


def write_plan(plan: Plan, out: torch.Tensor, *, _trusted: bool = False) -> torch.Tensor:
    """Write a planned batch into ``out``, a contiguous CPU tensor of ``plan.shape``
    and ``plan.dtype`` that the caller allocated (pinned, shared memory...)."""
    if plan.flat is not None:
        out.copy_(packed_by_torch(plan))
        return out
    if plan.ready is not None:
        out.copy_(plan.ready.view(out.shape))
        return out
    if not _trusted and (tuple(out.shape) != plan.shape or out.dtype != plan.dtype
                         or out.device.type != "cpu" or not out.is_contiguous()):
        raise ValueError(
            f"out must be a contiguous CPU tensor of shape {plan.shape} and dtype "
            f"{plan.dtype}, got {tuple(out.shape)} {out.dtype} on {out.device}")
    if plan.lists is not None:
        target = out if plan.list_via is None else torch.empty(plan.shape, dtype=plan.list_via)
        _core.read_lists(plan.lists, _ranks(plan.unsorted_indices, len(plan.lengths)), _core.offsets_of(plan.batch_sizes),
                         target.data_ptr(), plan.list_code, plan.list_lo, plan.list_hi)
        if plan.list_via is not None:
            out.copy_(target)
        return out
    _core.scatter(plan.require_ptrs(), plan.lengths, plan.sorted_indices, plan.batch_sizes,
                  plan.row_bytes, out.data_ptr())
    return out


def wrap_packed(data: torch.Tensor, plan: Plan) -> PackedSequence:
    """Wrap packed ``data`` and the plan's indices, zero-copy, in a PackedSequence."""
    si = ui = None
    if plan.sorted_indices is not None:
        si = torch.from_numpy(plan.sorted_indices)
        ui = torch.from_numpy(plan.unsorted_indices)
        if data.device.type != "cpu":
            si, ui = si.to(data.device), ui.to(data.device)
    # PackedSequence._make skips __new__'s re-validation; the fields are already right.
    return PackedSequence._make((data, torch.from_numpy(plan.batch_sizes), si, ui))


def pack(sequences: Sequence[Any], *, enforce_sorted: bool = False,
         dtype: Optional[torch.dtype] = None, pin_memory: bool = False) -> PackedSequence:
    """Pack a ragged batch into a :class:`torch.nn.utils.rnn.PackedSequence` in one pass.

    Parameters
    ----------
    sequences : list or tuple
        Samples of shape ``(L_i, *row)``: CPU or CUDA torch tensors, NumPy arrays, or
        (nested) lists/tuples of Python numbers, mixed kinds allowed. Every sample must
        have ``L_i >= 1`` and the same ``row``.
    enforce_sorted : bool, default False
        If True the samples must already be sorted by length, decreasing, and
        ``sorted_indices``/``unsorted_indices`` are None (as in torch).
    dtype : torch.dtype, optional
        Cast to this dtype. By default mixed dtypes promote like ``torch.cat`` and
        Python numbers infer like ``torch.tensor``.
    pin_memory : bool, default False
        Allocate the packed data in page-locked memory (CPU inputs only).

    Returns
    -------
    PackedSequence
        ``data`` of shape ``(sum L_i, *row)``; ``batch_sizes`` a CPU int64 tensor.
        Samples of equal length keep their input order (stable sort), so
        ``sorted_indices`` is deterministic (torch's order among ties is not).

    Raises
    ------
    ValueError
        Empty batch, zero-length or zero-dimensional sample, row-shape mismatch,
        ragged nested lists, samples on different devices, unsorted input with
        ``enforce_sorted=True``. The message names the sample.
    TypeError
        A sample that is not a tensor, array or list of numbers, or holds non-numbers.
    OverflowError
        A Python int that does not fit the dtype.

    Examples
    --------
    >>> import torch, fastcollate
    >>> p = fastcollate.pack([[1, 2], [3, 4, 5], [6]])
    >>> p.data.tolist(), p.batch_sizes.tolist(), p.sorted_indices.tolist()
    ([3, 1, 6, 4, 2, 5], [3, 2, 1], [1, 0, 2])
    """
    plan = plan_batch(sequences, enforce_sorted=enforce_sorted, dtype=dtype)
    if plan.flat is not None:
        data = packed_by_torch(plan)
        if pin_memory and data.device.type == "cpu":
            data = data.pin_memory()
    elif plan.ready is not None and not pin_memory:
        data = plan.ready
    else:
        data = write_plan(plan, torch.empty(plan.shape, dtype=plan.dtype,
                                            pin_memory=pin_memory), _trusted=True)
    return wrap_packed(data, plan)


def pack_lengths(lengths: Any, *, enforce_sorted: bool = False
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``batch_sizes``, ``sorted_indices`` and ``unsorted_indices`` for given lengths.

    The low-level piece for laying out packed data yourself: the sample of sorted rank
    ``r`` has its step ``t`` at row ``sum(batch_sizes[:t]) + r``.

    Parameters
    ----------
    lengths : list, ndarray or tensor of int
        Per-sample lengths, each >= 1.
    enforce_sorted : bool
        Require non-increasing lengths; the indices are then None.

    Returns
    -------
    (batch_sizes, sorted_indices, unsorted_indices) as CPU int64 tensors.

    Examples
    --------
    >>> bs, si, ui = pack_lengths([2, 3, 2])
    >>> bs.tolist(), si.tolist(), ui.tolist()
    ([3, 3, 1], [1, 0, 2], [1, 0, 2])
    """
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    bs, si, ui = _core.sort_lengths(arr, enforce_sorted)
    conv = (lambda a: None if a is None else torch.from_numpy(a))
    return torch.from_numpy(bs), conv(si), conv(ui)
