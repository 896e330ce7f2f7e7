"""pad(): a ragged batch into one padded tensor in one pass (no per-sample torch ops)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch

from . import _core, _store, packing
from .packing import (_TORCH_TO_NP, Plan, Replan, cast_into, check_list_code, check_out,
                      new_output, plan_batch, torch_functions_off)

__all__ = ["pad", "padded_length", "padded_shape", "write_padded", "check_padding_side",
           "check_multiple"]


def check_multiple(pad_to_multiple_of: Any) -> Optional[int]:
    """``pad_to_multiple_of`` as an int (None stays None): a positive int or NumPy
    integer, not a bool (TypeError for other types, ValueError below 1)."""
    if pad_to_multiple_of is None:
        return None
    if isinstance(pad_to_multiple_of, (bool, np.bool_)) or not isinstance(
            pad_to_multiple_of, (int, np.integer)):
        raise TypeError(f"pad_to_multiple_of must be a positive int, got "
                        f"{pad_to_multiple_of!r}")
    if pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of}")
    return int(pad_to_multiple_of)


def padded_length(plan: Plan, pad_to_multiple_of: Optional[int] = None) -> int:
    """The time dimension: the longest sample, rounded up to a multiple if asked."""
    T = plan.length_range[1]
    multiple = check_multiple(pad_to_multiple_of)
    if multiple is not None:
        T = -(-T // multiple) * multiple
    if len(plan.lengths) * T * max(math.prod(plan.row), 1) >= 2**62:
        raise ValueError(f"the padded batch would have {len(plan.lengths)} x {T} rows: "
                         "too large (pad_to_multiple_of?)")
    return T


def padded_shape(plan: Plan, T: int, batch_first: bool) -> Tuple[int, ...]:
    B = len(plan.lengths)
    return ((B, T) if batch_first else (T, B)) + plan.row


def check_padding_side(padding_side: str) -> None:
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")


def _check_padding_value(value, dtype: torch.dtype) -> None:
    """The padding value must be a number the dtype can hold: an integer dtype must hold
    it (torch.full would wrap -3 to 253), a real dtype cannot take a complex value."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if not isinstance(value, (bool, int, float, complex, np.bool_, np.number)):
        raise TypeError(f"padding_value must be a number, got {type(value).__name__}")
    if isinstance(value, (complex, np.complexfloating)) and not dtype.is_complex:
        raise TypeError(f"padding_value {value!r} is complex but the dtype is {dtype}")
    if dtype.is_floating_point:      # a finite value must stay finite (not round to inf)
        real = float(cast(Any, value))
        if math.isfinite(real) and abs(real) > torch.finfo(dtype).max:
            raise OverflowError(f"padding_value {value!r} does not fit {dtype} "
                                f"(largest {torch.finfo(dtype).max})")
    elif not (dtype.is_complex or dtype == torch.bool):
        info = torch.iinfo(dtype)
        real = cast(Any, value)                    # not complex: checked above
        if not info.min <= real <= info.max:       # NaN compares False: refused too
            raise OverflowError(f"padding_value {value!r} does not fit {dtype} "
                                f"(range {info.min}..{info.max})")


def _pad_element(value: Union[int, float, bool, complex], dtype: torch.dtype
                 ) -> Optional[bytes]:
    """One element of padding as bytes, the pattern the kernel repeats over every
    padding row (None when it is all zero bytes: memset). Never a whole row: rows may
    be wide."""
    _check_padding_value(value, dtype)
    if value == 0 and not (isinstance(value, float) and math.copysign(1.0, value) < 0):
        return None                                 # (-0.0 has a sign bit: not zeros)
    try:
        raw = torch.full((1,), value, dtype=dtype).view(torch.uint8).numpy().tobytes()
    except RuntimeError as e:      # e.g. 1e300 into float32: torch refuses to overflow
        raise OverflowError(f"padding_value {value!r} does not fit {dtype} ({e})") from e
    return None if not any(raw) else raw


