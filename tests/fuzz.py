"""Structured adversarial fuzzing of fastcollate (hypothesis).

Targets: ``pack``, ``pad``, ``collate`` (PackedCollate), the kernels (``sort_lengths``,
``scatter`` and ``pad_scatter`` with hostile tables, ``read_lists``/``read_ints`` with
hostile lists), ``write_plan`` with wrong ``out`` and the sampler
(``BucketBatchSampler``, ``padding_efficiency``).

Oracle: the result equals a slow reference built from the samples' true values (after
unpacking: torch's tie order differs), or the call raises ``ValueError``/``TypeError``/
``OverflowError`` - naming the sample where a sample is at fault. Never another
exception type, never a write outside ``out`` (guard bytes), never a hang (per-example
alarm), never a crash (tests/test_fuzz.py runs each target in its own interpreter).

    python tests/fuzz.py                       # every target, CI-sized (derandomized)
    python tests/fuzz.py --minutes 10          # long random run, split over targets
    python tests/fuzz.py pack pad --examples 2000
    FASTCOLLATE_FUZZ_MINUTES=10 python -m pytest tests/test_fuzz.py
"""
from __future__ import annotations

import argparse
import faulthandler
import functools
import math
import mmap
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _TESTS)
if any(n.startswith("_core") and n.endswith(".so")
       for n in os.listdir(os.path.join(os.path.dirname(_TESTS), "fastcollate"))):
    sys.path.insert(0, os.path.dirname(_TESTS))      # the checkout's own build first
import fastcollate  # noqa: E402
from fastcollate import _core, kernels, packing  # noqa: E402
from hostile import CLEAN_ERRORS, SANITIZED, Guarded  # noqa: E402
from reference import reference_order  # noqa: E402

warnings.filterwarnings("ignore")
EXAMPLE_SECONDS = float(os.environ.get("FASTCOLLATE_FUZZ_EXAMPLE_SECONDS", "30" if SANITIZED else "5"))
LAST_EXAMPLE = os.environ.get("FASTCOLLATE_FUZZ_LAST")   # file: repr of the running example

# ---------------------------------------------------------------------------------
# Samples with known true values
# ---------------------------------------------------------------------------------

SUPPORTED = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
             torch.float16, torch.bfloat16, torch.float32, torch.float64,
             torch.complex64, torch.complex128]
UNSUPPORTED = [torch.uint16, torch.uint32, torch.uint64]
NUMPY_TWIN = {torch.bool: np.bool_, torch.uint8: np.uint8, torch.int8: np.int8,
              torch.int16: np.int16, torch.int32: np.int32, torch.int64: np.int64,
              torch.float16: np.float16, torch.float32: np.float32,
              torch.float64: np.float64, torch.complex64: np.complex64,
              torch.complex128: np.complex128, torch.uint16: np.uint16,
              torch.uint32: np.uint32, torch.uint64: np.uint64}
ROWS = [(), (3,), (2, 2), (0,), (1,)]
TENSOR_KINDS = ["tensor", "tensor_strided", "tensor_expanded", "tensor_transposed",
                "tensor_conj", "tensor_neg", "tensor_grad", "tensor_subclass",
                "tensor_offset", "tensor_lying_shape"]
ARRAY_KINDS = ["ndarray", "ndarray_reversed", "ndarray_swapped", "ndarray_unaligned",
               "ndarray_fortran", "ndarray_readonly", "ndarray_zero_stride",
               "ndarray_subclass", "ndarray_mmap"]
LIST_KINDS = ["list", "tuple", "list_subclass", "list_lying_len", "numpy_scalars"]
FAULTS = ["zero_dim", "row_mismatch", "non_numeric", "ragged_nested", "object",
          "np_object_dtype", "np_str_dtype", "self_referential", "huge_int",
          "numpy_scalar", "lying_sequence"]
HUGE_INTS = [2**63, 2**64, -2**63 - 1, 10**400]


class HonestTensor(torch.Tensor):
    pass


class LyingShapeTensor(torch.Tensor):
    """Its ``shape`` claims more rows than its storage has."""

    @property
    def shape(self):
        s = super().shape
        return torch.Size((s[0] * 2 + 3,) + tuple(s[1:])) if len(s) else s


class HonestArray(np.ndarray):
    pass


class HonestList(list):
    pass


class LyingLenList(list):
    """``len()`` says one more than it holds."""

    def __len__(self):
        return list.__len__(self) + 1


