"""Drop-ins for :mod:`torch.nn.utils.rnn`: same signatures, defaults, results and errors.

``import fastcollate.rnn as rnn_utils`` in place of ``import torch.nn.utils.rnn as
rnn_utils``: :func:`pack_sequence` and :func:`pad_sequence` take torch's arguments with
torch's defaults (``enforce_sorted=True``, ``batch_first=False``, ``padding_value=0.0``,
``padding_side="right"``) and return what torch returns, bit for bit: the same
``PackedSequence`` fields (``sorted_indices`` and ``unsorted_indices`` are None with
``enforce_sorted=True``; otherwise torch's own permutation, ties included), the same
dtype (that of the first sequence), device and shape. They copy every element once,
straight from the sequences into the result (torch pads, sorts, gathers and packs).

The fast path serves plain dense CPU tensors of one dtype (the data-loading case). Any
other input goes to torch's implementation itself, so torch's behaviour is kept
exactly: tensors that require grad or live on another device, tensor subclasses,
mixed dtypes (torch casts to the first one's), rows that torch broadcasts, an active
``TorchFunctionMode`` or default device, tracing, and every input torch refuses (which
then raises torch's error). Unsorted sequences with ``enforce_sorted=True`` raise
:class:`fastcollate.UnsortedError`, which is a ``RuntimeError`` like torch's error (and
a ``ValueError``, like every fastcollate input error), with a message holding torch's.

:func:`pack_padded_sequence` gathers the packed rows from the padded tensor in one
``index_select`` (torch sorts, gathers the whole padded batch, then packs it): any
device, differentiable, torch's results; inputs torch would refuse or mis-read
(lengths longer than the padded time dimension, unsorted lengths with
``enforce_sorted=True``, ...) are handed to torch's own function.

The other names (``PackedSequence``, ``pad_packed_sequence``, ``unpad_sequence``,
``unpack_sequence``, ``invert_permutation``) are torch's own.

Examples
--------
>>> import torch
>>> from fastcollate import rnn
>>> a, b, c = torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])
>>> rnn.pack_sequence([a, b, c])
PackedSequence(data=tensor([1, 4, 6, 2, 5, 3]), batch_sizes=tensor([3, 2, 1]), sorted_indices=None, unsorted_indices=None)
>>> rnn.pad_sequence([b, a, c], batch_first=True).tolist()
[[4, 5, 0], [1, 2, 3], [6, 0, 0]]
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, List, Optional, Union

import numpy as np
import torch
from torch.nn.utils import rnn as _torch_rnn
from torch.nn.utils.rnn import (PackedSequence, invert_permutation, pad_packed_sequence,
                                unpack_sequence, unpad_sequence)

from . import _core, packing
from ._core import UnsortedError
from .padding import padded_length, padded_shape, write_padded

__all__ = ["PackedSequence", "invert_permutation", "pack_padded_sequence",
           "pad_packed_sequence", "pad_sequence", "unpad_sequence", "pack_sequence",
           "unpack_sequence"]

# the fast path's inputs: what torch's pad_sequence itself reads (a list/tuple of dense
# tensors); anything it does not recognize goes to torch
_PADDING_VALUE_TYPES = (int, float, bool)
_SIGNED_TWIN = {getattr(torch, u): getattr(torch, i) for u, i in
                (("uint16", "int16"), ("uint32", "int32"), ("uint64", "int64"))
                if hasattr(torch, u)}


def _torch_decides() -> bool:
    """Modes and tracing change what torch's ops do: let torch run them itself."""
    return (torch._C._is_torch_function_mode_enabled()
            or torch._C._get_tracing_state() is not None)


def _plan(seqs: Any, order: str) -> Optional[packing.Plan]:
    """A plan of ``seqs`` when the fast path gives exactly torch's result, else None:
    a non-empty list/tuple of exact, dense CPU tensors not requiring grad whose dtype
    (promoted like ``torch.cat``) is the first one's, with equal rows."""
    if (type(seqs) is not list and type(seqs) is not tuple) or not seqs:
        return None
    try:
        plan = packing._plan_tensors(list(seqs), order, None, defer=True)
    except UnsortedError:
        raise
    except (ValueError, TypeError, RuntimeError):   # torch decides (and names the fault)
        return None
    if plan is None or plan.flat is not None or plan.dtype is not seqs[0].dtype:
        return None
    return plan


