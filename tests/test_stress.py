"""Concurrency stress: samples, lists inside samples and the batch list itself are
replaced, grown, shrunk, cleared and written in place while (or just before) fastcollate
copies from their raw addresses with the GIL released.

The contract (docs/safety.md): never crash, never write outside ``out``;
each mutated sample comes out as one of its versions, or the call raises a clean
``ValueError``/``TypeError``/``OverflowError`` naming a mutated sample; every sample
that nobody touched comes out exactly right.

Samples are recognisable: sample ``k`` in version ``v`` is constant-valued
``k * 1000 + v`` and has the length ``length_of(k, v)``, so a result tells which
version was read, or that it was read from freed memory or torn.

Every scenario runs in a fresh interpreter (``python tests/test_stress.py NAME
SECONDS``) with glibc set up so that freed multi-MB buffers are unmapped: a read from
a freed sample faults, and the test fails saying it crashed, instead of killing pytest.
Time per threaded scenario: ``FASTCOLLATE_STRESS_SECONDS`` (default 2).
"""
from __future__ import annotations

import gc
import mmap
import os
import random
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
import torch

import fastcollate
from fastcollate import kernels, packing
from fastcollate.padding import padded_length, padded_shape, write_padded

from hostile import CLEAN_ERRORS, SANITIZED, Guarded, assert_survives, run_isolated

SECONDS = float(os.environ.get("FASTCOLLATE_STRESS_SECONDS", "1" if SANITIZED else "2"))
ROW = 64 if SANITIZED else 256          # float64 row: 2 KB; samples of 1-8 MB
BASE_LEN = 300 if SANITIZED else 1500

# ---------------------------------------------------------------------------------
# Recognisable samples
# ---------------------------------------------------------------------------------


def length_of(k: int, v: int) -> int:
    return BASE_LEN + 97 * k + 211 * (v % 5)


def value_of(k: int, v: int) -> float:
    return float(k * 1000 + v)


def big_array(k: int, v: int) -> np.ndarray:
    return np.full((length_of(k, v), ROW), value_of(k, v))


def mapped_array(k: int, v: int) -> np.ndarray:
    """A plain ndarray over an anonymous mmap: freeing it unmaps the pages at once."""
    shape = (length_of(k, v), ROW)
    m = mmap.mmap(-1, shape[0] * shape[1] * 8)
    a = np.frombuffer(m, dtype=np.float64).reshape(shape)
    a[:] = value_of(k, v)
    return a


def big_tensor(k: int, v: int) -> torch.Tensor:
    return torch.full((length_of(k, v), ROW), value_of(k, v), dtype=torch.float64)


def small_length(k: int, v: int) -> int:
    return 5 + 3 * k + 7 * (v % 5)


def small_tensor(k: int, v: int) -> torch.Tensor:
    """A 1-D int16 sample of 5..48 elements: packed through one torch.cat."""
    return torch.full((small_length(k, v),), value_of(k, v), dtype=torch.int16)