@torch_functions_off
def write_padded(plan: Plan, out: torch.Tensor, *, batch_first: bool = True,
                 padding_value: Union[int, float, bool, complex] = 0,
                 padding_side: str = "right", _trusted: bool = False) -> torch.Tensor:
    """Write a batch planned with ``plan_batch(..., sort=False)`` into ``out``, a
    contiguous CPU tensor of ``padded_shape(plan, T, batch_first)``, padding included.

    ``out`` is checked first (ValueError); ``T`` must hold the longest sample. A list
    sample that changed length since it was planned raises ValueError naming it."""
    check_padding_side(padding_side)
    plan.check_planned()
    B = len(plan.lengths)
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(f"out must be a tensor of shape {padded_shape(plan, 0, batch_first)} "
                         "with T >= the longest sample in place of 0")
    T = out.shape[1] if batch_first else out.shape[0]
    dst = out if _trusted else check_out(out, padded_shape(plan, T, batch_first), plan.dtype)
    if B and T < plan.length_range[1]:
        raise ValueError(f"out has T = {T} steps but the longest sample has "
                         f"{plan.length_range[1]}")
    left = padding_side == "left"
    _check_padding_value(padding_value, plan.dtype)
    if plan.flat is not None:
        dst.copy_(padded_by_torch(plan, T, batch_first, padding_value, left))
        return out
    if plan.tensors is not None:    # small tensors, concatenated a chunk at a time
        if not _core.pad_chunks_into(plan.tensors, plan.lengths, _TORCH_TO_NP[plan.dtype],
                                     plan.row, torch.cat, torch.Tensor, dst.data_ptr(), T,
                                     batch_first, left,
                                     _pad_element(padding_value, plan.dtype),
                                     packing._CHUNK_BYTES):
            raise packing._replan_tensors()
        return out
    if plan.cast_from is not None:
        # padding first (no sources: only the padding rows are written), then every
        # sample converted into its slots
        _core.pad_scatter(np.zeros(B, dtype=np.int64), plan.lengths, T, plan.row_bytes,
                          dst.data_ptr(), batch_first, left,
                          _pad_element(padding_value, plan.dtype))
        cast_into(plan, dst, *_slots(plan.lengths, T, batch_first, left), B * T)
        return out
    if plan.convert:               # a store's rows, converted while copying
        check_list_code(plan.convert[1:], dst)
        pad = _pad_element(padding_value, plan.dtype) or bytes(dst.element_size())
        _store.convert_padded(plan.convert[0], plan.convert[1], plan.require_ptrs(),
                              plan.lengths, T, math.prod(plan.row), dst.data_ptr(), B * T,
                              batch_first, left, pad)
        return out
    if plan.lists is None:
        _core.pad_scatter(plan.require_ptrs(), plan.lengths, T, plan.row_bytes,
                          dst.data_ptr(), batch_first, left,
                          _pad_element(padding_value, plan.dtype), **plan.source_checks())
        return out
    # Flat lists of Python numbers: padding first, then every element to its slot.
    target = dst if plan.list_via is None else torch.empty(dst.shape, dtype=plan.list_via)
    check_list_code(plan.list_code, target)
    row_bytes = target.element_size()
    _core.pad_scatter(np.zeros(B, dtype=np.int64), plan.lengths, T, row_bytes,
                      target.data_ptr(), batch_first, left,
                      _pad_element(padding_value, target.dtype))
    starts, offsets = _slots(plan.lengths, T, batch_first, left)
    _core.read_lists(plan.lists, plan.lengths, starts, offsets, target.data_ptr(),
                     target.numel(), plan.list_code, plan.list_lo, plan.list_hi,
                     plan.list_cast)
    if plan.list_via is not None:
        dst.copy_(target)
    return out


def _slots(lengths: np.ndarray, T: int, batch_first: bool, left: bool
           ) -> Tuple[np.ndarray, np.ndarray]:
    """``(starts, offsets)``: row ``t`` of sample ``i`` goes to padded row
    ``starts[i] + offsets[t]`` (rows of the ``B * T`` padded rows, in memory order)."""
    B = len(lengths)
    shift = (T - lengths) if left else np.zeros(B, dtype=np.int64)
    idx = np.arange(B, dtype=np.int64)
    if batch_first:
        return idx * T + shift, np.arange(T + 1, dtype=np.int64)
    return idx + shift * B, np.arange(T + 1, dtype=np.int64) * B