def pack_sequence(sequences: List[torch.Tensor], enforce_sorted: bool = True
                  ) -> PackedSequence:
    """Pack a list of variable-length tensors, like ``torch.nn.utils.rnn.pack_sequence``.

    Parameters
    ----------
    sequences : list of Tensor
        Sequences of shape ``(L_i, *)``; with ``enforce_sorted`` in decreasing order of
        length.
    enforce_sorted : bool, default True
        Check that the sequences are sorted by decreasing length; ``sorted_indices``
        and ``unsorted_indices`` are then None. If False they are sorted here, with
        torch's permutation (``torch.sort``, so ties come out as torch orders them).

    Returns
    -------
    PackedSequence
        Equal to torch's, field by field.

    Raises
    ------
    UnsortedError
        (a RuntimeError, as in torch) unsorted sequences with ``enforce_sorted=True``.
    Otherwise whatever torch raises for the input (RuntimeError, TypeError...).

    Examples
    --------
    >>> import torch
    >>> from fastcollate.rnn import pack_sequence
    >>> p = pack_sequence([torch.tensor([4, 5]), torch.tensor([6]), torch.tensor([1, 2, 3])],
    ...                   enforce_sorted=False)
    >>> p.data.tolist(), p.sorted_indices.tolist(), p.unsorted_indices.tolist()
    ([1, 4, 6, 2, 5, 3], [2, 0, 1], [1, 2, 0])
    >>> try:
    ...     pack_sequence([torch.tensor([6]), torch.tensor([1, 2])])
    ... except RuntimeError as e:
    ...     print(type(e).__name__)
    UnsortedError
    """
    plan = None if _torch_decides() else _plan(sequences, "sorted" if enforce_sorted
                                               else "sort")
    if plan is None:
        return _torch_rnn.pack_sequence(sequences, enforce_sorted)
    if not enforce_sorted:
        # torch.sort is not stable: take its permutation, so that ties (and so `data`)
        # come out in torch's order, not in the counting sort's
        order = torch.sort(torch.from_numpy(plan.lengths), descending=True)[1].numpy()
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order), dtype=np.int64)
        plan.sorted_indices, plan.unsorted_indices = order, inverse
    try:
        data = packing.write_plan(plan, torch.empty(plan.shape, dtype=plan.dtype),
                                  _trusted=True)
        return packing.wrap_packed(data, plan)
    except packing.Replan:      # small tensors of mixed dtypes...: torch decides
        pass
    return _torch_rnn.pack_sequence(sequences, enforce_sorted)


def _padding_element(padding_value: Any, dtype: torch.dtype) -> Optional[Any]:
    """The value torch stores for ``padding_value`` in ``dtype`` (it converts the Python
    number to a double, then fills), or None if torch refuses it (then torch raises)."""
    if type(padding_value) not in _PADDING_VALUE_TYPES:
        return None
    if padding_value == 0 and not (type(padding_value) is float
                                   and math.copysign(1.0, padding_value) < 0):
        return 0
    try:
        # torch's C++ fill converts with an overflow check (1e30 into float16 raises);
        # the Python torch.full path does not: check the way pad_sequence does first
        torch.empty(0, dtype=dtype).fill_(float(padding_value))
        return torch.full((), float(padding_value), dtype=dtype).item()
    except (RuntimeError, OverflowError):
        return None


def _pad_fast(sequences: Any, batch_first: Any, padding_value: Any, padding_side: Any
              ) -> Optional[torch.Tensor]:
    if (type(batch_first) is not bool or padding_side not in ("right", "left")
            or _torch_decides()):
        return None
    if type(sequences) is torch.Tensor:     # a batch of equal-length sequences
        x = sequences
        if (x.dim() < 2 or x.shape[0] == 0 or x.layout is not torch.strided or x.is_nested
                or x.is_conj() or x.is_neg()
                or _padding_element(padding_value, x.dtype) is None):   # torch checks it
            return None
        return (x if batch_first else x.transpose(0, 1)).clone(
            memory_format=torch.contiguous_format)
    plan = _plan(sequences, "none")
    if plan is None:
        return None
    value = _padding_element(padding_value, plan.dtype)
    if value is None:
        return None
    out = torch.empty(padded_shape(plan, padded_length(plan), batch_first), dtype=plan.dtype)
    try:
        return write_padded(plan, out, batch_first=batch_first, padding_value=value,
                            padding_side=padding_side, _trusted=True)
    except packing.Replan:      # small tensors of mixed dtypes...: torch decides
        del out
    return None


def pad_sequence(sequences: Union[torch.Tensor, List[torch.Tensor]], batch_first: bool = False,
                 padding_value: float = 0.0, padding_side: str = "right") -> torch.Tensor:
    """Pad variable-length tensors, like ``torch.nn.utils.rnn.pad_sequence``.

    Parameters
    ----------
    sequences : list or iterable of Tensor, or Tensor
        Sequences of shape ``(L_i, *)`` (``L_i`` may be 0); a tensor is a batch of
        equal-length sequences (its first dimension).
    batch_first : bool, default False
        ``(B, T, *)`` if True, else ``(T, B, *)``.
    padding_value : float, default 0.0
        Converted like torch does (to a double, then to the dtype).
    padding_side : {"right", "left"}, default "right"

    Returns
    -------
    Tensor
        Equal to torch's: the first sequence's dtype, contiguous.

    Examples
    --------
    >>> import torch
    >>> from fastcollate.rnn import pad_sequence
    >>> x = pad_sequence([torch.tensor([1, 2, 3]), torch.tensor([4])], padding_value=-1)
    >>> x.tolist()
    [[1, 4], [2, -1], [3, -1]]
    >>> pad_sequence([torch.tensor([1, 2, 3]), torch.tensor([4])], batch_first=True,
    ...              padding_side="left").tolist()
    [[1, 2, 3], [0, 0, 4]]
    """
    seqs: Any = sequences
    if (type(seqs) is not list and type(seqs) is not tuple
            and type(seqs) is not torch.Tensor and isinstance(seqs, Iterable)):
        seqs = tuple(seqs)     # as torch does: read a generator only once
    out = _pad_fast(seqs, batch_first, padding_value, padding_side)
    if out is None:
        return _torch_rnn.pad_sequence(seqs, batch_first, padding_value, padding_side)
    return out