class LyingSequence:
    """Not a list: a sequence whose ``__len__`` and ``__getitem__`` disagree."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items) + 5

    def __getitem__(self, i):
        return self.items[i]


@dataclass
class Sample:
    obj: Any
    kind: str
    ref: Optional[torch.Tensor]         # true values; None: at fault
    fault: Optional[str] = None
    ambiguous: bool = False             # a correct result or a clean error are both fine

    def __repr__(self):
        if self.kind.startswith("list") or self.kind in ("tuple", "numpy_scalars") or self.fault:
            body = repr(self.obj)
            body = body if len(body) < 200 else body[:200] + "..."
        else:
            body = f"shape={tuple(self.ref.shape) if self.ref is not None else '?'}"
        dt = self.ref.dtype if self.ref is not None else None
        return f"<{self.kind}{'/' + self.fault if self.fault else ''} {dt} {body}>"


def _values(draw, dtype: torch.dtype, shape: Tuple[int, ...], mode: str, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    if dtype == torch.bool:
        return torch.from_numpy(rng.integers(0, 2, size=shape).astype(bool))
    if dtype.is_floating_point or dtype.is_complex:
        base = rng.integers(-100, 100, size=shape).astype(np.float64)
        if mode == "special" and n:
            flat = base.reshape(-1)
            specials = [np.nan, np.inf, -np.inf, -0.0, 1e-30, 65504.0]
            for j in rng.choice(n, size=min(n, 3), replace=False):
                flat[j] = specials[int(rng.integers(len(specials)))]
        t = torch.from_numpy(base)
        if dtype.is_complex:
            t = torch.complex(t, torch.from_numpy(rng.integers(-9, 9, size=shape).astype(np.float64)))
        return t.to(dtype)
    info = torch.iinfo(dtype)
    if mode == "extreme":
        choices = np.array([info.min, info.max, 0, 1], dtype=object)
        vals = choices[rng.integers(0, 4, size=shape)] if shape else choices[0]
        return torch.tensor(np.array(vals).tolist(), dtype=dtype).reshape(shape)
    lo, hi = max(info.min, -100), min(info.max, 100)
    return torch.from_numpy(rng.integers(lo, hi + 1, size=shape)).to(dtype)


def _as_kind(t: torch.Tensor, kind: str, seed: int) -> Tuple[Any, bool]:
    """(object of the given kind holding the values of ``t``, whether the kind is
    legitimately ambiguous)."""
    if kind == "tensor":
        return t.clone(), False
    if kind == "tensor_strided":
        wide = torch.stack([t, torch.zeros_like(t)], dim=1).reshape((2 * t.shape[0],) + t.shape[1:])
        return wide[::2], False
    if kind == "tensor_expanded":      # stride-0 leading dimension
        if t.shape[0] == 0:
            return t.clone(), False
        return t[:1].expand(t.shape), False
    if kind == "tensor_transposed":
        if t.dim() < 2:
            return t.clone(), False
        return t.transpose(0, 1).contiguous().transpose(0, 1), False
    if kind == "tensor_conj":
        if not t.is_complex():
            return t.clone(), False
        return t.conj().resolve_conj().conj(), False
    if kind == "tensor_neg":
        if t.dtype == torch.bool or t.is_complex() or not t.dtype.is_signed:
            return t.clone(), False
        return torch._neg_view((-t).clone()), False
    if kind == "tensor_grad":
        if not (t.is_floating_point() or t.is_complex()):
            return t.clone(), False
        return t.clone().requires_grad_(), False
    if kind == "tensor_subclass":
        return t.clone().as_subclass(HonestTensor), False
    if kind == "tensor_offset":
        return torch.cat([torch.zeros_like(t[:1]) if t.shape[0] else t, t])[min(1, t.shape[0]):] \
            if t.shape[0] else t.clone(), False
    if kind == "tensor_lying_shape":
        return t.clone().as_subclass(LyingShapeTensor), True
    a = t.numpy().copy()
    if kind == "ndarray":
        return a, False
    if kind == "ndarray_reversed":
        return np.flip(np.flip(a, 0).copy(), 0), False
    if kind == "ndarray_swapped":
        return a.astype(a.dtype.newbyteorder()), False
    if kind == "ndarray_unaligned":
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
        u = raw[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u, False
    if kind == "ndarray_fortran":
        return np.asfortranarray(a), False
    if kind == "ndarray_readonly":
        a.setflags(write=False)
        return a, False
    if kind == "ndarray_zero_stride":
        if a.shape[0] == 0:
            return a, False
        return np.broadcast_to(a[:1], a.shape), False
    if kind == "ndarray_subclass":
        return a.view(HonestArray), False
    if kind == "ndarray_mmap":
        m = mmap.mmap(-1, max(a.nbytes, 1))
        b = np.frombuffer(m, dtype=a.dtype, count=a.size).reshape(a.shape)
        b[...] = a
        return b, False
    raise AssertionError(kind)


def _list_of(t: torch.Tensor, kind: str) -> Tuple[Any, Optional[torch.Tensor], bool]:
    """A list-kind sample from ``t``: (object, its true value as torch.tensor infers
    it or None when torch.tensor refuses it, ambiguous)."""
    plain = t.tolist()
    if kind == "list":
        obj = plain
    elif kind == "tuple":
        obj = tuple(tuple(r) if isinstance(r, list) else r for r in plain)
    elif kind == "list_subclass":
        obj = HonestList(plain)
    elif kind == "list_lying_len":
        obj = LyingLenList(plain)
    elif kind == "numpy_scalars":
        if t.dim() != 1 or t.dtype not in NUMPY_TWIN or t.dtype == torch.bfloat16:
            obj = plain
        else:
            obj = [NUMPY_TWIN[t.dtype](x) for x in t.numpy()]
    else:
        raise AssertionError(kind)
    try:
        ref = torch.tensor(plain)
    except Exception:
        ref = None
    if kind == "numpy_scalars" and obj is not plain:
        try:
            ref = torch.tensor(obj)
        except Exception:
            ref = None
    return obj, ref, kind in ("list_lying_len", "numpy_scalars") or len(plain) == 0


def _fault(draw, kind: str, row, dtype) -> Sample:
    L = draw(st.integers(1, 4))
    if kind == "zero_dim":
        return Sample(draw(st.sampled_from([torch.tensor(3), np.array(2.0)])), "obj", None, kind)
    if kind == "row_mismatch":     # a fault only beside another sample: _expected checks rows
        t = torch.zeros((L,) + tuple(row) + (2,))
        return Sample(t, "tensor", t, kind)
    if kind == "non_numeric":
        return Sample([1, "a", 3][:max(2, L)], "list", None, kind)
    if kind == "ragged_nested":
        return Sample([[1, 2], [3]], "list", None, kind)
    if kind == "object":
        return Sample(draw(st.sampled_from([None, {"a": 1}, {1, 2}, "abc", b"xy", 3.5, object()])),
                      "obj", None, kind)
    if kind == "np_object_dtype":
        return Sample(np.array([1, None, 3], dtype=object), "ndarray", None, kind)
    if kind == "np_str_dtype":
        return Sample(np.array(["a", "b"]), "ndarray", None, kind)
    if kind == "self_referential":
        a: list = [1.0, 2.0]
        a.append(a)
        return Sample(a, "list", None, kind)
    if kind == "huge_int":
        big = draw(st.sampled_from(HUGE_INTS))
        body = draw(st.sampled_from([[1, big], [big], [1.5, big], [True, big]]))
        try:        # beside a float torch.tensor reads ints beyond int64 as floats
            return Sample(body, "list", torch.tensor(body), None)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            return Sample(body, "list", None, kind)
    if kind == "numpy_scalar":
        return Sample(np.float32(1.0), "obj", None, kind)
    if kind == "lying_sequence":
        return Sample(LyingSequence([1, 2, 3]), "obj", None, kind)
    raise AssertionError(kind)


@dataclass
class Batch:
    samples: List[Sample]
    dtype: Optional[torch.dtype]
    row: Tuple[int, ...]
    container: str = "list"

    @property
    def objs(self):
        objs = [s.obj for s in self.samples]
        if self.container == "tuple":
            return tuple(objs)
        if self.container == "list_subclass":
            return HonestList(objs)
        return objs

    def faults(self) -> List[int]:
        return [i for i, s in enumerate(self.samples) if s.fault
                and not (s.fault == "row_mismatch" and len(self.samples) == 1)]

    def ambiguous(self) -> bool:
        return any(s.ambiguous for s in self.samples)

    def __repr__(self):
        return (f"Batch(container={self.container}, dtype={self.dtype}, row={self.row}, "
                f"samples={self.samples!r})")


@st.composite
def batches(draw, min_length: int = 0, allow_faults: bool = True, max_b: int = 8,
            tensors: bool = False) -> Batch:
    """``tensors``: tensor kinds only, cast to their own dtype or not at all (what the
    deferred tensor plans take)."""
    dtype = draw(st.sampled_from(SUPPORTED + UNSUPPORTED))
    row = draw(st.sampled_from(ROWS))
    B = draw(st.one_of(st.integers(1, max_b), st.just(0), st.integers(1, 40)))
    kinds = draw(st.lists(st.sampled_from(
        TENSOR_KINDS if tensors else TENSOR_KINDS + ARRAY_KINDS + LIST_KINDS),
        min_size=1, max_size=3))
    mode = draw(st.sampled_from(["small", "small", "extreme", "special"]))
    seed = draw(st.integers(0, 2**32 - 1))
    samples: List[Sample] = []
    for i in range(B):
        L = draw(st.one_of(st.integers(min_length, 4), st.integers(max(min_length, 5), 40),
                           st.just(600)))
        t = _values(draw, dtype, (L,) + row, mode, seed + i)
        kind = kinds[i % len(kinds)]
        if kind in ARRAY_KINDS and dtype == torch.bfloat16:
            kind = "tensor"
        if kind in LIST_KINDS:
            obj, ref, amb = _list_of(t, kind)
            samples.append(Sample(obj, kind, ref, None if ref is not None else "list_refused",
                                  amb or ref is None))
            continue
        obj, amb = _as_kind(t, kind, seed + i)
        if kind in ("tensor_expanded", "ndarray_zero_stride"):
            t = torch.as_tensor(np.array(obj)) if isinstance(obj, np.ndarray) else obj.clone()
        ref = t.detach().clone()
        samples.append(Sample(obj, kind, ref, None, amb or dtype in UNSUPPORTED))
    if allow_faults and B and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, B - 1))
        samples[i] = _fault(draw, draw(st.sampled_from(FAULTS)), row, dtype)
    cast = draw(st.one_of(st.none(), st.none(), st.sampled_from(
        [dtype] if tensors else SUPPORTED)))
    container = draw(st.sampled_from(["list", "list", "tuple", "list_subclass"]))
    return Batch(samples, cast, row, container)


# ---------------------------------------------------------------------------------
# Oracle helpers
# ---------------------------------------------------------------------------------


class Bug(AssertionError):
    pass


def _equal(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    if got.dtype != want.dtype:
        raise Bug(f"{what}: dtype {got.dtype}, expected {want.dtype}")
    if tuple(got.shape) != tuple(want.shape):
        raise Bug(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    g, w = got.detach().resolve_conj().resolve_neg(), want.detach().resolve_conj().resolve_neg()
    if g.dtype == torch.bfloat16 or g.dtype == torch.float16:
        g, w = g.float(), w.float()
    if g.is_complex():
        g, w = torch.view_as_real(g.contiguous()), torch.view_as_real(w.contiguous())
    same = (g == w) | (torch.isnan(g) & torch.isnan(w)) if g.is_floating_point() else (g == w)
    if not bool(same.all()):
        bad = (~same).nonzero()[:3].tolist()
        raise Bug(f"{what}: values differ at {bad}: got {g.reshape(-1)[:8].tolist()}, "
                  f"expected {w.reshape(-1)[:8].tolist()}")


def _clean(e: BaseException, batch: Optional[Batch] = None) -> None:
    """A bad input may raise only ValueError/TypeError/OverflowError, naming a sample
    when a sample is at fault."""
    if not isinstance(e, CLEAN_ERRORS):
        raise Bug(f"raised {type(e).__name__} (not ValueError/TypeError/OverflowError): {e}") from e
    if batch is not None and batch.faults() and "sample" not in str(e) \
            and not isinstance(e, PaddingRefused):
        raise Bug(f"error does not name the faulty sample {batch.faults()}: {e!r}") from e


def _target_dtype(batch: Batch, refs: List[torch.Tensor]) -> List[torch.dtype]:
    """The dtypes a correct result may have (promotion with or without empty lists,
    whose inferred float32 carries no information)."""
    if batch.dtype is not None:
        return [batch.dtype]
    out = []
    for skip_empty in (False, True):
        ds = [r.dtype for s, r in zip(batch.samples, refs)
              if not (skip_empty and s.kind in LIST_KINDS and r.numel() == 0)]
        if ds:
            d = ds[0]
            for x in ds[1:]:
                d = _promote_types(d, x)
            out.append(d)
    return out or [torch.float32]


def _promote_types(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """torch's promotion; for uint16/32/64, which torch does not promote, NumPy's."""
    try:
        return torch.promote_types(a, b)
    except RuntimeError:
        na = torch.empty(0, dtype=a).numpy().dtype
        nb = torch.empty(0, dtype=b).numpy().dtype
        return torch.from_numpy(np.empty(0, dtype=np.promote_types(na, nb))).dtype


def _cast_fits(batch: Batch, refs: List[torch.Tensor]) -> bool:
    """Whether an explicit integer dtype holds every value exactly (else it may raise)."""
    d = batch.dtype
    if d is None:
        return True
    for s, r in zip(batch.samples, refs):
        if r is None or r.numel() == 0:
            continue
        if d.is_floating_point or d.is_complex:
            if r.dtype in (torch.int64, torch.uint64, torch.uint32, torch.int32) and \
                    d in (torch.float16, torch.bfloat16, torch.float32):
                return False    # int -> narrow float rounding differs by path
            continue
        if r.is_complex() or r.is_floating_point():
            return False        # float -> int: out-of-range casts are undefined
        if d == torch.bool:
            continue
        info = torch.iinfo(d)
        values = r.numpy() if r.dtype != torch.bfloat16 else r.float().numpy()  # uint16..64
        if int(values.min()) < info.min or int(values.max()) > info.max:  # have no min()
            return False
    return True


def _explicit_ref(s: Sample, dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    """A list sample with an explicit dtype means torch.tensor(x, dtype=dtype): exact
    (0.1 as float64 is not float32's 0.1), complex into a real dtype refused."""
    if dtype is None or s.kind not in LIST_KINDS:
        return s.ref
    if s.ref is None and s.fault not in ("list_refused", "huge_int"):
        return None         # (those two may be fine in an explicit dtype, as in torch)
    # a list whose len() lies is read for what it holds (torch.tensor trusts len())
    obj = list(s.obj) if s.kind == "list_lying_len" else s.obj
    try:
        t = torch.tensor(obj, dtype=dtype)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    return t if s.ref is None else t.reshape(s.ref.shape)


def _expected(batch: Batch, need_nonempty: bool):
    """(refs, allowed dtypes, reason it may fail or None)."""
    refs = [_explicit_ref(s, batch.dtype) for s in batch.samples]
    maybe = None
    if batch.ambiguous():
        maybe = "ambiguous sample"
    if any(r is None for r in refs):
        return None, None, "fault"
    rows = {tuple(r.shape[1:]) for r in refs}
    if len(rows) > 1:
        return None, None, "row mismatch"
    if any(r.dim() == 0 for r in refs):
        return None, None, "zero-dim"
    if need_nonempty and any(r.shape[0] == 0 for r in refs):
        return None, None, "zero length"
    if not _cast_fits(batch, [s.ref for s in batch.samples]):   # the values before a cast
        maybe = maybe or "cast does not fit"
    return refs, _target_dtype(batch, refs), maybe


def _outcome(batch: Batch, call: Callable[[], Any], refs, may_refuse: bool) -> Any:
    """``call()``'s result where it must succeed; None where it refused cleanly and was
    allowed to, or where the batch must be refused (an empty batch, a faulty sample:
    checked here)."""
    if not batch.samples or refs is None:
        _must_fail(batch, call)
        return None
    try:
        return call()
    except BaseException as e:  # noqa: BLE001 - classified by _clean
        _clean(e, batch)
        if not may_refuse:
            raise Bug(f"refused a valid batch: {type(e).__name__}: {e}") from e
        return None


def _must_fail(batch: Batch, call: Callable[[], Any]) -> None:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - classified by _clean
        _clean(e, batch)
        return
    raise Bug("accepted a batch that must be refused")


# ---------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------


def check_pack(batch: Batch, enforce_sorted: bool) -> None:
    B = len(batch.samples)
    if enforce_sorted:
        def length(s: Sample) -> int:   # with an explicit dtype, as pack reads it
            r = _explicit_ref(s, batch.dtype)
            return r.shape[0] if r is not None and r.dim() else 0
        batch.samples.sort(key=lambda s: -length(s))
    refs, dtypes, maybe = _expected(batch, need_nonempty=True)
    call = lambda: fastcollate.pack(batch.objs, dtype=batch.dtype,  # noqa: E731
                                    enforce_sorted=enforce_sorted)
    p = _outcome(batch, call, refs, may_refuse=maybe is not None)
    if p is None:
        return
    if p.data.dtype not in dtypes:
        raise Bug(f"packed dtype {p.data.dtype}, expected one of {dtypes}")
    lengths = [int(r.shape[0]) for r in refs]
    order = list(range(B)) if enforce_sorted else reference_order(lengths)
    bs = [sum(n > t for n in lengths) for t in range(max(lengths))]
    if p.batch_sizes.tolist() != bs:
        raise Bug(f"batch_sizes {p.batch_sizes.tolist()}, expected {bs}")
    if enforce_sorted:
        if p.sorted_indices is not None:
            raise Bug("enforce_sorted=True returned sorted_indices")
    elif p.sorted_indices.tolist() != order:
        raise Bug(f"sorted_indices {p.sorted_indices.tolist()}, expected {order}")
    for i, got in enumerate(torch.nn.utils.rnn.unpack_sequence(p)):
        _equal(got, refs[i].to(p.data.dtype), f"sample {i}")


def check_pad(batch: Batch, batch_first: bool, value, side: str, multiple) -> None:
    B = len(batch.samples)
    refs, dtypes, maybe = _expected(batch, need_nonempty=False)
    call = lambda: fastcollate.pad(batch.objs, dtype=batch.dtype, batch_first=batch_first,  # noqa: E731
                                   padding_value=value, padding_side=side,
                                   pad_to_multiple_of=multiple, return_lengths=True)
    if refs is None and not _pad_value_fits(value, _INT_DTYPES):
        call = _padding_error_or(call, value)
    result = _outcome(batch, call, refs,
                      may_refuse=maybe is not None or not _pad_value_fits(value, dtypes))
    if result is None:
        return
    out, lengths = result
    if out.dtype not in dtypes:
        raise Bug(f"padded dtype {out.dtype}, expected one of {dtypes}")
    lens = [int(r.shape[0]) for r in refs]
    T = max(lens)
    if multiple:
        T = -(-T // multiple) * multiple
    want = torch.full((B, T) + tuple(refs[0].shape[1:]), value, dtype=out.dtype)
    for i, r in enumerate(refs):
        if side == "left":
            want[i, T - lens[i]:] = r.to(out.dtype)
        else:
            want[i, :lens[i]] = r.to(out.dtype)
    if not batch_first:
        want = want.transpose(0, 1)
    _equal(out, want.contiguous(), "padded batch")
    if lengths.tolist() != lens:
        raise Bug(f"lengths {lengths.tolist()}, expected {lens}")


def check_flatten(batch: Batch, offsets_dtype: torch.dtype) -> None:
    refs, dtypes, maybe = _expected(batch, need_nonempty=False)
    call = lambda: fastcollate.flatten(batch.objs, dtype=batch.dtype,  # noqa: E731
                                       offsets_dtype=offsets_dtype, position_ids=True)
    f = _outcome(batch, call, refs, may_refuse=maybe is not None)
    if f is None:
        return
    if f.values.dtype not in dtypes or f.cu_seqlens.dtype != offsets_dtype:
        raise Bug(f"flattened dtypes {f.values.dtype}/{f.cu_seqlens.dtype}, expected one "
                  f"of {dtypes}/{offsets_dtype}")
    lens = [int(r.shape[0]) for r in refs]
    cu = [sum(lens[:i]) for i in range(len(lens) + 1)]
    if f.cu_seqlens.tolist() != cu or f.max_seqlen != max(lens):
        raise Bug(f"cu_seqlens {f.cu_seqlens.tolist()} / max {f.max_seqlen}, expected {cu}")
    for i, r in enumerate(refs):
        _equal(f.values[cu[i]:cu[i + 1]], r.to(f.values.dtype), f"sample {i}")
    if f.position_ids.tolist() != [t for n in lens for t in range(n)]:
        raise Bug(f"position_ids {f.position_ids.tolist()}")


class PaddingRefused(OverflowError):
    """A faulty batch refused for a padding value that does not fit (checked)."""


_INT_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def _padding_error_or(call: Callable[[], Any], value) -> Callable[[], Any]:
    """``call``, where a batch with a faulty sample may be refused for its padding value
    instead (both are bad; the value is checked before the samples are read): a
    "padding_value ... does not fit <dtype>" error about a dtype it truly does not fit
    is accepted as clean (re-raised as PaddingRefused)."""
    def run():
        try:
            return call()
        except OverflowError as e:
            m = re.match(r"padding_value .* does not fit torch\.(\w+)", str(e))
            d = getattr(torch, m.group(1), None) if m else None
            if isinstance(d, torch.dtype) and not _pad_value_fits(value, [d]):
                raise PaddingRefused(str(e)) from e
            raise
    return run


def _pad_value_fits(value, dtypes) -> bool:
    for d in dtypes:
        try:
            v = torch.full((), value, dtype=d)
        except Exception:
            return False
        if d.is_floating_point or d.is_complex:
            if isinstance(value, float) and math.isnan(value):
                continue
            if complex(v.item()) != complex(value):
                return False
        elif d == torch.bool:
            continue
        elif float(v.item()) != float(value):
            return False
    return True


def check_collate(batch: Batch, structure: str, mode: str) -> None:
    B = len(batch.samples)
    objs = list(batch.objs)
    if structure == "tuple":
        samples = [(o, i) for i, o in enumerate(objs)]
        key = 0
    else:
        samples = [{"x": o, "y": i} for i, o in enumerate(objs)]
        key = "x"
    collate = fastcollate.PackedCollate(ragged=[key], mode=mode, lengths=True,
                                        dtype=batch.dtype)
    refs, dtypes, maybe = _expected(batch, need_nonempty=mode == "pack")
    call = lambda: collate(samples)  # noqa: E731
    out = _outcome(batch, call, refs, may_refuse=maybe is not None)
    if out is None:
        return
    if structure == "tuple":
        data, labels, lengths = out
    else:
        data, labels, lengths = out["x"], out["y"], out["x_lengths"]
    if labels.tolist() != list(range(B)):
        raise Bug(f"labels {labels.tolist()}")
    if lengths.tolist() != [int(r.shape[0]) for r in refs]:
        raise Bug(f"lengths {lengths.tolist()}")
    if mode == "pack":
        if data.data.dtype not in dtypes:
            raise Bug(f"dtype {data.data.dtype}, expected one of {dtypes}")
        for i, got in enumerate(torch.nn.utils.rnn.unpack_sequence(data)):
            _equal(got, refs[i].to(data.data.dtype), f"sample {i}")
    else:
        for i, r in enumerate(refs):
            _equal(data[i, :r.shape[0]], r.to(data.dtype), f"sample {i}")


# -- kernels -----------------------------------------------------------------------

HOSTILE_LENGTHS = st.one_of(
    st.lists(st.integers(-2, 40), min_size=0, max_size=30),
    st.lists(st.sampled_from([1, 2, 3, 0, -1, 2**40, 2**62, 2**63 - 1, 2**63, -2**63,
                              10**400, 1.5, float("nan"), float("inf"), True, "3", None]),
             min_size=1, max_size=4),
    st.builds(lambda xs, dt: np.array(xs).astype(dt),
              st.lists(st.integers(0, 40), min_size=1, max_size=10),
              st.sampled_from(["int8", "uint8", "int32", "uint64", "float64", "bool", "int64"])),
    st.just(np.array([[1, 2], [3, 4]])), st.just(np.array([2**63], dtype=np.uint64)),
)


def check_sort_lengths(lengths, enforce_sorted: bool) -> None:
    plain = isinstance(lengths, list) and all(type(x) is int and 1 <= x <= 10**6 for x in lengths)
    try:
        bs, order, inverse = kernels.sort_lengths(lengths, enforce_sorted)
    except MemoryError:
        return                  # a length of 2**62 asks for that many batch_sizes
    except BaseException as e:  # noqa: BLE001
        _clean(e)
        if plain and lengths and (not enforce_sorted or lengths == sorted(lengths, reverse=True)):
            raise Bug(f"refused valid lengths: {e!r}") from e
        return
    try:
        lens = np.ascontiguousarray(lengths, dtype=np.int64).tolist()
    except (ValueError, TypeError, OverflowError) as e:
        raise Bug(f"accepted lengths {lengths!r} that are not int64 ({e})") from e
    if any(isinstance(x, (str, bytes, float)) for x in np.asarray(lengths, dtype=object).reshape(-1)):
        raise Bug(f"accepted non-integer lengths {lengths!r}")
    if not lens or min(lens) < 1:
        raise Bug(f"accepted lengths {lengths!r}")
    counts = np.bincount(np.asarray(lens) - 1)
    want_bs = np.cumsum(counts[::-1])[::-1].tolist()      # #samples longer than t
    if bs.tolist() != want_bs:
        raise Bug(f"batch_sizes {bs.tolist()} for {lens}")
    if enforce_sorted:
        if lens != sorted(lens, reverse=True):
            raise Bug(f"enforce_sorted accepted unsorted {lens}")
        return
    if order.tolist() != reference_order(lens):
        raise Bug(f"order {order.tolist()} for {lens}")
    if (order[inverse] != np.arange(len(lens))).any():
        raise Bug("inverse is not the inverse permutation")


@st.composite
def scatter_cases(draw):
    B = draw(st.integers(0, 8))
    lengths = draw(st.lists(st.integers(1, 12), min_size=B, max_size=B))
    row_bytes = draw(st.sampled_from([1, 2, 4, 8, 12, 16, 24, 64, 96]))
    bs, order, _ = _core.sort_lengths(lengths) if B else (np.zeros(0, np.int64), None, None)
    order = None if order is None else order.tolist()
    bs = bs.tolist()
    tamper = draw(st.sampled_from(["none", "bs_plus", "bs_minus", "bs_long", "bs_short",
                                   "order_dup", "order_oob", "order_neg", "order_short",
                                   "order_none", "len_neg", "len_zero", "len_grow",
                                   "ptr_zero", "row_zero", "row_neg", "block", "stream"]))
    return dict(lengths=lengths, row_bytes=row_bytes, bs=bs, order=order, tamper=tamper,
                k=draw(st.integers(0, 100)), block=draw(st.sampled_from([0, 1, -5, 3, 10**6])),
                stream=draw(st.sampled_from([-1, 0, 1, 2, 3, 99])),
                tile=draw(st.sampled_from([-1, 0, 1, 3, 64, 10**6, 2**63 - 1,
                                           -2, -3, -256, -2**63])))


def check_scatter(c) -> None:
    lengths, rb, bs, order, tamper, k = (c["lengths"], c["row_bytes"], list(c["bs"]),
                                         c["order"], c["tamper"], c["k"])
    B = len(lengths)
    cap = 16                                     # every source holds 16 rows
    rng = np.random.default_rng(k)
    srcs = [rng.integers(0, 256, size=(cap, max(rb, 1)), dtype=np.uint8) for _ in range(B)]
    ptrs = [s.ctypes.data for s in srcs]
    lens = list(lengths)
    if B:
        j = k % B
        if tamper == "bs_plus" and bs:
            bs[k % len(bs)] += 1
        elif tamper == "bs_minus" and bs:
            bs[k % len(bs)] -= 1
        elif tamper == "bs_long":
            bs = bs + [1]
        elif tamper == "bs_short":
            bs = bs[:-1]
        elif tamper == "order_dup" and B > 1:
            order = list(order)
            order[1] = order[0]
        elif tamper == "order_oob":
            order = list(order)
            order[j] = B + k
        elif tamper == "order_neg":
            order = list(order)
            order[j] = -1 - k
        elif tamper == "order_short":
            order = list(order)[:-1]
        elif tamper == "order_none":
            order = None
        elif tamper == "len_neg":
            lens[j] = -lens[j]
        elif tamper == "len_zero":
            lens[j] = 0
        elif tamper == "len_grow":
            lens[j] = min(cap, lens[j] + 3)
        elif tamper == "ptr_zero":
            ptrs[j] = 0
        elif tamper == "row_zero":
            rb = 0
        elif tamper == "row_neg":
            rb = -rb
    total = sum(max(n, 0) for n in lens)
    g = Guarded((max(total, 0) * max(rb, 0),), torch.uint8, fill=0xAB)
    try:
        kernels.scatter(ptrs, lens, order, bs, rb, g.out.data_ptr(), c["block"], c["stream"],
                        tile=c.get("tile", -1))
    except BaseException as e:  # noqa: BLE001
        g.check()
        _clean(e)
        if tamper in ("none", "ptr_zero", "block", "stream", "row_zero") and B:
            raise Bug(f"refused consistent tables: {e!r}") from e
        return
    g.check()
    if tamper in ("none", "block", "stream") and B:
        samples = [s[:n, :rb] for s, n in zip(srcs, lengths)]
        want = np.concatenate([np.stack([samples[i][t] for i in reference_order(lengths)
                                         if lengths[i] > t]) for t in range(max(lengths))])
        got = g.out.numpy().reshape(-1, rb)
        if not np.array_equal(got, want):
            raise Bug("scatter wrote wrong rows for consistent tables")


@st.composite
def pad_scatter_cases(draw):
    B = draw(st.integers(0, 6))
    lengths = draw(st.lists(st.integers(-2, 12), min_size=B, max_size=B))
    return dict(lengths=lengths, T=draw(st.integers(-3, 14)),
                row_bytes=draw(st.sampled_from([1, 4, 8, 12, 40, 0, -8])),
                batch_first=draw(st.booleans()), left=draw(st.booleans()),
                pad_row=draw(st.sampled_from([None, "right", "short", "long"])),
                stream=draw(st.sampled_from([-1, 0, 1, 2, 7])))


def check_pad_scatter(c) -> None:
    lens, T, rb = c["lengths"], c["T"], c["row_bytes"]
    B = len(lens)
    srcs = [np.full((16, max(rb, 1)), i + 1, dtype=np.uint8) for i in range(B)]
    ptrs = [s.ctypes.data for s in srcs]
    pad_row = {None: None, "right": b"\x07" * max(rb, 0), "short": b"\x07" * max(rb - 1, 0),
               "long": b"\x07" * (max(rb, 0) + 1)}[c["pad_row"]]
    g = Guarded((B * max(T, 0) * max(rb, 0),), torch.uint8, fill=0xAB)
    # a pad_row is a pattern repeated over each padding row: its length must divide rb
    valid = all(0 <= n <= T for n in lens) and (
        pad_row is None or rb <= 0 or (len(pad_row) > 0 and rb % len(pad_row) == 0))
    try:
        kernels.pad_scatter(ptrs, lens, T, rb, g.out.data_ptr(), c["batch_first"], c["left"],
                            pad_row, c["stream"])
    except BaseException as e:  # noqa: BLE001
        g.check()
        _clean(e)
        if valid and rb > 0:
            raise Bug(f"refused consistent arguments: {e!r}") from e
        return
    g.check()
    if not valid and B and rb > 0:
        raise Bug("accepted lengths outside 0..T or a pad_row of the wrong size")
    if valid and B and rb > 0 and T > 0:
        out = g.out.numpy().reshape((B, T, rb) if c["batch_first"] else (T, B, rb))
        if not c["batch_first"]:
            out = out.transpose(1, 0, 2)
        fill = pad_row[0] if pad_row else 0
        for i, n in enumerate(lens):
            want = np.full((T, rb), fill, dtype=np.uint8)
            if c["left"]:
                want[T - n:] = i + 1
            else:
                want[:n] = i + 1
            if not np.array_equal(out[i], want):
                raise Bug(f"pad_scatter: sample {i} laid out wrongly")


class NumberLike:
    """Converts to a number, running Python code (and mutating its list) meanwhile."""

    def __init__(self, lst, how):
        self.lst, self.how = lst, how

    def _mutate(self):
        if self.how == "clear":
            self.lst.clear()
        elif self.how == "grow":
            self.lst.extend([1] * 4)

    def __index__(self):
        self._mutate()
        return 1

    def __float__(self):
        self._mutate()
        return 1.0

    def __complex__(self):
        self._mutate()
        return 1j

    def __ne__(self, other):
        self._mutate()
        return True


@st.composite
def list_reader_cases(draw):
    B = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, 8), min_size=B, max_size=B))
    code = draw(st.sampled_from(["q", "i", "h", "c", "b", "d", "f", "D", "F"]))
    tamper = draw(st.sampled_from(["none", "longer", "longer_than_table", "shorter",
                                   "not_a_list", "str_elem", "none_elem", "huge_elem",
                                   "float_in_int", "complex_in_real", "nested",
                                   "number_like_clear", "number_like_grow", "ranks_short",
                                   "ranks_neg", "bad_code"]))
    return dict(lengths=lengths, code=code, tamper=tamper, j=draw(st.integers(0, 100)),
                reader=draw(st.sampled_from(["read_lists", "read_ints"])))


