"""pack() and pack_lengths(): validate and normalize a ragged batch, run the kernels, wrap.

Policy lives here (input kinds, dtype rules, errors, fallbacks); loops live in
:mod:`fastcollate._core`. A batch is first turned into a :class:`Plan` (lengths,
permutation, dtype, row shape and where every sample's rows are), then written into an
output tensor that the caller may allocate (pinned, shared memory) with
:func:`write_plan`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, cast

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import _cast, _core, _store

__all__ = ["pack", "pack_lengths", "Plan", "Replan", "NotInts", "plan_batch", "write_plan", "wrap_packed",
           "check_out", "new_output", "torch_functions_off"]

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
# unsigned types beyond uint8 exist in torch >= 2.3 (copied, never promoted by torch)
for _name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, _name):
        _NP_TO_TORCH[np.dtype(_name)] = getattr(torch, _name)
_TORCH_TO_NP = {t: n for n, t in _NP_TO_TORCH.items()}
# dtypes whose values are their bytes: what the kernels may copy (not quantized types,
# whose meaning lives in a quantizer, nor the experimental float8/complex32 types)
_SUPPORTED = frozenset(_NP_TO_TORCH.values()) | {torch.bfloat16}
_SUPPORTED_NAMES = ", ".join(sorted(str(d).replace("torch.", "") for d in _SUPPORTED))

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

# Element codes of the widening kernels (fastcollate._cast): samples of one of these
# dtypes are converted to a wider one inside the copy when dtype= asks for it.
_CAST_CODES = {torch.uint8: "B", torch.int8: "b", torch.int16: "h", torch.int32: "i",
               torch.int64: "q", torch.float32: "f", torch.float64: "d"}
for _name, _code in (("uint16", "H"), ("uint32", "I")):
    if hasattr(torch, _name):
        _CAST_CODES[getattr(torch, _name)] = _code


def _cast_pair(src: torch.dtype, dst: Optional[torch.dtype]) -> Optional[Tuple[str, str]]:
    """The kernel codes converting ``src`` into ``dst`` exactly, or None."""
    pair = (_CAST_CODES.get(src), _CAST_CODES.get(dst)) if dst is not None else None
    return pair if pair in _cast.LOSSLESS else None      # type: ignore[return-value]

_ACCEPTED = "a torch.Tensor, a numpy.ndarray, or a list/tuple of numbers"

_F = TypeVar("_F", bound=Callable[..., Any])


def torch_functions_off(fn: _F) -> _F:
    """Run ``fn`` with torch function modes and subclass overrides disabled.

    A default device (``torch.set_default_device``, ``with torch.device(...)``) or any
    ``TorchFunctionMode`` would otherwise redirect the output's allocation (a meta or
    CUDA tensor whose address the kernels would write to) or fake what the kernels are
    told about a tensor's storage. Checking for a mode costs ~0.1 us; the context is
    entered only when one is active."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch._C._is_torch_function_mode_enabled():
            return fn(*args, **kwargs)
        with torch._C.DisableTorchFunction():
            return fn(*args, **kwargs)
    return cast(_F, wrapper)


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
    keep : objects that own the memory ``ptrs`` point into (the private copy of the
        batch, the samples' tensor storages, or the concatenation).
    storages : for ``keep`` holding tensor storages, their data address and size at
        planning time (checked again right before copying, :meth:`check_sources`).
    lists, list_code, list_lo, list_hi, list_via, list_cast : flat Python lists to
        read, the element code, the integer range, the dtype to read them in when it is
        not ``dtype`` (then converted), and whether values of a wider kind convert
        (an explicit dtype) or raise (a dtype inferred from the lists).
    flat : the samples concatenated, when the result must come from torch ops
        (inputs requiring grad, CUDA inputs); ``ptrs`` is then None.
    ready : the packed data itself, already written while planning (lists of ints).
    deferred_ints : lists planned as int64 from their lengths alone, read straight into
        the output by :func:`write_plan` (``plan_batch(defer_ints=True)``); if they hold
        anything but ints there, it raises :class:`NotInts` and the caller re-plans.
    tensors : small tensors planned from their shapes alone (``defer_tensors``), read
        by :func:`write_plan`/``write_padded`` a chunk at a time (each chunk's
        ``torch.cat`` in cache, no concatenation of the whole batch); ``dtype`` is
        sample 0's, and the write raises :class:`Replan` if a chunk comes out
        otherwise (mixed dtypes, a sample requiring grad...).
    cast_from : the dtype of the rows at ``ptrs`` when it is not ``dtype``: they are
        converted inside the copy (:mod:`fastcollate._cast`; exact conversions only).
    convert : two element codes (source, target; ``fastcollate._store.can_convert``)
        when ``ptrs`` point at rows of another type, converted while copying (a flat
        store's uint16 token ids written as int64); empty otherwise.
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
    list_cast: bool = True
    flat: Optional[torch.Tensor] = None
    ready: Optional[torch.Tensor] = None
    storages: Optional[np.ndarray] = None
    deferred_ints: bool = False
    cast_from: Optional[torch.dtype] = None
    convert: str = ""
    tensors: Optional[List[Any]] = None
    # what plan_batch checked the sources against (seal); None for hand-made plans
    _planned: Optional[tuple] = field(default=None, repr=False, compare=False)

    def seal(self) -> "Plan":
        """Remember the sizes the sources were checked against (a private copy of the
        lengths, the row, the dtypes, the conversion): the writers refuse a plan whose
        sizes were edited since (:meth:`check_planned`), since they would read past
        the samples or write past the output."""
        self._planned = (self.lengths.copy(), self.row, self.dtype, self.cast_from,
                         self.convert)
        return self

    def check_planned(self) -> None:
        """ValueError if the lengths, row, dtype or conversion differ from what
        :meth:`seal` remembered (a plan is a plain dataclass: treat it as read-only)."""
        if self._planned is None:
            return
        lengths, row, dtype, cast_from, convert = self._planned
        if (self.row != row or self.dtype != dtype or self.cast_from != cast_from
                or self.convert != convert or not _core.same_int64(self.lengths, lengths)):
            raise ValueError("this plan's lengths, row or dtype are not what it was planned "
                             "with (was it edited?): plan the batch again")

    def source_checks(self) -> dict:
        """Keyword arguments for the kernels that read ``ptrs``: the tensor storages
        (held in ``keep``) and their addresses at planning time, which the kernel
        checks right before it releases the GIL (ValueError if one was reallocated)."""
        if self.storages is None:
            return {}
        return {"storages": self.keep, "snapshot": self.storages}

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

    # computed on every read, never cached: a stale size would bound the writes wrongly
    @property
    def total(self) -> int:
        """Number of rows of the packed data."""
        return _core.sum_lengths(self.lengths)

    @property
    def length_range(self) -> Tuple[int, int]:
        """The shortest and the longest sample's length (0, 0 for no samples)."""
        return _core.length_range(self.lengths)

    @property
    def shape(self) -> Tuple[int, ...]:
        return (self.total,) + self.row

    @property
    def row_bytes(self) -> int:
        """Bytes of one packed row."""
        n = self.dtype.itemsize
        for d in self.row:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.total * self.row_bytes


def _as_batch(sequences: Any, verb: str = "pack") -> list:
    if isinstance(sequences, (torch.Tensor, np.ndarray)):
        raise TypeError(
            "expected a list or tuple of samples, got a single "
            f"{type(sequences).__name__}; wrap it as [x] or use list(x)")
    if not isinstance(sequences, (list, tuple)):
        raise TypeError(
            f"expected a list or tuple of samples, got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError(f"cannot {verb} an empty batch: expected at least one sample")
    # A private copy of the batch: it holds a strong reference to every sample for the
    # whole call, whatever another thread does to the caller's list (safety contract).
    return list(sequences)


class Replan(Exception):
    """A deferred plan (``plan_batch(defer_ints=True)`` or ``defer_tensors=True``)
    found, while writing, that the batch is not what it was planned as from its
    lengths alone: plan it again without deferring (which then infers the dtype, or
    names the bad sample). What was written so far is garbage."""


class NotInts(Replan):
    """A ``defer_ints`` plan's lists hold something other than ints: plan again
    without ``defer_ints`` (which infers their dtype, or names the bad element)."""
# Batch types other than lists that plan themselves (exact type -> planner(batch, order,
# dtype)), registered by the modules that define them (fastcollate.store).
BATCH_PLANNERS: Dict[type, Callable[[Any, str, Optional[torch.dtype]], Plan]] = {}
# ... and those that pack themselves in one call (exact type -> packer(batch,
# enforce_sorted) -> PackedSequence, or None to take the plan), for pack() with no
# dtype=/pin_memory and no torch function mode.
BATCH_PACKERS: Dict[type, Callable[[Any, bool], Optional[PackedSequence]]] = {}


def check_dtype(dtype: Any) -> None:
    """``dtype=``: None or a supported torch.dtype (TypeError otherwise)."""
    if dtype is not None and dtype not in _SUPPORTED:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
        raise TypeError(f"dtype {dtype} is not supported; expected one of {_SUPPORTED_NAMES}")


@torch_functions_off
def plan_batch(sequences: Sequence[Any], *, enforce_sorted: bool = False,
               dtype: Optional[torch.dtype] = None, sort: bool = True,
               defer_ints: bool = False, defer_tensors: bool = False) -> Plan:
    """Validate a ragged batch and describe how to pack it (see :func:`pack`).

    With ``sort=False`` (padding) no permutation is made and zero-length samples are
    allowed. With ``defer_ints``, flat lists packed as int64 (inferred or asked for)
    are planned from their lengths only and read by :func:`write_plan` straight into
    the output it is given (no temporary of the output's size); it raises
    :class:`NotInts` if they hold anything else, and the caller plans again without.
    With ``defer_tensors``, a batch of more than ``4 * _CHUNK_BYTES`` (1 MB) of small
    CPU tensors is planned from their shapes and sample 0's dtype, and written a
    chunk at a time (``Plan.tensors``; peak memory: the output plus one chunk, not a
    concatenation of the whole batch beside it); the write raises :class:`Replan`
    if the samples turn out to be of mixed dtypes, to require grad..., and the caller
    plans again without.
    """
    order = "none" if not sort else ("sorted" if enforce_sorted else "sort")
    planner = BATCH_PLANNERS.get(type(sequences))
    if planner is not None:     # a selection from a flat store (fastcollate.store)
        check_dtype(dtype)
        return planner(sequences, order, dtype).seal()
    seqs = _as_batch(sequences, "pack" if sort else "pad")
    check_dtype(dtype)
    # Dispatch on the first sample; each fast path checks every sample's kind itself
    # and returns None for anything it does not handle.
    first = seqs[0]
    if type(first) is np.ndarray:
        plan = _plan_arrays(seqs, order, dtype)
    elif type(first) is list or type(first) is tuple:
        plan = _plan_lists(seqs, order, dtype, defer_ints)
    elif isinstance(first, torch.Tensor):
        plan = _plan_tensors(seqs, order, dtype, defer_tensors)
    else:
        plan = None
    if plan is None:
        plan = _plan_general(seqs, order, dtype, defer_tensors)
    return plan.seal()


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
    if tdtype is None:
        return None
    cast = dtype is not None and dtype != tdtype
    if cast and _cast_pair(tdtype, dtype) is None:
        return None
    bs, si, ui = _sorted(lengths, order)
    return Plan(lengths, tuple(a0.shape[1:]), dtype if cast else tdtype, bs, si, ui,
                ptrs=ptrs, keep=seqs, cast_from=tdtype if cast else None)


def _plan_lists(seqs: list, order: str, dtype, defer_ints: bool = False) -> Optional[Plan]:
    """All flat lists/tuples of Python numbers: read straight into the packed layout."""
    if order != "none" and dtype in (None, torch.int64):
        plan = _plan_int_lists(seqs, order, dtype, defer_ints)
        if plan is not None:
            return plan
    kind, lengths = _core.list_kind(seqs, dtype is None)
    if kind == _core.KIND_OTHER:
        return None
    # no elements at all (padding empty lists): torch.tensor([]) is float
    natural = _list_dtype(kind if lengths.any() else _core.KIND_FLOAT)
    target = natural if dtype is None else dtype
    codes = _list_codes(target)
    if codes is None:
        return None
    bs, si, ui = _sorted(lengths, order)
    plan = Plan(lengths, (), target, bs, si, ui, lists=seqs)
    plan.list_code, plan.list_lo, plan.list_hi, plan.list_via = codes
    plan.list_cast = dtype is not None      # inferred: only the kinds seen may be read
    return plan


def _list_codes(target: torch.dtype):
    """How read_lists stores numbers of dtype ``target``: (code, lo, hi, via), ``via``
    being the dtype read when the reader cannot store ``target`` itself (then cast,
    exactly: float16/bfloat16 from float64, uint16/uint32 from range-checked int64).
    None for dtypes the reader does not serve (the general path then uses
    ``torch.tensor``). Each element converts like ``torch.tensor(x, dtype=target)``."""
    if target in _INT_CODES:
        return _INT_CODES[target] + (None,)
    if target == torch.bool:
        return "b", 0, 0, None
    if target in _REAL_CODES:
        return _REAL_CODES[target], 0, 0, None
    if target in _COMPLEX_CODES:
        return _COMPLEX_CODES[target], 0, 0, None
    if target in (torch.float16, torch.bfloat16):
        return "d", 0, 0, torch.float64
    if target in (getattr(torch, "uint16", None), getattr(torch, "uint32", None)):
        return "q", 0, 2 ** (8 * target.itemsize) - 1, torch.int64
    return None


def _ranks(unsorted_indices: Optional[np.ndarray], B: int) -> np.ndarray:
    """Rank of every input sample (identity when the input is already sorted)."""
    return unsorted_indices if unsorted_indices is not None else np.arange(B, dtype=np.int64)


def _plan_int_lists(seqs: list, order: str, dtype, defer: bool = False) -> Optional[Plan]:
    """Token ids and the like: lists of Python ints, read in one pass while planning
    (no separate pass to infer their kind). None when the batch holds anything else.
    ``defer``: planned from the lengths alone, read later into the caller's output."""
    lengths = _core.list_lengths(seqs)
    if isinstance(lengths, tuple):
        return None
    bs, si, ui = _sorted(lengths, order)
    if defer:
        return Plan(lengths, (), torch.int64, bs, si, ui, lists=seqs, list_code="q",
                    list_lo=-(2**63), list_hi=2**63 - 1, list_cast=dtype is not None,
                    deferred_ints=True)
    total = _core.sum_lengths(lengths)
    ready = new_output((total,), torch.int64)
    status = _core.read_ints(seqs, lengths, _ranks(ui, len(seqs)), _core.offsets_of(bs),
                             ready.data_ptr(), total)
    if status < 0 or (status == 1 and dtype is None):   # floats, others; all bools
        return None
    return Plan(lengths, (), torch.int64, bs, si, ui, ready=ready)


# Above this many bytes per sample on average over the batch, reading each tensor's
# address (ten attribute reads, ~0.4 us) is cheaper than copying the batch twice
# (concatenation, then scatter), and the output is the only extra memory. Measured
# by pack() of batches of 16 and 256 samples of 8 B, 320 B and 4 KB rows, each way:
# the two break even at 8-12 KB per sample (the concatenation is 1.3-2x faster at
# 2-4 KB, the direct read 1.2-1.4x faster at 16-24 KB).
_DIRECT_TENSOR_BYTES = 10240
# Deferred tensor plans (plan_batch(defer_tensors=True)) are concatenated this many
# bytes at a time by the write, for batches of more than four such chunks.
_CHUNK_BYTES = _core.CHUNK_BYTES


def _plan_tensors(seqs: list, order: str, dtype, defer: bool = False) -> Optional[Plan]:
    """All exact tensors (a subclass may override ``shape``: general path). The path
    is chosen from the whole batch, by its mean sample size (its lengths times the
    first sample's row bytes; each path checks every sample):

    - large samples of one dtype: scatter straight from each tensor;
    - otherwise one torch.cat (validates devices and rows, promotes dtypes, handles
      any strides), then one scatter from the concatenation.

    Anything torch.cat refuses, and sparse, nested or quantized tensors, go the
    general way, which names the bad sample. (Reading a tensor attribute costs
    ~40-60 ns: one read per sample, ``shape``, serves both the choice and torch.cat's
    lengths; torch's nested-tensor constructor, which concatenates and reports sizes
    in one C++ call, needs a dtype read per sample to be safe and measured slower.)

    ``defer`` (:func:`plan_batch`'s ``defer_tensors``): a batch of small tensors of
    more than ``4 * _CHUNK_BYTES`` is planned from the shapes alone, to be
    concatenated a chunk at a time by the write (:func:`_chunked_plan`)."""
    try:        # sparse, nested... tensors raise RuntimeError on these reads
        got = _core.tensor_lengths(seqs, torch.Tensor, torch.cat, _DIRECT_TENSOR_BYTES,
                                   _CHUNK_BYTES if defer else 0)
        if got is None:
            return None
        lens, flat = got
        if flat is True:
            plan = _chunked_plan(seqs, lens, order, dtype)
            if plan is not None:
                return plan
            lens, flat = _core.tensor_lengths(seqs, torch.Tensor, torch.cat, 1 << 62) or (
                None, False)
        found = None
        if flat is None:        # large samples: read each one directly if we can
            t0 = seqs[0]
            d0 = t0.dtype
            if d0 in _SUPPORTED and (dtype is None or dtype == d0 or _cast_pair(d0, dtype)):
                row = tuple(t0.shape[1:])
                found = _core.tensor_sources(seqs, torch.Tensor, d0, row)
            if found is None and defer:     # strided...: a chunk at a time
                plan = _chunked_plan(seqs, lens, order, dtype)
                if plan is not None:
                    return plan
            if found is None:   # not directly readable: concatenate after all
                got = _core.tensor_lengths(seqs, torch.Tensor, torch.cat, 1 << 62)
                if got is None:  # a sample changed shape meanwhile: the general path
                    return None
                lens, flat = got
    except RuntimeError:
        return None
    if found is not None:
        ptrs, lengths, storages, snapshot = found
        bs, si, ui = _sorted(lengths, order)
        cast = dtype is not None and dtype != d0
        return Plan(lengths, row, dtype if cast else d0, bs, si, ui, ptrs=ptrs,
                    keep=storages, storages=snapshot, cast_from=d0 if cast else None)
    if flat is False:           # torch.cat refused the batch
        return None
    if (flat.layout is not torch.strided or flat.dtype not in _SUPPORTED
            or flat.shape[0] != _core.sum_lengths(lens)):  # torch.cat skips 1-D empties
        return None
    return _plan_from_flat(flat, lens, tuple(flat.shape[1:]), order, dtype)


def _chunked_plan(seqs: list, lengths: np.ndarray, order: str, dtype) -> Optional[Plan]:
    """A plan of small tensors to be concatenated a chunk at a time by the write
    (``Plan.tensors``), from their lengths and sample 0's dtype, row and device; None
    where the batch needs the whole concatenation's checks (sample 0 requiring grad
    or not on the CPU, a dtype NumPy lacks, ``dtype=`` another dtype, or a batch that
    the sort refuses: the whole concatenation first names an odd row)."""
    t0 = seqs[0]
    d0 = t0.dtype
    if (d0 not in _TORCH_TO_NP or (dtype is not None and dtype != d0) or not t0.is_cpu
            or t0.requires_grad or t0.layout is not torch.strided):
        return None
    try:
        return _deferred_plan(seqs, lengths, tuple(t0.shape[1:]), d0, order)
    except ValueError:      # unsorted or zero-length: the whole-batch path decides
        return None


def _deferred_plan(tensors: list, lengths: np.ndarray, row, dtype, order: str) -> Plan:
    """The plan of ``tensors`` (rows ``row`` of ``dtype``) written a chunk at a time."""
    bs, si, ui = _sorted(lengths, order)
    return Plan(lengths, row, dtype, bs, si, ui, keep=tensors, tensors=tensors)


def _replan_tensors() -> Replan:
    """What the writes raise when a chunk of a deferred tensor plan is not as planned."""
    return Replan("the tensors are not all of one dtype, on the CPU, without grad: plan "
                  "them again without defer_tensors")


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A tensor subclass as a plain ``torch.Tensor`` sharing its data (and autograd
    graph), read through the C implementation: its overrides cannot lie about it."""
    with torch._C.DisableTorchFunctionSubclass():
        return torch._C.TensorBase.as_subclass(x, torch.Tensor)


def _plan_from_flat(flat: torch.Tensor, lengths: np.ndarray, row, order: str, dtype):
    bs, si, ui = _sorted(lengths, order)
    cast_from = None
    if dtype is not None and flat.dtype != dtype:
        if (flat.device.type == "cpu" and not flat.requires_grad
                and _cast_pair(flat.dtype, dtype) is not None):
            cast_from = flat.dtype      # converted inside the copy: no .to() copy
        else:
            flat = flat.to(dtype)
    # conjugate / negative views: materialize their values (no-ops otherwise)
    flat = flat.resolve_conj().resolve_neg()
    plan = Plan(lengths, row, dtype if cast_from is not None else flat.dtype, bs, si, ui,
                cast_from=cast_from)
    if flat.requires_grad or flat.device.type != "cpu":
        plan.flat = flat      # differentiable / on-device: the caller uses torch ops
        return plan
    flat = flat.contiguous()
    # the kernel reads total * row_bytes bytes from flat's address: check them against
    # the storage that really backs it, not against Python-level shapes
    have = flat.untyped_storage().nbytes() - flat.storage_offset() * flat.element_size()
    src_row_bytes = math.prod(plan.row) * flat.element_size()
    if tuple(flat.shape) != plan.shape or have < plan.total * src_row_bytes:
        raise ValueError(
            f"the samples' lengths ({plan.total} rows of {src_row_bytes} bytes) do not "
            f"match their data ({tuple(flat.shape)}, {have} bytes)")
    plan.ptrs = _core.chunk_pointers(flat.data_ptr(), lengths, src_row_bytes)
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


# integer dtypes narrower than int64 (uint64 is read by torch.tensor itself)
_NARROW_INTS = frozenset(d for d in _SUPPORTED if not d.is_floating_point and not d.is_complex
                         and d not in (torch.bool, torch.int64, getattr(torch, "uint64", None)))
# leaves torch.tensor reads as numbers (0-d tensors are checked separately)
_NUMBER_TYPES = (bool, int, float, complex, np.bool_, np.number)


def _normalize(i: int, x: Any, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """One sample as a tensor (the general path), with errors naming the sample. Lists
    are built directly in ``dtype`` when given (exact, like ``torch.tensor``)."""
    kind = type(x)      # not isinstance: a __class__ property could claim anything
    if issubclass(kind, torch.Tensor):
        if kind is not torch.Tensor and not x.is_nested:
            try:
                x = _plain(x)
            except (RuntimeError, NotImplementedError) as e:
                raise _sample_error(TypeError, i, f"a {type(x).__name__} cannot be read as "
                                    f"a plain tensor ({e})") from e
        t = x
        if t.is_nested or t.layout is not torch.strided:
            what = "nested" if t.is_nested else str(t.layout).replace("torch.", "")
            raise _sample_error(
                TypeError, i, f"{what} tensors are not supported; expected a dense "
                "(strided) tensor, e.g. x.to_dense()")
        if t.dtype not in _SUPPORTED:
            raise _sample_error(TypeError, i, f"tensor dtype {t.dtype} is not supported; "
                                f"expected one of {_SUPPORTED_NAMES}")
    elif issubclass(kind, np.ndarray):
        if x.dtype.newbyteorder("=") not in _NP_TO_TORCH:
            raise _sample_error(
                TypeError, i, f"numpy dtype {x.dtype} is not supported; expected one of "
                f"{_SUPPORTED_NAMES}")
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        # copy unless C-contiguous, aligned, with non-negative strides (a size-1 axis
        # may carry any stride and still count as contiguous; torch.from_numpy refuses
        # < 0; torch's kernels assume aligned elements: misaligned complex128 crashes)
        if (not x.flags.c_contiguous or not x.flags.aligned
                or any(s < 0 for s in x.strides)):
            x = np.array(x, order="C", copy=True)
        t = torch.from_numpy(x)
    elif issubclass(kind, (list, tuple)):
        t = _list_tensor(i, x, dtype)
    else:
        raise _sample_error(TypeError, i, f"expected {_ACCEPTED}, got {type(x).__name__}")
    if t.dim() == 0:
        raise _sample_error(
            ValueError, i, "is zero-dimensional; expected a sequence with a leading "
            "(time) dimension")
    return t


def _list_tensor(i: int, x: Any, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """A (nested) list sample as a tensor. The list is first walked by
    ``_core.flatten_nested`` (bounded: no hang or crash on self-referential lists or
    huge DAGs, lying subclasses read through the base type); torch.tensor then reads
    the private flat copy of its leaves."""
    leaves, shape = _core.flatten_nested(x, i)
    for k, leaf in enumerate(leaves):
        kind = type(leaf)   # not isinstance: torch.tensor must not walk a fake number
        if not issubclass(kind, _NUMBER_TYPES) and not (
                issubclass(kind, torch.Tensor) and leaf.dim() == 0):
            raise _sample_error(
                TypeError, i, f"expected {_ACCEPTED}, found {type(leaf).__name__} "
                f"(element {k} in row-major order)")
    # torch.tensor wraps ints into narrow integer types (-1 -> 255 in uint8): read them
    # exactly as int64 and range-check them instead
    narrow = dtype if dtype in _NARROW_INTS else None
    try:
        t = torch.tensor(leaves, dtype=dtype if narrow is None else torch.int64).view(shape)
    except (OverflowError, TypeError, ValueError, RuntimeError) as e:
        msg = str(e)
        if isinstance(e, OverflowError) or "verflow" in msg:
            raise _sample_error(OverflowError, i, f"value out of range for "
                                f"{dtype or 'its dtype'} ({msg})") from e
        if isinstance(e, TypeError):
            raise _sample_error(TypeError, i, f"cannot convert it ({msg})") from e
        raise _sample_error(ValueError, i, f"cannot convert it ({msg})") from e
    if narrow is None:
        return t
    if t.numel():
        info = torch.iinfo(narrow)
        lo, hi = int(t.min()), int(t.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise _sample_error(OverflowError, i, f"value {bad} does not fit {narrow} "
                                f"(range {info.min}..{info.max})")
    return t.to(narrow)


def _promote(a: torch.dtype, b: torch.dtype, i: int) -> torch.dtype:
    """``torch.promote_types``, extended to uint16/32/64 (which torch does not promote)
    the way NumPy does it, except where that loses integer values (uint64 with a
    signed type would become float64): a TypeError naming sample ``i`` then."""
    try:
        return torch.promote_types(a, b)
    except RuntimeError:
        pass
    na, nb = _TORCH_TO_NP.get(a), _TORCH_TO_NP.get(b)
    if na is not None and nb is not None:
        r = _NP_TO_TORCH.get(np.promote_types(na, nb))
        if r is not None and (r.is_floating_point <= (a.is_floating_point or b.is_floating_point)):
            return r
    raise _sample_error(TypeError, i, f"cannot promote {a} with {b} without losing "
                        "values; pass dtype= to choose the result type")


def _shape_str(row: Tuple[int, ...]) -> str:
    return "(" + ", ".join(["L"] + [str(d) for d in row]) + ("," if not row else "") + ")"


def _plan_general(seqs: list, order: str, dtype, defer: bool = False) -> Plan:
    """Any mix of kinds: normalize each sample, check everything, name the bad one.
    ``defer`` (``plan_batch(defer_tensors=True)``): a batch of more than
    ``4 * _CHUNK_BYTES`` of CPU samples is concatenated a chunk at a time by the write
    (``Plan.tensors``: the samples as tensors of the batch's dtype) instead of here."""
    ts = [_normalize(i, x, dtype) for i, x in enumerate(seqs)]
    t0 = ts[0]
    row = tuple(t0.shape[1:])
    for i, t in enumerate(ts):
        if order != "none" and t.shape[0] == 0:     # the first fault of an empty sample
            raise ValueError(f"sample {i} has length 0: every sample must have length >= 1")
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
        target = t0.dtype
        for i, t in enumerate(ts):
            if t.dtype != target:
                target = _promote(target, t.dtype, i)
    if (defer and target in _TORCH_TO_NP
            and _core.sum_lengths(lengths) * math.prod(row) * target.itemsize
            > 4 * _CHUNK_BYTES
            and all(t.device.type == "cpu" and not t.requires_grad for t in ts)):
        tensors = [t.to(target).resolve_conj().resolve_neg() for t in ts]
        return _deferred_plan(tensors, lengths, row, target, order)
    flat = torch.cat([t.to(target) for t in ts])
    return _plan_from_flat(flat, lengths, row, order, None)


@torch_functions_off
def write_plan(plan: Plan, out: torch.Tensor, *, _trusted: bool = False) -> torch.Tensor:
    """Write a planned batch into ``out``, a contiguous CPU tensor of ``plan.shape``
    and ``plan.dtype`` that the caller allocated (pinned, shared memory...).

    ``out`` is checked first, whatever the plan's kind (ValueError). A list sample that
    changed length since it was planned raises ValueError naming it."""
    plan.check_planned()
    dst = out if _trusted else check_out(out, plan.shape, plan.dtype)
    if plan.batch_sizes is None:
        raise ValueError("this plan was made with sort=False, for padding: write it with "
                         "fastcollate.padding.write_padded")
    if plan.flat is not None:
        dst.copy_(packed_by_torch(plan))
        return out
    if plan.ready is not None:
        dst.copy_(plan.ready.view(dst.shape))
        return out
    if plan.lists is not None and plan.deferred_ints:
        check_list_code(plan.list_code, dst)
        status = _core.read_ints(plan.lists, plan.lengths,
                                 _ranks(plan.unsorted_indices, len(plan.lengths)),
                                 _core.offsets_of(plan.batch_sizes), dst.data_ptr(),
                                 plan.total)
        if status < 0 or (status == 1 and not plan.list_cast):    # floats...; all bools
            raise NotInts("the lists hold other numbers than ints: plan them again "
                          "without defer_ints")
        return out
    if plan.lists is not None:
        target = dst if plan.list_via is None else torch.empty(plan.shape, dtype=plan.list_via)
        check_list_code(plan.list_code, target)
        _core.read_lists(plan.lists, plan.lengths,
                         _ranks(plan.unsorted_indices, len(plan.lengths)),
                         _core.offsets_of(plan.batch_sizes), target.data_ptr(), plan.total,
                         plan.list_code, plan.list_lo, plan.list_hi, plan.list_cast)
        if plan.list_via is not None:
            dst.copy_(target)
        return out
    if plan.tensors is not None:
        if not _core.pack_chunks_into(plan.tensors, plan.lengths, plan.sorted_indices,
                                      plan.batch_sizes, _TORCH_TO_NP[plan.dtype], plan.row,
                                      torch.cat, torch.Tensor, dst.data_ptr(),
                                      dst.shape[0], _CHUNK_BYTES):
            raise _replan_tensors()
        return out
    if plan.cast_from is not None:
        pair = _cast_pair(cast(torch.dtype, plan.cast_from), plan.dtype)
        if pair is None or dst.dtype != plan.dtype:
            raise ValueError(f"cannot convert {plan.cast_from} into {dst.dtype} rows")
        _cast.cast_pack(plan.require_ptrs(), plan.lengths, plan.sorted_indices,
                        plan.batch_sizes, math.prod(plan.row), pair[0], pair[1],
                        dst.data_ptr(), dst.shape[0], **plan.source_checks())
        return out
    if plan.convert:
        check_list_code(plan.convert[1:], dst)
        _store.convert_packed(plan.convert[0], plan.convert[1], plan.require_ptrs(),
                              plan.lengths, plan.sorted_indices, math.prod(plan.row),
                              dst.data_ptr(), plan.total)
        return out
    _core.scatter(plan.require_ptrs(), plan.lengths, plan.sorted_indices, plan.batch_sizes,
                  plan.row_bytes, dst.data_ptr(), **plan.source_checks())
    return out


def cast_into(plan: Plan, dst: torch.Tensor, starts: np.ndarray, offsets: np.ndarray,
              n_rows: int) -> None:
    """Write a plan whose sources are of dtype ``plan.cast_from`` into ``dst`` (checked:
    ``plan.dtype``, ``n_rows`` rows), converting every element: row ``t`` of sample
    ``i`` lands at row ``starts[i] + offsets[t]`` (:func:`fastcollate._cast.cast_scatter`)."""
    pair = _cast_pair(cast(torch.dtype, plan.cast_from), plan.dtype)
    if pair is None or dst.dtype != plan.dtype or dst.numel() != n_rows * math.prod(plan.row):
        raise ValueError(f"cannot convert {plan.cast_from} into {dst.dtype} rows")
    _cast.cast_scatter(plan.require_ptrs(), plan.lengths, starts, offsets, math.prod(plan.row),
                       pair[0], pair[1], dst.data_ptr(), n_rows, **plan.source_checks())


_CODE_BYTES = {"q": 8, "i": 4, "h": 2, "c": 1, "b": 1, "d": 8, "f": 4, "D": 16, "F": 8}


def check_list_code(code: str, target: torch.Tensor) -> None:
    """A plan's element code must store exactly ``target``'s element size (a plan is a
    plain dataclass: an edited ``list_code`` must not write 16 bytes into 1-byte slots)."""
    if _CODE_BYTES.get(code) != target.element_size():
        raise ValueError(f"list code {code!r} does not store {target.dtype} elements")


def check_out(out: Any, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``out`` as a plain tensor (read through torch's C implementation, so a subclass
    cannot lie about it), checked to be a contiguous, dense CPU tensor of ``shape`` and
    ``dtype`` whose storage really holds it; ValueError otherwise."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor, got {type(out).__name__}")
    t = out if type(out) is torch.Tensor else _plain(out)
    ok = (tuple(t.shape) == shape and t.dtype == dtype and t.device.type == "cpu"
          and t.layout is torch.strided and not t.is_nested)
    if ok:
        ok = t.is_contiguous() and not t.is_conj() and not t.is_neg() and (
            (t.storage_offset() + t.numel()) * t.element_size()
            <= t.untyped_storage().nbytes())
    if not ok:
        raise ValueError(
            f"out must be a contiguous CPU tensor of shape {shape} and dtype {dtype}, got "
            f"{tuple(t.shape) if not t.is_nested else 'nested'} {t.dtype} on {t.device}")
    return t


def new_output(shape: Tuple[int, ...], dtype: torch.dtype, pin_memory: bool = False
               ) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, pin_memory=pin_memory)``; outputs of
    ``_core.HUGE_MIN_BYTES`` or more in ordinary memory are a ``_core.new_block``
    instead (huge pages, and a buffer reused from the cache of large outputs when one
    fits: no page faults). Pinned memory is left to its allocator."""
    if not pin_memory:
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= n
        if nbytes >= _core.HUGE_MIN_BYTES:
            return torch.from_numpy(_core.new_block(nbytes)).view(dtype).view(shape)
    return torch.empty(shape, dtype=dtype, pin_memory=pin_memory)


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


def _set_direct_tensor_bytes(n: int) -> None:
    """Set the direct-read threshold (bytes per sample) here and in the kernels'
    one-call paths (the fuzzer drops it to 1 to read every tensor batch directly)."""
    global _DIRECT_TENSOR_BYTES
    _DIRECT_TENSOR_BYTES = n
    _core.set_packed_factories(torch.from_numpy, PackedSequence, _NP_TO_TORCH, torch.Tensor,
                               torch.cat, n)


_set_direct_tensor_bytes(_DIRECT_TENSOR_BYTES)
_mode_enabled = torch._C._is_torch_function_mode_enabled


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
    # NumPy and small tensor batches in one call (no torch function mode: that takes
    # the path below)
    tried = False
    if not pin_memory and not _mode_enabled():
        if dtype is None:
            packed = _core.pack_packed(sequences, enforce_sorted)
            if packed is None and type(sequences) in BATCH_PACKERS:
                packed = BATCH_PACKERS[type(sequences)](sequences, enforce_sorted)
            tried = True
        else:
            packed = _packed_as(sequences, enforce_sorted, dtype)
        if packed is not None:
            return packed
    return _pack(sequences, enforce_sorted, dtype, pin_memory, tried)


def _packed_as(sequences: Sequence[Any], enforce_sorted: bool, dtype: Any
               ) -> Optional[PackedSequence]:
    """:func:`pack` with ``dtype=`` of a list or tuple of NumPy arrays in one call: of
    that dtype already (``_core.pack_packed``), or converted exactly inside the copy
    (``_cast.pack_arrays_cast``: uint16 into int64...); None for anything else."""
    if (type(sequences) not in (list, tuple) or not sequences
            or type(sequences[0]) is not np.ndarray or not isinstance(dtype, torch.dtype)):
        return None
    np_dtype = _TORCH_TO_NP.get(dtype)
    if np_dtype is None:
        return None
    if sequences[0].dtype == np_dtype:
        return _core.pack_packed(sequences, enforce_sorted)
    return wrap_arrays(_cast.pack_arrays_cast(sequences, enforce_sorted, np_dtype))


@torch_functions_off
def _pack(sequences: Sequence[Any], enforce_sorted: bool, dtype: Optional[torch.dtype],
          pin_memory: bool, tried: bool = False) -> PackedSequence:
    """:func:`pack` of everything but the batches :func:`_core.pack_packed` takes
    (``tried``: it declined this one, so :func:`packed_in_one_call` would too)."""
    if (not tried and type(sequences) in (list, tuple) and sequences and dtype is None
            and not pin_memory):
        packed = wrap_arrays(packed_in_one_call(sequences, enforce_sorted))
        if packed is not None:
            return packed
    plan = plan_batch(sequences, enforce_sorted=enforce_sorted, dtype=dtype,
                      defer_tensors=True)
    if plan.tensors is not None:
        try:
            data = write_plan(plan, new_output(plan.shape, plan.dtype, pin_memory),
                              _trusted=True)
            return wrap_packed(data, plan)
        except Replan:      # mixed dtypes...: planned again, once the output is freed
            pass
        plan = plan_batch(sequences, enforce_sorted=enforce_sorted, dtype=dtype)
    if plan.flat is not None:
        data = packed_by_torch(plan)
        if pin_memory and data.device.type == "cpu":
            data = data.pin_memory()
    elif plan.ready is not None and not pin_memory:
        data = plan.ready
    else:
        data = write_plan(plan, new_output(plan.shape, plan.dtype, pin_memory),
                          _trusted=True)
    return wrap_packed(data, plan)


def packed_in_one_call(sequences: Sequence[Any], enforce_sorted: bool
                       ) -> Optional[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                                           Optional[np.ndarray]]]:
    """:func:`pack` of the common batches in one kernel call (scan, sort, allocate,
    scatter) instead of plan -> write -> wrap, as arrays ``(data, batch_sizes,
    sorted_indices, unsorted_indices)`` (:func:`wrap_arrays` makes them a
    PackedSequence); None for anything else (the general path packs it or names the
    odd sample). ~4 us per call at B=16 against ~9-10 us (NumPy batches reach pack()
    through `_core.pack_packed` first: ~3 us).

    - Plain ndarrays of one dtype and row (``_core.pack_arrays``).
    - Small exact CPU tensors (``_core.pack_tensors``): one ``numel()`` per tensor, one
      ``torch.cat`` (which validates and promotes like torch), then sort, allocation
      and scatter from the concatenation (a chunk of ranks at a time for batches over
      ``_core.CHUNK_BYTES``: peak memory is the output plus one chunk). Batches of
      large samples (``_DIRECT_TENSOR_BYTES`` on average) are read tensor by tensor
      where they lie, without the concatenation's copy. None for strided large
      samples (the planned path concatenates them), for anything
      torch.cat refuses or the kernel cannot split (a zero-length sample, chunks of
      different dtypes...), and for outputs that need torch ops (requiring grad, CUDA).

    Zero-length samples, and unsorted ones with ``enforce_sorted``, raise
    ``ValueError`` naming the sample, as the general path does."""
    kind = type(sequences[0])
    if kind is np.ndarray:      # (None for a dtype torch lacks)
        return _core.pack_arrays(sequences, enforce_sorted, torch_only=True)
    if kind is torch.Tensor:
        return _core.pack_tensors(sequences, torch.Tensor, torch.cat, _DIRECT_TENSOR_BYTES,
                                  enforce_sorted)
    return None


def wrap_arrays(packed: Optional[tuple]) -> Optional[PackedSequence]:
    """The arrays of :func:`packed_in_one_call` as a PackedSequence, sharing
    their memory (``torch.from_numpy``, ~0.5 us each, is the cheapest way to make a
    tensor; ``PackedSequence._make`` skips ``__new__``'s re-validation)."""
    if packed is None:
        return None
    data, bs, si, ui = packed
    f = torch.from_numpy
    if si is None:
        return PackedSequence._make((f(data), f(bs), None, None))
    return PackedSequence._make((f(data), f(bs), f(si), f(ui)))


@torch_functions_off
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
        if lengths.device.type == "meta":
            raise ValueError("lengths is a meta tensor: it holds no values")
        lengths = lengths.detach().cpu().numpy()
    # sort_lengths checks them: one-dimensional integers that fit int64, each >= 1
    bs, si, ui = _core.sort_lengths(lengths, enforce_sorted)
    conv = (lambda a: None if a is None else torch.from_numpy(a))
    return torch.from_numpy(bs), conv(si), conv(ui)