def _pack_padded_fast(input: Any, lengths: Any, batch_first: Any, enforce_sorted: Any
                      ) -> Optional[PackedSequence]:
    if type(input) is not torch.Tensor or type(batch_first) is not bool or _torch_decides():
        return None
    if input.dim() < 2 or input.layout is not torch.strided or input.is_nested:
        return None
    try:        # torch's own conversion of the lengths
        if isinstance(lengths, torch.Tensor):
            lens_t = lengths.to(dtype=torch.int64)
        else:
            lens_t = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    B, T = (input.shape[0], input.shape[1]) if batch_first else (input.shape[1], input.shape[0])
    if (type(lens_t) is not torch.Tensor or lens_t.device.type != "cpu" or lens_t.dim() != 1
            or lens_t.shape[0] != B or B == 0):
        return None
    order = None
    if enforce_sorted:
        lens = lens_t.numpy()
    else:
        lens_t, order_t = torch.sort(lens_t, descending=True)      # torch's permutation
        lens, order = lens_t.numpy(), order_t.numpy()
    if lens[-1] < 1 or lens[0] > T:     # torch raises, or reads past the padded steps
        return None
    try:
        batch_sizes = _core.sort_lengths(lens, True)[0]            # checks the order too
    except ValueError:
        return None
    offsets = _core.offsets_of(batch_sizes)
    total = int(offsets[-1])
    steps = np.repeat(np.arange(len(batch_sizes), dtype=np.int64), batch_sizes)
    ranks = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], batch_sizes)
    samples = ranks if order is None else order[ranks]
    device = input.device
    src = input
    # uint16/32/64 have no gather kernels in torch: move their bits as the signed type
    signed = _SIGNED_TWIN.get(input.dtype)
    if signed is not None:
        src = input.view(signed)
    if src.is_contiguous():             # one gather from the (B*T or T*B, *row) view
        pos = samples * T + steps if batch_first else steps * B + samples
        flat = src.reshape((B * T,) + tuple(src.shape[2:]))
        data = flat.index_select(0, torch.from_numpy(pos).to(device))
    else:
        b_idx, t_idx = torch.from_numpy(samples).to(device), torch.from_numpy(steps).to(device)
        data = src[b_idx, t_idx] if batch_first else src[t_idx, b_idx]
    if signed is not None:
        data = data.view(input.dtype)
    si = None if order is None else torch.from_numpy(order).to(device)
    return PackedSequence._make((data, torch.from_numpy(batch_sizes), si,
                                 invert_permutation(si)))


def pack_padded_sequence(input: torch.Tensor, lengths: Union[torch.Tensor, List[int]],
                         batch_first: bool = False, enforce_sorted: bool = True
                         ) -> PackedSequence:
    """Pack a padded batch, like ``torch.nn.utils.rnn.pack_padded_sequence``.

    One gather of the packed rows (``index_select`` with positions computed from the
    lengths), where torch sorts, gathers the whole padded batch and then packs it.

    Parameters
    ----------
    input : Tensor
        ``(T, B, *)``, or ``(B, T, *)`` with ``batch_first``; any device.
    lengths : Tensor or list of int
        Each sample's length (a CPU tensor if a tensor), ``1 <= lengths[i] <= T``.
    batch_first : bool, default False
    enforce_sorted : bool, default True
        Lengths must be non-increasing; else sorted here with torch's permutation.

    Returns
    -------
    PackedSequence
        Equal to torch's, field by field (differentiable with respect to ``input``).

    Examples
    --------
    >>> import torch
    >>> from fastcollate.rnn import pack_padded_sequence
    >>> seq = torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 6]])
    >>> p = pack_padded_sequence(seq, [2, 1, 3], batch_first=True, enforce_sorted=False)
    >>> p.data.tolist(), p.batch_sizes.tolist(), p.sorted_indices.tolist()
    ([4, 1, 3, 5, 2, 6], [3, 2, 1], [2, 0, 1])
    """
    packed = _pack_padded_fast(input, lengths, batch_first, enforce_sorted)
    if packed is None:
        return _torch_rnn.pack_padded_sequence(input, lengths, batch_first, enforce_sorted)
    return packed