_ITEM = {"q": (8, 1), "i": (4, 1), "h": (2, 1), "c": (1, 1), "b": (1, 1), "d": (8, 1),
         "f": (4, 1), "D": (16, 1), "F": (8, 1)}
_VALUE = {"q": 3, "i": 3, "h": 3, "c": 3, "b": True, "d": 3.0, "f": 3.0, "D": 3 + 1j, "F": 3 + 1j}


def check_list_reader(c) -> None:
    lengths, code, tamper, j = c["lengths"], c["code"], c["tamper"], c["j"]
    if c["reader"] == "read_ints":
        code = "q"
    B = len(lengths)
    bs, order, inverse = _core.sort_lengths(lengths)
    offsets = _core.offsets_of(bs)
    ranks = inverse.copy()
    seqs: List[Any] = [[_VALUE[code]] * n for n in lengths]
    i = j % B
    victim = seqs[i]
    if tamper == "longer":
        victim.extend(victim[:1] * 2)          # still within the offsets table?
    elif tamper == "longer_than_table":
        victim.extend(victim[:1] * (len(offsets) + 2))
    elif tamper == "shorter":
        del victim[-1:]
    elif tamper == "not_a_list":
        seqs[i] = np.array(victim)
    elif tamper == "str_elem":
        victim[0] = "x"
    elif tamper == "none_elem":
        victim[0] = None
    elif tamper == "huge_elem":
        victim[0] = HUGE_INTS[j % 4]
    elif tamper == "float_in_int":
        victim[0] = 2.5
    elif tamper == "complex_in_real":
        victim[0] = 1j
    elif tamper == "nested":
        victim[0] = [1, 2]
    elif tamper in ("number_like_clear", "number_like_grow"):
        victim[0] = NumberLike(victim, tamper.rsplit("_", 1)[1])
    elif tamper == "ranks_short":
        ranks = ranks[:-1]
    elif tamper == "ranks_neg":
        ranks[i] = -1 - (j % 3)
    elif tamper == "bad_code":
        code = "z"
    size, _ = _ITEM.get(code, (8, 1))
    total = int(offsets[-1])
    g = Guarded((total * size,), torch.uint8, guard=1 << 16)
    try:
        planned = np.array(lengths, dtype=np.int64)     # what the plan sized the slots for
        if c["reader"] == "read_ints":
            status = kernels.read_ints(seqs, planned, ranks, offsets, g.out.data_ptr(), total)
        else:
            status = kernels.read_lists(seqs, planned, ranks, offsets, g.out.data_ptr(), total,
                                        code, -(2**63) if code == "q" else -128,
                                        2**63 - 1 if code == "q" else 127)
    except BaseException as e:  # noqa: BLE001
        g.check()
        _clean(e)
        if tamper in ("longer", "longer_than_table", "shorter", "not_a_list", "str_elem",
                      "nested", "huge_elem", "number_like_clear", "number_like_grow") \
                and "sample" not in str(e):
            raise Bug(f"error does not name sample {i}: {e!r}") from e
        if tamper == "none":
            raise Bug(f"refused valid lists: {e!r}") from e
        return
    g.check()
    if c["reader"] == "read_ints" and tamper.startswith("number_like") and status == -1:
        return      # read_ints stops at the first element that is not an exact int
    if tamper in ("longer", "shorter", "longer_than_table", "number_like_clear",
                  "number_like_grow", "ranks_neg"):
        raise Bug(f"{c['reader']} accepted a sample whose length does not match the "
                  f"plan ({tamper}) without an error")
    if c["reader"] == "read_ints" and tamper in ("str_elem", "none_elem", "nested") and status != -1:
        raise Bug(f"read_ints returned {status} for a non-int element")