def padded_positions(lengths: np.ndarray, T: int, batch_first: bool, left: bool) -> np.ndarray:
    """For every row of the input-order concatenation, its row in the padded buffer."""
    B = len(lengths)
    sample = np.repeat(np.arange(B, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    t = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
    if left:
        t += np.repeat(T - lengths, lengths)
    return sample * T + t if batch_first else t * B + sample


def padded_by_torch(plan: Plan, T: int, batch_first: bool, padding_value, left: bool
                    ) -> torch.Tensor:
    """Padding by torch ops on ``plan.flat`` (differentiable, any device)."""
    flat = plan.require_flat()
    _check_padding_value(padding_value, flat.dtype)
    B = len(plan.lengths)
    try:
        base = flat.new_full((B * T,) + plan.row, padding_value)
    except RuntimeError as e:      # a value the float dtype cannot hold (1e10 in float16)
        raise OverflowError(f"padding_value {padding_value!r} does not fit {flat.dtype} "
                            f"({e})") from e
    idx = torch.from_numpy(padded_positions(plan.lengths, T, batch_first, left))
    out = base.index_copy(0, idx.to(flat.device), flat)
    return out.view(padded_shape(plan, T, batch_first))


def pad(sequences: Sequence[Any], *, batch_first: bool = True,
        padding_value: Union[int, float, bool, complex] = 0, padding_side: str = "right",
        pad_to_multiple_of: Optional[int] = None, return_lengths: bool = False,
        dtype: Optional[torch.dtype] = None, pin_memory: bool = False):
    """Pad a ragged batch into one tensor, in one pass from the ragged list.

    Equal to ``torch.nn.utils.rnn.pad_sequence(tensors, batch_first, padding_value,
    padding_side)`` where the options overlap, but takes the same inputs as
    :func:`fastcollate.pack` (tensors, NumPy arrays, lists of numbers, mixed) with the
    same dtype rules (promotion, never truncation), and copies each element once.

    Parameters
    ----------
    sequences : list or tuple of samples of shape ``(L_i, *row)`` (``L_i`` may be 0).
    batch_first : bool, default True
        ``(B, T, *row)`` if True, else ``(T, B, *row)``. (torch's default is False.)
    padding_value : number, default 0
    padding_side : {"right", "left"}
    pad_to_multiple_of : int, optional
        Round ``T`` up to a multiple of this (tensor-core friendly shapes).
    return_lengths : bool
        Also return the lengths as a CPU int64 tensor.
    dtype : torch.dtype, optional
        Cast to this dtype.
    pin_memory : bool
        Allocate the result in page-locked memory.

    Returns
    -------
    Tensor, or ``(Tensor, lengths)`` with ``return_lengths``.

    Examples
    --------
    >>> from fastcollate import pad
    >>> pad([[1, 2, 3], [4]], padding_value=-1).tolist()
    [[1, 2, 3], [4, -1, -1]]
    >>> x, lengths = pad([[1, 2, 3], [4]], padding_side="left", return_lengths=True)
    >>> x.tolist(), lengths.tolist()
    ([[1, 2, 3], [0, 0, 4]], [3, 1])
    """
    check_padding_side(padding_side)
    # NumPy and small tensor batches in one call (no torch function mode: that takes
    # the path below)
    if dtype is None and not pin_memory and not packing._mode_enabled():
        got = _padded_arrays(sequences, batch_first, padding_value, padding_side,
                             pad_to_multiple_of)
        if got is not None:
            out, lengths = torch.from_numpy(got[0]), got[1]
            return (out, torch.from_numpy(lengths)) if return_lengths else out
    return _pad(sequences, batch_first, padding_value, padding_side, pad_to_multiple_of,
                return_lengths, dtype, pin_memory)


def _padded_arrays(sequences: Sequence[Any], batch_first: bool, padding_value: Any,
                   padding_side: str, pad_to_multiple_of: Optional[int]
                   ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """:func:`pad` of the common batches in one or two kernel calls, as ``(padded,
    lengths)`` arrays; None for anything else (the general path pads it or names the
    odd sample).

    - A list or tuple of NumPy arrays of one dtype and row (``_core.pad_arrays``). A
      padding value sample 0's dtype cannot hold is left to the general path: a mixed
      batch may promote to a dtype that holds it.
    - Exact CPU tensors (``_core.pad_tensors``): ``numel()`` per tensor, then for
      small non-empty samples of 1 MB in all at most one ``torch.cat`` (which validates
      and promotes like torch) and ``_core.pad_flat`` from the concatenation; larger
      samples (``packing._DIRECT_TENSOR_BYTES`` on average) or batches are read
      tensor by tensor where they lie (contiguous, one dtype: no extra memory). The
      rest (strided or mixed-dtype large batches...) goes through the plan, which
      concatenates them a chunk at a time (peak memory: the output plus one chunk)."""
    if type(sequences) not in (list, tuple) or not sequences:
        return None
    first = sequences[0]
    multiple = check_multiple(pad_to_multiple_of) or 1
    left = padding_side == "left"
    if type(first) is np.ndarray:
        ok, elem = _pad_bytes(padding_value, first.dtype)
        if not ok:
            return None
        return _core.pad_arrays(sequences, batch_first, left, elem, multiple)
    if type(first) is torch.Tensor:
        return _core.pad_tensors(sequences, torch.Tensor, torch.cat,
                                 packing._DIRECT_TENSOR_BYTES, 4 * packing._CHUNK_BYTES,
                                 lambda d: _pad_bytes(padding_value, d), batch_first, left,
                                 multiple)
    return None


def _pad_bytes(padding_value: Any, np_dtype: np.dtype) -> Tuple[bool, Optional[bytes]]:
    """``(True, _pad_element(...))`` for a NumPy dtype; ``(False, None)`` when torch
    lacks the dtype or the value does not fit it (the general path then decides, or
    says why)."""
    tdtype = packing._NP_TO_TORCH.get(np_dtype)
    if tdtype is None:
        return False, None
    try:
        return True, _pad_element(padding_value, tdtype)
    except (TypeError, ValueError, OverflowError):
        return False, None


@torch_functions_off
def _pad(sequences: Sequence[Any], batch_first: bool, padding_value: Any,
         padding_side: str, pad_to_multiple_of: Optional[int], return_lengths: bool,
         dtype: Optional[torch.dtype], pin_memory: bool):
    """:func:`pad` of everything but the NumPy batches :func:`_padded_arrays` takes."""
    plan = plan_batch(sequences, dtype=dtype, sort=False, defer_tensors=True)
    T = padded_length(plan, pad_to_multiple_of)
    if plan.tensors is not None:
        try:
            out = new_output(padded_shape(plan, T, batch_first), plan.dtype, pin_memory)
            write_padded(plan, out, batch_first=batch_first, padding_value=padding_value,
                         padding_side=padding_side, _trusted=True)
            return (out, torch.from_numpy(plan.lengths)) if return_lengths else out
        except Replan:      # mixed dtypes...: planned again, once the output is freed
            out = None
        plan = plan_batch(sequences, dtype=dtype, sort=False)
        T = padded_length(plan, pad_to_multiple_of)
    if plan.flat is not None:
        out = padded_by_torch(plan, T, batch_first, padding_value, padding_side == "left")
        if pin_memory and out.device.type == "cpu":
            out = out.pin_memory()
    else:
        out = new_output(padded_shape(plan, T, batch_first), plan.dtype, pin_memory)
        write_padded(plan, out, batch_first=batch_first, padding_value=padding_value,
                     padding_side=padding_side, _trusted=True)
    if return_lengths:
        return out, torch.from_numpy(plan.lengths)
    return out