def float_list(k: int, v: int) -> list:
    return [value_of(k, v)] * (length_of(k, v) // 4)


def int_list(k: int, v: int) -> list:
    return [int(value_of(k, v))] * (length_of(k, v) // 4)


def verdict(sample: torch.Tensor, k: int, mutated: bool, len0: int,
            lengths_ok: Callable[[int, int], bool]) -> Optional[str]:
    """None if ``sample`` is a valid outcome for slot ``k``, else what is wrong.

    Unmutated: exactly version 0 (``len0`` rows of ``value_of(k, 0)``). Mutated: every
    element a value of slot ``k`` (a torn read of an in-place write mixes versions),
    and when constant, a length ``lengths_ok(version, n)`` accepts.
    """
    flat = sample.reshape(-1).to(torch.float64)
    n = int(sample.shape[0])
    if not mutated:
        want = value_of(k, 0)
        if n != len0 or (flat.numel() and not bool((flat == want).all())):
            return (f"unmutated sample {k} changed: length {n} (want {len0}), values "
                    f"{sorted(set(flat[:2000].tolist()))[:5]} (want {want})")
        return None
    if flat.numel() == 0:
        return None if lengths_ok(-1, 0) else f"sample {k} came out empty"
    vals = torch.unique(flat)
    ks = torch.div(vals, 1000, rounding_mode="floor").to(torch.int64)
    if not bool((ks == k).all()) or not bool((vals == vals.round()).all()):
        return (f"sample {k} holds values of no version of it: "
                f"{vals[:6].tolist()} (freed or foreign memory?)")
    if vals.numel() == 1:
        v = int(vals[0]) - 1000 * k
        if not lengths_ok(v, n):
            return f"sample {k} shows version {v} with length {n}"
    return None


# ---------------------------------------------------------------------------------
# Deterministic: mutate between plan_batch and write_plan
# ---------------------------------------------------------------------------------

SCENARIOS: Dict[str, Callable[[float], None]] = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def _write_guarded(plan) -> Guarded:
    g = Guarded(plan.shape, plan.dtype)
    kernels.write_plan(plan, g.out)
    g.check()
    return g


def _expect_planned_or_error(make_batch, mutate, mutated: int, pad: bool = False,
                             defer: bool = False) -> None:
    """Plan, mutate sample ``mutated``, write: the planned version or a clean error
    naming it; never a write outside out; other samples exact. ``defer``: small
    tensors planned from their shapes, concatenated a chunk at a time by the write."""
    batch = make_batch()
    B = len(batch)
    plan = kernels.plan_batch(batch, sort=not pad, defer_tensors=defer)
    assert not defer or plan.tensors is not None, "expected a deferred tensor plan"
    mutate(batch)
    gc.collect()
    try:
        if pad:
            T = padded_length(plan)
            g = Guarded(padded_shape(plan, T, True), plan.dtype)
            write_padded(plan, g.out, padding_value=-1)
            g.check()
            samples = [g.out[k, :int(plan.lengths[k])] for k in range(B)]
        else:
            g = _write_guarded(plan)
            samples = list(torch.nn.utils.rnn.unpack_sequence(kernels.wrap_packed(g.out, plan)))
    except CLEAN_ERRORS as e:
        assert f"sample {mutated}" in str(e), f"error does not name sample {mutated}: {e!r}"
        return
    for k, s in enumerate(samples):
        want = value_of(k, 0)
        assert s.shape[0] == plan.lengths[k], f"sample {k}: length {s.shape[0]}"
        assert bool((s == want).all()), (
            f"sample {k} is not its planned version {want}: "
            f"{sorted(set(s.reshape(-1)[:1000].tolist()))[:5]}")


@scenario
def replaced_array_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[1] = big_array(1, 3)
    _expect_planned_or_error(lambda: [big_array(k, 0) for k in range(3)], mutate, 1)


@scenario
def replaced_mmap_array_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[0] = mapped_array(0, 2)       # the old array's pages are unmapped now
    _expect_planned_or_error(lambda: [mapped_array(k, 0) for k in range(3)], mutate, 0)


@scenario
def cleared_batch_list_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch.clear()                       # drops the only reference to every sample
    _expect_planned_or_error(lambda: [mapped_array(k, 0) for k in range(3)], mutate, 0)


@scenario
def replaced_tensor_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[2] = big_tensor(2, 1)
    _expect_planned_or_error(lambda: [big_tensor(k, 0) for k in range(3)], mutate, 2)


@scenario
def tensor_storage_swapped_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[1].set_(big_tensor(1, 4)[:10])  # same object, its old storage freed
    _expect_planned_or_error(lambda: [big_tensor(k, 0) for k in range(3)], mutate, 1)


@scenario
def tensor_storage_freed_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[1].untyped_storage().resize_(0)
    _expect_planned_or_error(lambda: [big_tensor(k, 0) for k in range(3)], mutate, 1)


@scenario
def tensor_resized_in_place_after_planning(seconds: float) -> None:
    def mutate(batch):
        batch[0].resize_(4 * length_of(0, 0), ROW)   # reallocates: old storage freed
        batch[0].fill_(value_of(0, 0))
    _expect_planned_or_error(lambda: [big_tensor(k, 0) for k in range(3)], mutate, 0)


def _tiny_chunks() -> None:
    """Deferred tensor plans for these few small samples, chunks of 16 bytes."""
    packing._CHUNK_BYTES = 16


@scenario
def small_tensor_resized_in_chunks_after_planning(seconds: float) -> None:
    _tiny_chunks()

    def mutate(batch):
        batch[1].resize_(200)               # reallocates: the old storage is freed
        batch[1].fill_(value_of(1, 0))
    _expect_planned_or_error(lambda: [small_tensor(k, 0) for k in range(6)], mutate, 1,
                             defer=True)


@scenario
def small_tensor_swapped_in_chunks_after_planning_a_padded_batch(seconds: float) -> None:
    _tiny_chunks()

    def mutate(batch):
        batch[4].set_(small_tensor(4, 2))   # another length; its old storage freed
    _expect_planned_or_error(lambda: [small_tensor(k, 0) for k in range(6)], mutate, 4,
                             pad=True, defer=True)


@scenario
def replaced_array_after_planning_a_padded_batch(seconds: float) -> None:
    def mutate(batch):
        batch[1] = None
    _expect_planned_or_error(lambda: [mapped_array(k, 0) for k in range(3)], mutate, 1,
                             pad=True)


def _float_lists():
    return [[value_of(k, 0)] * length_of(k, 0) for k in range(3)]


def _list_mutated_after_planning(mutate, pad: bool = False) -> None:
    """A float list changed after planning must raise ValueError naming it."""
    batch = _float_lists()
    plan = kernels.plan_batch(batch, sort=not pad)
    assert plan.lists is not None, "float lists are expected to be read at write time"
    mutate(batch[1])
    if pad:
        g = Guarded(padded_shape(plan, padded_length(plan), True), plan.dtype)
        call = lambda: write_padded(plan, g.out, padding_side="left")  # noqa: E731
    else:
        g = Guarded(plan.shape, plan.dtype)
        call = lambda: kernels.write_plan(plan, g.out)  # noqa: E731
    try:
        call()
    except ValueError as e:
        g.check()
        assert "sample 1" in str(e), f"error does not name sample 1: {e!r}"
        return
    g.check()
    raise AssertionError("a list whose length changed after planning was written "
                         "without a ValueError")


@scenario
def grown_list_after_planning(seconds: float) -> None:
    # still shorter than the longest sample: its extra elements land in others' slots
    _list_mutated_after_planning(lambda lst: lst.extend([lst[0]] * 50))


@scenario
def grown_past_the_longest_list_after_planning(seconds: float) -> None:
    _list_mutated_after_planning(lambda lst: lst.extend([lst[0]] * 5000))


@scenario
def grown_list_after_planning_a_padded_batch(seconds: float) -> None:
    _list_mutated_after_planning(lambda lst: lst.extend([lst[0]] * 50), pad=True)


@scenario
def shrunk_list_after_planning(seconds: float) -> None:
    _list_mutated_after_planning(lambda lst: lst.__delitem__(slice(10, None)))


@scenario
def cleared_list_after_planning(seconds: float) -> None:
    _list_mutated_after_planning(lambda lst: lst.clear())


class ClearsItsList:
    """A number whose conversion empties the list it sits in (runs Python code in the
    middle of a list reader)."""

    def __init__(self, lst):
        self.lst = lst

    def __float__(self):
        self.lst.clear()
        return 5.0

    __index__ = __int__ = lambda self: (self.lst.clear(), 5)[1]  # noqa: E731


@scenario
def element_replaced_by_a_list_clearing_number_after_planning(seconds: float) -> None:
    batch = _float_lists()
    plan = kernels.plan_batch(batch)
    batch[0][1] = ClearsItsList(batch[0])
    g = Guarded(plan.shape, plan.dtype)
    try:
        kernels.write_plan(plan, g.out)
    except CLEAN_ERRORS as e:
        g.check()
        assert "sample 0" in str(e), f"error does not name sample 0: {e!r}"
        return
    g.check()
    got = list(torch.nn.utils.rnn.unpack_sequence(kernels.wrap_packed(g.out, plan)))
    assert bool((got[0] == value_of(0, 0)).all()), "sample 0 is not its planned version"


# ---------------------------------------------------------------------------------
# Threaded: mutators running while other threads collate
# ---------------------------------------------------------------------------------


def _rows(x) -> int:
    if isinstance(x, dict):
        return 0                                # records: the scenario checks fields
    return len(x) if isinstance(x, list) else int(x.shape[0])


class Stress:
    """Mutator threads over the ``mutated`` slots of ``batch`` while the main thread
    collates. ``ops``: functions ``op(stress, k, rng)``, applied to random slots."""

    def __init__(self, batch: list, mutated: List[int], ops: list):
        self.batch, self.mutated, self.ops = batch, mutated, ops
        self.len0 = [_rows(x) for x in batch]
        self.stop = threading.Event()
        self.failures: List[BaseException] = []
        self.calls = self.clean_errors = 0

    def _mutator(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not self.stop.is_set():
                rng.choice(self.ops)(self, rng.choice(self.mutated), rng)
        except BaseException as e:  # pragma: no cover - reported by run()
            self.failures.append(e)

    def run(self, seconds: float, call: Callable[[list], Optional[List[torch.Tensor]]],
            lengths_ok: Callable[[int, int, int], bool], threads: int = 1) -> None:
        """``threads`` mutators: one by default. Two mutators racing on the same object
        (clear/extend of one list, set_ of one tensor) create states no version has
        (a list of 13 versions' worth of elements) or crash torch itself (concurrent
        set_ on one tensor is not thread-safe in torch); only replacing whole samples
        is raced with several."""
        sys.setswitchinterval(1e-5)
        ts = [threading.Thread(target=self._mutator, args=(i,), daemon=True)
              for i in range(threads)]
        for t in ts:
            t.start()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.calls += 1
                try:
                    samples = call(self.batch)
                except CLEAN_ERRORS as e:
                    self.clean_errors += 1
                    assert any(f"sample {k}" in str(e) for k in self.mutated), (
                        f"call {self.calls}: error names no mutated sample: {e!r}")
                    continue
                if samples is None:
                    continue
                for k, s in enumerate(samples[:len(self.len0)]):
                    why = verdict(s, k, k in self.mutated, self.len0[k],
                                  lambda v, n, k=k: lengths_ok(k, v, n))
                    assert why is None, f"call {self.calls}: {why}"
        finally:
            self.stop.set()
            for t in ts:
                t.join()
        assert not self.failures, f"a mutator failed: {self.failures[0]!r}"
        print(f"{self.calls} calls, {self.clean_errors} clean errors")


def _replace(factory):
    def op(st, k, rng):
        st.batch[k] = factory(k, rng.randrange(1, 1000))
    return op


def _same_length_version(k: int, n: int, rng) -> int:
    """A version of slot ``k`` whose length is ``n`` (lengths cycle with v % 5)."""
    r = (n - BASE_LEN - 97 * k) // 211
    return 5 * rng.randrange(0, 199) + r


def _fill_in_place(st, k, rng):
    x = st.batch[k]
    v = _same_length_version(k, _rows(x), rng)
    if isinstance(x, np.ndarray):
        x[:] = value_of(k, v)
    elif isinstance(x, torch.Tensor):
        x.fill_(value_of(k, v))


def _set_storage(st, k, rng):
    x = st.batch[k]
    if isinstance(x, torch.Tensor):
        x.set_(big_tensor(k, rng.randrange(1, 1000)))


def _packed(batch):
    return list(torch.nn.utils.rnn.unpack_sequence(fastcollate.pack(batch)))


def _padded(batch):
    out, lengths = fastcollate.pad(batch, return_lengths=True, padding_value=-1.0)
    return [out[k, :int(n)] for k, n in enumerate(lengths)]


def _flattened(batch):
    f = fastcollate.flatten(batch, position_ids=True)
    cu = f.cu_seqlens.tolist()
    assert f.position_ids.tolist() == [t for a, b in zip(cu, cu[1:]) for t in range(b - a)]
    return [f.values[a:b] for a, b in zip(cu, cu[1:])]


def _version_length(k, v, n):
    return n == length_of(k, v)


def _threaded(batch_factory, ops, call, lengths_ok=_version_length, threads=1):
    batch = [batch_factory(k, 0) for k in range(6)]
    Stress(batch, mutated=[1, 3, 4], ops=ops).run(SECONDS, call, lengths_ok, threads)


@scenario
def arrays_replaced_while_packing(seconds: float) -> None:
    _threaded(mapped_array, [_replace(mapped_array), _replace(big_array)], _packed,
              threads=2)


@scenario
def arrays_replaced_and_written_in_place_while_padding(seconds: float) -> None:
    _threaded(big_array, [_replace(big_array), _fill_in_place], _padded)


def _any_version_length(k, v, n):
    """set_ racing with planning: the length read before the swap, the data after it
    (never more rows than the new storage holds, else a ValueError)."""
    return n <= length_of(k, v) and any(n == length_of(k, r) for r in range(5))


@scenario
def tensors_replaced_swapped_and_filled_while_packing(seconds: float) -> None:
    _threaded(big_tensor, [_replace(big_tensor), _set_storage, _fill_in_place], _packed,
              _any_version_length)


@scenario
def tensors_replaced_swapped_and_filled_while_flattening(seconds: float) -> None:
    _threaded(big_tensor, [_replace(big_tensor), _set_storage, _fill_in_place], _flattened,
              _any_version_length)


class _PerSlot(Stress):
    """One mutator thread per mutated slot: several samples change at once, but never
    one tensor from two threads (torch's ``set_`` is not thread-safe on one tensor)."""

    def _mutator(self, seed: int) -> None:
        rng = random.Random(seed)
        k = self.mutated[seed % len(self.mutated)]
        try:
            while not self.stop.is_set():
                rng.choice(self.ops)(self, k, rng)
        except BaseException as e:  # pragma: no cover - reported by run()
            self.failures.append(e)


def _fill_small(st, k, rng):
    x = st.batch[k]
    r = (int(x.shape[0]) - 5 - 3 * k) // 7          # the version of this length, mod 5
    x.fill_(value_of(k, 5 * rng.randrange(0, 199) + r))


# Small tensors go through torch.cat, which torch does not make safe against a set_ or
# resize_ of one of its inputs from another thread: torch.cat (and pack_sequence) crash
# inside torch on it (docs/safety.md). Replacement and in-place values are raced here.
def _small_tensors_raced(seconds: float, call, mutated=(1, 4)) -> None:
    batch = [small_tensor(k, 0) for k in range(6)]
    st = _PerSlot(batch, mutated=list(mutated), ops=[_fill_small, _replace(small_tensor)])
    st.run(seconds, call, lambda k, v, n: n == small_length(k, v), threads=2)


@scenario
def small_tensors_replaced_and_filled_in_two_threads_while_packing(seconds: float) -> None:
    _small_tensors_raced(seconds, _packed)


@scenario
def small_tensors_replaced_and_filled_in_two_threads_while_padding(seconds: float) -> None:
    _small_tensors_raced(seconds, _padded)


@scenario
def small_tensors_replaced_and_filled_while_padding_in_chunks(seconds: float) -> None:
    _tiny_chunks()
    _small_tensors_raced(seconds, _padded)


@scenario
def small_tensors_replaced_and_filled_while_collating_in_chunks(seconds: float) -> None:
    _tiny_chunks()
    collate = fastcollate.PackedCollate()
    _small_tensors_raced(
        seconds, lambda b: list(torch.nn.utils.rnn.unpack_sequence(collate(b))), (0, 3))


def _append_pop(lst, rng):
    lst.append(lst[0] if lst else 0.0)
    lst.pop()


def _clear_refill(lst, rng):
    keep = list(lst)
    lst.clear()
    lst.extend(keep)


def _del_slice_refill(lst, rng):
    keep = list(lst)
    del lst[:]
    lst[:] = keep


def _grow_shrink(lst, rng):
    n = len(lst)
    lst.extend(lst[:1] * 3000)
    del lst[n:]


def _element_write(lst, rng):
    if lst:
        lst[rng.randrange(len(lst))] = lst[0]


LIST_MUTATIONS = [_append_pop, _clear_refill, _del_slice_refill, _grow_shrink, _element_write]


def _list_ops(factory):
    return [_replace(factory)] + [
        (lambda st, k, rng, f=f: f(st.batch[k], rng)) for f in LIST_MUTATIONS]


def _list_lengths_ok(k, v, n):
    """A list seen mid-mutation: its version's length, one more, or any length the
    grow/shrink mutations pass through (0 included: then pack raises, naming it)."""
    L = length_of(k, v) // 4 if v >= 0 else 0
    return v < 0 or n in (0, L, L + 1) or L <= n <= L + 3000


@scenario
def float_lists_mutated_while_packing(seconds: float) -> None:
    _threaded(float_list, _list_ops(float_list), _packed, _list_lengths_ok)


@scenario
def float_lists_mutated_while_padding(seconds: float) -> None:
    _threaded(float_list, _list_ops(float_list), _padded, _list_lengths_ok)


@scenario
def float_lists_mutated_while_flattening(seconds: float) -> None:
    _threaded(float_list, _list_ops(float_list), _flattened, _list_lengths_ok)


@scenario
def int_lists_mutated_while_packing(seconds: float) -> None:
    _threaded(int_list, _list_ops(int_list), _packed, _list_lengths_ok)


@scenario
def batch_list_resized_while_packing(seconds: float) -> None:
    B = 5
    batch = [mapped_array(k, 0) for k in range(B)]
    extra = [mapped_array(B, 0), mapped_array(B + 1, 0)]

    def append_pop(st, k, rng):
        st.batch.append(mapped_array(B, 0))
        st.batch.pop()

    def extend_truncate(st, k, rng):
        st.batch.extend(extra)
        del st.batch[B:]

    def reassign_all(st, k, rng):
        st.batch[:] = [mapped_array(j, 0) if j in st.mutated else st.batch[j]
                       for j in range(B)]

    st = Stress(batch, mutated=[2, 3], ops=[append_pop, extend_truncate, reassign_all,
                                           _replace(mapped_array)])
    st.run(SECONDS, _packed, _version_length)


@scenario
def collate_fields_mutated_while_collating(seconds: float) -> None:
    B = 6
    batch = [{"seq": float_list(k, 0), "label": k, "frames": big_array(k, 0)}
             for k in range(B)]
    seq0 = [len(s["seq"]) for s in batch]
    frames0 = [s["frames"].shape[0] for s in batch]
    collate = fastcollate.PackedCollate(lengths=True)

    def list_op(st, k, rng):
        rng.choice(LIST_MUTATIONS)(st.batch[k]["seq"], rng)

    def replace_frames(st, k, rng):
        st.batch[k]["frames"] = big_array(k, rng.randrange(1, 1000))

    def replace_sample(st, k, rng):
        v = rng.randrange(1, 1000)
        st.batch[k] = {"seq": float_list(k, v), "label": k, "frames": big_array(k, v)}

    def call(samples):
        out = collate(samples)
        labels = out["label"].tolist()
        assert labels == list(range(B)), f"labels {labels}"
        seqs = torch.nn.utils.rnn.unpack_sequence(out["seq"])
        frames = torch.nn.utils.rnn.unpack_sequence(out["frames"])
        for k in range(B):
            why = verdict(seqs[k], k, k in st.mutated, seq0[k],
                          lambda v, n, k=k: _list_lengths_ok(k, v, n))
            assert why is None, f"field seq: {why}"
            why = verdict(frames[k], k, k in st.mutated, frames0[k],
                          lambda v, n, k=k: _version_length(k, v, n))
            assert why is None, f"field frames: {why}"
        return None

    st = Stress(batch, mutated=[0, 2, 5], ops=[list_op, replace_frames, replace_sample])
    st.run(SECONDS, call, _version_length)


@scenario
def plans_written_into_guarded_buffers_while_mutated(seconds: float) -> None:
    # all float lists: read by the list reader at write time, after the plan
    batch = [float_list(k, 0) for k in range(6)]

    def call(samples):
        plan = kernels.plan_batch(samples)
        time.sleep(0)                       # let the mutators run between plan and write
        g = Guarded(plan.shape, plan.dtype)
        try:
            kernels.write_plan(plan, g.out)
        finally:
            g.check()
        return list(torch.nn.utils.rnn.unpack_sequence(kernels.wrap_packed(g.out, plan)))

    st = Stress(batch, mutated=[1, 2, 3], ops=_list_ops(float_list))
    st.run(SECONDS, call, _list_lengths_ok)


class _Finalizer:
    """Garbage in a reference cycle: the collector's finalizer call ``state["n"]``
    applies ``state["mutate"]`` when it is ``state["at"]``, else re-arms itself, so
    with a gen-0 threshold of 1 the batch is mutated at exactly the ``at``-th
    collection, i.e. at the ``at``-th allocation point inside the call."""

    def __init__(self, state):
        self.state = state
        self.cycle = [self]

    def __del__(self):
        st = self.state
        st["n"] += 1
        if st["n"] == st["at"]:
            st["mutate"]()
        elif st["n"] < st["at"]:
            _Finalizer(st)


def _mutated_by_finalizers(make_batch, mutations, call, verdict) -> int:
    """Run ``call(batch)`` with the batch mutated by a finalizer (Python code that the
    collector runs inside the call) at every allocation point in turn, for each of
    ``mutations`` ((sample, mutate(batch)) pairs); ``verdict(result, k, mutated)`` is
    None for an acceptable sample ``k``. Returns the points tried."""
    tried = 0
    old = gc.get_threshold()
    gc.collect()
    for mutated, mutate in mutations:
        for at in range(1, 10_000):
            batch = make_batch()
            state = {"n": 0, "at": at, "mutate": lambda b=batch: mutate(b)}
            gc.collect(0)
            _Finalizer(state)
            gc.set_threshold(1, 1_000_000, 1_000_000)
            try:
                result = call(batch)
            except CLEAN_ERRORS as e:
                result = e
            finally:
                gc.set_threshold(*old)
            hit = state["n"] >= at
            state["at"] = 0                 # disarm what is left
            gc.collect(0)
            if isinstance(result, BaseException):
                assert hit and f"sample {mutated}" in str(result), \
                    f"point {at}: {result!r} does not name sample {mutated}"
            else:
                for k in range(len(batch)):
                    why = verdict(result, k, hit and k == mutated)
                    assert why is None, f"mutation of sample {mutated} at point {at}: {why}"
            tried += 1
            if not hit:
                break                       # the call ended before that point
    return tried


@scenario
def finalizers_mutating_tensors_inside_pack(seconds: float) -> None:
    """A storage freed, reallocated or replaced by a finalizer at any point of a
    one-call pack or pad of tensors read directly (and of small ones, concatenated): each
    mutated sample is its old version, its new one, the new data cut to the old
    length, or a ValueError naming it; the others are exact."""
    def unpacked(batch):
        return [t.clone() for t in torch.nn.utils.rnn.unpack_sequence(fastcollate.pack(batch))]

    def unpadded(batch):
        out, lengths = fastcollate.pad(batch, padding_value=-1, return_lengths=True)
        assert bool((out[1, int(lengths[1]):] == -1).all()), "padding overwritten"
        return [out[k, :int(n)].clone() for k, n in enumerate(lengths.tolist())]

    def verdict(out, k, mutated, length):
        s = out[k]
        vals = sorted(set(s.reshape(-1).tolist()))
        n = s.shape[0]
        ok = {(length(k, 0), value_of(k, 0))}
        if mutated:
            ok |= {(n, value_of(k, 1))}     # the new version, or it cut to the old length
        return None if len(vals) == 1 and (n, vals[0]) in ok else \
            f"sample {k}: {n} rows of {vals[:3]}, expected one of {sorted(ok)}"

    def realloc(t, k):
        t.resize_(4 * t.shape[0], *t.shape[1:])     # reallocates: the old storage is freed
        t.fill_(value_of(k, 1))

    mutations = [
        (1, lambda b: b[1].untyped_storage().resize_(0)),
        (0, lambda b: realloc(b[0], 0)),
        (2, lambda b: b[2].set_(torch.full((small_length(2, 1),) + tuple(b[2].shape[1:]),
                                           value_of(2, 1), dtype=b[2].dtype))),
    ]
    def large(k, v):                        # 10-22 KB: read directly
        return torch.full((small_length(k, v), 256), value_of(k, v), dtype=torch.float64)

    def check(out, k, m):
        return verdict(out, k, m, small_length)

    tried = 0
    for call in (unpacked, unpadded):
        tried += _mutated_by_finalizers(lambda: [large(k, 0) for k in range(3)], mutations,
                                        call, check)
        # small tensors go through torch.cat, which itself crashes on a tensor whose
        # storage was freed under it (docs/safety.md, "Undefined"): the other mutations
        tried += _mutated_by_finalizers(lambda: [small_tensor(k, 0) for k in range(3)],
                                        mutations[1:], call, check)
    assert tried > 20, tried


# ---------------------------------------------------------------------------------
# pytest: one test per scenario, each in its own interpreter
# ---------------------------------------------------------------------------------

DETERMINISTIC = [n for n in SCENARIOS if n.endswith("after_planning")
                 or n.endswith("after_planning_a_padded_batch")]
THREADED = [n for n in SCENARIOS if n not in DETERMINISTIC]


def _run(name: str) -> None:
    timeout = 60 + 20 * SECONDS * (5 if SANITIZED else 1)
    proc = run_isolated([os.path.abspath(__file__), name, str(SECONDS)], timeout=timeout)
    assert_survives(proc, f"stress scenario {name!r}")


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_mutating_a_sample_between_plan_and_write_is_safe(name):
    _run(name)


@pytest.mark.parametrize("name", THREADED)
def test_concurrent_mutation_while_collating_is_safe(name):
    _run(name)


if __name__ == "__main__":
    torch.set_num_threads(1)
    SCENARIOS[sys.argv[1]](float(sys.argv[2]))
    print("ok")