# -- write_plan with a wrong out --------------------------------------------------

PLAN_KINDS = {
    "ready": lambda: [[1, 2, 3], [4]],
    "lists": lambda: [[1.0, 2.0, 3.0], [4.0]],
    "arrays": lambda: [np.arange(6.0).reshape(3, 2), np.arange(2.0).reshape(1, 2)],
    "big_tensors": lambda: [torch.arange(1200.0).reshape(600, 2), torch.arange(8.0).reshape(4, 2)],
    "small_tensors": lambda: [torch.arange(6.0).reshape(3, 2), torch.arange(2.0).reshape(1, 2)],
    "grad": lambda: [torch.arange(6.0).reshape(3, 2).requires_grad_(),
                     torch.arange(2.0).reshape(1, 2)],
}
WRONG_OUTS = ["right", "one_row_more", "one_row_less", "same_numel_other_shape",
              "extra_dim", "zero_dim", "other_dtype", "non_contiguous", "meta", "empty"]


def _out_for(plan, how: str):
    shape, dtype = tuple(plan.shape), plan.dtype
    n = shape[0]
    numel = int(np.prod(shape))
    if how == "right":
        return Guarded(shape, dtype)
    if how == "one_row_more":
        return Guarded((n + 1,) + shape[1:], dtype)
    if how == "one_row_less":
        return Guarded((max(n - 1, 0),) + shape[1:], dtype)
    if how == "same_numel_other_shape":
        return Guarded((numel,) if len(shape) > 1 else (1, numel), dtype)
    if how == "extra_dim":
        return Guarded(shape + (1,) if len(shape) > 1 else shape + (2,), dtype)
    if how == "zero_dim":
        return Guarded((), dtype)
    if how == "other_dtype":
        other = torch.float32 if dtype != torch.float32 else torch.int64
        return Guarded(shape, other)
    if how == "empty":
        return Guarded((0,), dtype)
    return how


def check_write_plan(kind: str, how: str) -> None:
    plan = kernels.plan_batch(PLAN_KINDS[kind]())
    want = fastcollate.pack(PLAN_KINDS[kind]()).data.detach()
    g = _out_for(plan, how)
    if how == "non_contiguous":
        wide = Guarded((plan.shape[0] * 2,) + tuple(plan.shape[1:]), plan.dtype)
        out, g = wide.out[::2], wide
    elif how == "meta":
        out, g = torch.empty(plan.shape, dtype=plan.dtype, device="meta"), None
    else:
        out = g.out
    try:
        kernels.write_plan(plan, out)
    except BaseException as e:  # noqa: BLE001
        if g is not None:
            g.check()
        _clean(e)
        if how == "right":
            raise Bug(f"write_plan refused the right out: {e!r}") from e
        return
    if g is not None:
        g.check()
    if how != "right":
        raise Bug(f"write_plan({kind} plan) accepted a wrong out ({how}: "
                  f"{tuple(out.shape)} {out.dtype} {out.device})")
    _equal(out, want, "write_plan result")


# -- sampler -----------------------------------------------------------------------

SAMPLER_LENGTHS = st.one_of(
    st.lists(st.integers(1, 50), min_size=0, max_size=60),
    st.lists(st.sampled_from([1, 5, 0, -1, 2**62, 2**63 - 1, 2**63, 10**400, 1.5,
                              float("nan"), True, "2", None]), min_size=1, max_size=5),
    st.builds(lambda xs, dt: np.array(xs).astype(dt),
              st.lists(st.integers(0, 60), min_size=1, max_size=20),
              st.sampled_from(["int8", "uint64", "float32", "bool", "int64"])),
    st.just(np.array([2**63 + 5], dtype=np.uint64)), st.just(torch.tensor([3, 1, 2])),
    st.just([[1, 2], [3, 4]]),
)
OPT_INT = st.one_of(st.none(), st.integers(-2, 200), st.sampled_from([2**63, 10**400, 1.5, True]))


def check_sampler(lengths, max_tokens, batch_size, bucket_size, num_replicas, rank,
                  drop_last, drop_oversized, shuffle, seed) -> None:
    try:
        s = fastcollate.BucketBatchSampler(
            lengths, max_tokens=max_tokens, batch_size=batch_size, bucket_size=bucket_size,
            num_replicas=num_replicas, rank=rank, drop_last=drop_last,
            drop_oversized=drop_oversized, shuffle=shuffle, seed=seed)
        batches = list(s)
    except BaseException as e:  # noqa: BLE001
        _clean(e)
        return
    lens = np.asarray(lengths.numpy() if isinstance(lengths, torch.Tensor) else lengths)
    lens = lens.astype(np.int64)
    n = len(lens)
    if len(s) != len(batches):
        raise Bug(f"len(sampler) = {len(s)} but it yielded {len(batches)} batches")
    seen: List[int] = []
    for b in batches:
        if not b or any(not (0 <= i < n) for i in b):
            raise Bug(f"batch {b} has indices outside 0..{n - 1} or is empty")
        if batch_size is not None and len(b) > batch_size:
            raise Bug(f"batch of {len(b)} > batch_size={batch_size}")
        if max_tokens is not None and len(b) * int(lens[b].max()) > max_tokens:
            raise Bug(f"batch {b} pads to {len(b) * int(lens[b].max())} > max_tokens")
        seen.extend(b)
    if (num_replicas or 1) == 1:
        if len(set(seen)) != len(seen):
            raise Bug("a sample appears twice in one epoch")
        if not drop_last and not drop_oversized and sorted(seen) != list(range(n)):
            raise Bug(f"an epoch missed samples: {sorted(set(range(n)) - set(seen))[:5]}")
    stats = fastcollate.padding_efficiency(lengths, batches)
    real = sum(int(lens[i]) for b in batches for i in b)        # exact, no int64 wrap
    padded = sum(len(b) * int(lens[b].max()) for b in batches)
    if (stats.real_tokens, stats.padded_tokens, stats.batches) != (real, padded, len(batches)):
        raise Bug(f"padding_efficiency {stats} but real={real} padded={padded}")
    state = s.state_dict(batches_consumed=len(batches) // 2)
    s2 = fastcollate.BucketBatchSampler(
        lengths, max_tokens=max_tokens, batch_size=batch_size, bucket_size=bucket_size,
        num_replicas=num_replicas, rank=rank, drop_last=drop_last,
        drop_oversized=drop_oversized, shuffle=shuffle, seed=seed)
    s2.load_state_dict(state)
    if list(s2) != batches[len(batches) // 2:]:
        raise Bug("resuming from state_dict does not continue the epoch")


def check_padding_efficiency(lengths, batches) -> None:
    try:
        stats = fastcollate.padding_efficiency(lengths, batches)
    except IndexError as e:                # documented for out-of-range batch indices
        if "out of range" not in str(e):
            raise Bug(f"IndexError: {e}") from e
        return
    except BaseException as e:  # noqa: BLE001
        _clean(e)
        return
    lens = np.asarray(lengths).astype(np.int64)
    parts = [list(b) for b in batches if len(b)]
    real = sum(int(lens[i]) for b in parts for i in b)          # exact, no int64 wrap
    padded = sum(len(b) * int(lens[b].max()) for b in parts)
    if (stats.real_tokens, stats.padded_tokens) != (real, padded):
        raise Bug(f"padding_efficiency {stats}, expected real={real} padded={padded}")


# ---------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------


def _in_tiny_chunks(check: Callable) -> Callable:
    """``check`` with chunks of 16 bytes: tensor batches of more than 64 bytes take the
    deferred path (planned from their shapes, concatenated a chunk at a time)."""
    def run(**kw):
        saved = packing._CHUNK_BYTES
        packing._CHUNK_BYTES = 16
        try:
            check(**kw)
        finally:
            packing._CHUNK_BYTES = saved
    run.__name__ = check.__name__ + "_in_chunks"
    return run


def _direct_reads(check: Callable) -> Callable:
    """``check`` with every exact tensor batch that holds data read tensor by tensor
    where it lies (the direct-read threshold at 1 byte per sample: ``pack``'s and
    ``pad``'s one-call paths, ``tensor_sources`` in the plan) instead of only batches
    of large samples."""
    def run(**kw):
        saved = packing._DIRECT_TENSOR_BYTES
        packing._set_direct_tensor_bytes(1)
        try:
            check(**kw)
        finally:
            packing._set_direct_tensor_bytes(saved)
    run.__name__ = check.__name__ + "_direct"
    return run


TARGETS: Dict[str, Tuple[Callable, Dict[str, Any]]] = {
    "pack": (check_pack, dict(batch=batches(), enforce_sorted=st.booleans())),
    "pad": (check_pad, dict(batch=batches(), batch_first=st.booleans(),
                            value=st.sampled_from([0, 1, -1, 2.5, float("nan"), 300, True, -0.0]),
                            side=st.sampled_from(["right", "left"]),
                            multiple=st.sampled_from([None, None, 1, 8]))),
    "collate": (check_collate, dict(batch=batches(), structure=st.sampled_from(["tuple", "dict"]),
                                    mode=st.sampled_from(["pack", "pad"]))),
    "pack_chunks": (_in_tiny_chunks(check_pack), dict(batch=batches(tensors=True),
                                                      enforce_sorted=st.booleans())),
    "pad_chunks": (_in_tiny_chunks(check_pad), dict(
        batch=batches(tensors=True), batch_first=st.booleans(), value=st.sampled_from([0, 1, -1, 2.5]),
        side=st.sampled_from(["right", "left"]), multiple=st.sampled_from([None, 8]))),
    "collate_chunks": (_in_tiny_chunks(check_collate), dict(
        batch=batches(tensors=True), structure=st.sampled_from(["tuple", "dict"]),
        mode=st.sampled_from(["pack", "pad"]))),
    "pack_direct": (_direct_reads(check_pack), dict(batch=batches(tensors=True),
                                                    enforce_sorted=st.booleans())),
    "pad_direct": (_direct_reads(check_pad), dict(
        batch=batches(tensors=True), batch_first=st.booleans(), value=st.sampled_from([0, 1, -1, 2.5]),
        side=st.sampled_from(["right", "left"]), multiple=st.sampled_from([None, 8]))),
    "flatten": (check_flatten, dict(batch=batches(),
                                    offsets_dtype=st.sampled_from([torch.int32, torch.int64]))),
    "sort_lengths": (check_sort_lengths, dict(lengths=HOSTILE_LENGTHS,
                                              enforce_sorted=st.booleans())),
    "scatter": (check_scatter, dict(c=scatter_cases())),
    "pad_scatter": (check_pad_scatter, dict(c=pad_scatter_cases())),
    "list_readers": (check_list_reader, dict(c=list_reader_cases())),
    "write_plan": (check_write_plan, dict(kind=st.sampled_from(sorted(PLAN_KINDS)),
                                          how=st.sampled_from(WRONG_OUTS))),
    "sampler": (check_sampler, dict(
        lengths=SAMPLER_LENGTHS, max_tokens=OPT_INT, batch_size=OPT_INT,
        bucket_size=st.one_of(st.none(), st.integers(-1, 50)),
        num_replicas=st.one_of(st.none(), st.integers(0, 4)),
        rank=st.one_of(st.none(), st.integers(-1, 4)), drop_last=st.booleans(),
        drop_oversized=st.booleans(), shuffle=st.booleans(),
        seed=st.one_of(st.integers(0, 2**32), st.sampled_from([-1, 2**64, 1.5])))),
    "padding_efficiency": (check_padding_efficiency, dict(
        lengths=SAMPLER_LENGTHS,
        batches=st.lists(st.lists(st.integers(-2, 60), max_size=6), max_size=6))),
}
# examples per target in the default (CI) run
CI_EXAMPLES = {"pack": 150, "pad": 120, "flatten": 100, "collate": 80, "pack_chunks": 80,
               "pad_chunks": 80, "collate_chunks": 60, "pack_direct": 80, "pad_direct": 80,
               "sort_lengths": 150, "scatter": 200, "pad_scatter": 200, "list_readers": 200,
               "write_plan": 60, "sampler": 100, "padding_efficiency": 100}


class ExampleTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise ExampleTimeout(f"one example ran over {EXAMPLE_SECONDS} s (hang?)")


def _guarded(check: Callable) -> Callable:
    """Per-example timeout (SIGALRM, plus a hard faulthandler exit for hangs in C) and
    a record of the running example, for crashes hypothesis cannot report."""
    @functools.wraps(check)
    def run(**kwargs):
        if LAST_EXAMPLE:
            with open(LAST_EXAMPLE, "w") as f:
                f.write(f"{check.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")\n")
        faulthandler.dump_traceback_later(EXAMPLE_SECONDS * 3, exit=True)
        signal.setitimer(signal.ITIMER_REAL, EXAMPLE_SECONDS)
        try:
            check(**kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
    return run


def run_target(name: str, examples: Optional[int], seconds: Optional[float]) -> None:
    import hypothesis.internal.conjecture.engine as engine
    # shrinking stops after this long (hypothesis's default is 5 minutes per target)
    engine.MAX_SHRINKING_SECONDS = 30 if seconds is None else 120
    check, strategies = TARGETS[name]
    signal.signal(signal.SIGALRM, _alarm)
    common = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
    if seconds is None:
        test = given(**strategies)(_guarded(check))
        settings(max_examples=examples or CI_EXAMPLES[name], derandomize=True, **common)(test)()
        return
    end = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < end:          # a fresh test per round: settings apply once
        test = given(**strategies)(_guarded(check))
        hypothesis_seed(round_ + int(time.time()))(
            settings(max_examples=examples or 200, **common)(test))()
        round_ += 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", default=sorted(TARGETS), help=f"of {sorted(TARGETS)}")
    ap.add_argument("--examples", type=int, help="examples per target (per round with --minutes)")
    ap.add_argument("--minutes", type=float, help="random run of this many minutes, split over targets")
    ap.add_argument("--seconds", type=float, help="random run of this many seconds per target")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seconds = args.seconds
    if args.minutes:
        seconds = args.minutes * 60 / len(args.targets)
    failed = []
    for name in args.targets:
        t0 = time.monotonic()
        try:
            run_target(name, args.examples, seconds)
        except BaseException as e:  # noqa: BLE001 - hypothesis re-raises the bug
            if isinstance(e, KeyboardInterrupt):
                raise
            import traceback
            traceback.print_exc()
            failed.append(name)
            print(f"FUZZ {name}: FAILED ({time.monotonic() - t0:.1f} s)", flush=True)
        else:
            print(f"FUZZ {name}: ok ({time.monotonic() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
