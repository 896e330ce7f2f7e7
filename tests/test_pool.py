"""The cache of large output buffers (fastcollate/_pool.h, kernels.empty_cache).

A buffer of 4 MB or more is kept when its last array/tensor is freed and reused by a
later output: it must never be handed out while anything still views it, never hold
more than its limit, and a reused buffer's old bytes must never show through."""
import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_sequence

import fastcollate
from fastcollate import _core, kernels

MB = 1 << 20


@pytest.fixture(autouse=True)
def fresh_cache():
    limit = _core.pool_limit()
    _core.pool_limit(256 * MB)
    kernels.empty_cache()
    yield
    kernels.empty_cache()
    _core.pool_limit(limit)


def big_batch(seed, B=64, mean=10_000, dtype=np.int64):
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, size=int(n)).astype(dtype)
            for n in rng.integers(1, 2 * mean, size=B)]


def same_as_torch(packed, batch):
    ref = pack_sequence([torch.from_numpy(a) for a in batch], enforce_sorted=False)
    return (torch.equal(packed.data, ref.data)
            and torch.equal(packed.batch_sizes, ref.batch_sizes)
            and torch.equal(packed.unsorted_indices, ref.unsorted_indices))


def test_a_freed_output_is_reused_by_the_next_one_that_fits():
    a = fastcollate.pack(big_batch(0))
    ptr, nbytes = a.data.data_ptr(), a.data.numel() * 8
    assert nbytes >= 4 * MB
    del a
    gc.collect()
    assert _core.pool_stats()[0] == 1 and _core.pool_stats()[1] >= nbytes
    batch = big_batch(1)          # about the same size, other values
    b = fastcollate.pack(batch)
    assert b.data.data_ptr() == ptr
    assert _core.pool_stats() == (0, 0)
    assert same_as_torch(b, batch)


HOLDERS = {
    "tensor view": lambda p: p.data[5:100],
    "numpy view": lambda p: p.data.numpy()[7:],
    "tensor of a numpy view": lambda p: torch.from_numpy(p.data.numpy()[::2]),
    "PackedSequence": lambda p: p,
    "data tensor": lambda p: p.data,
}


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_an_output_still_referenced_anywhere_is_never_reused(holder):
    a = fastcollate.pack(big_batch(0))
    ptr = a.data.data_ptr()
    held = HOLDERS[holder](a)
    want = torch.as_tensor(held.data if holder == "PackedSequence" else held).clone()
    del a
    gc.collect()
    assert _core.pool_stats() == (0, 0)
    others = [fastcollate.pack(big_batch(s)) for s in (1, 2)]
    assert all(o.data.data_ptr() != ptr for o in others)
    got = torch.as_tensor(held.data if holder == "PackedSequence" else held)
    assert torch.equal(got, want)           # still the first batch's values
    del held, got
    gc.collect()
    assert _core.pool_stats()[0] == 1       # now, and only now, it is cached


@pytest.mark.parametrize("layout", ["pack", "pad", "pad_left", "collate", "flat"])
def test_a_reused_buffer_shows_none_of_its_old_bytes(layout):
    # fill the cache with buffers of garbage, then build each layout over them
    for size in (5, 6, 7, 8, 9, 12):
        g = _core.new_block(size * MB)
        g[:] = 0xAB
        del g
    rng = np.random.default_rng(3)
    batch = [rng.integers(1, 100, size=int(n)) for n in rng.integers(1, 20_000, 80)]
    tensors = [torch.from_numpy(a) for a in batch]
    if layout == "pack":
        assert same_as_torch(fastcollate.pack(batch), batch)
    elif layout in ("pad", "pad_left"):
        side = "left" if layout == "pad_left" else "right"
        got = fastcollate.pad(batch, padding_side=side)
        assert torch.equal(got, pad_sequence(tensors, batch_first=True, padding_side=side))
    elif layout == "collate":
        got, mask = fastcollate.PackedCollate(mode="pad", mask=True)(batch)
        assert torch.equal(got, pad_sequence(tensors, batch_first=True))
        lens = torch.tensor([len(a) for a in batch])
        assert torch.equal(mask, torch.arange(got.shape[1]) < lens[:, None])
    else:
        got = fastcollate.flatten(batch)
        assert torch.equal(got.values, torch.cat(tensors))


def test_a_small_output_does_not_take_a_much_larger_buffer():
    big = _core.new_block(64 * MB)
    ptr = big.ctypes.data
    del big
    small = _core.new_block(8 * MB)
    assert small.ctypes.data != ptr and _core.pool_stats()[0] == 1
    del small
    fits = _core.new_block(50 * MB)           # 64 MB (and its headroom) serves 50 MB
    assert fits.ctypes.data == ptr


def test_the_cache_stays_within_its_limit_and_slots():
    _core.pool_limit(40 * MB)
    blocks = [_core.new_block(n * MB) for n in (4, 5, 6, 7, 8, 9, 10, 11, 12, 13)]
    del blocks
    n, held = _core.pool_stats()
    assert 0 < n <= 8 and held <= 40 * MB
    huge = _core.new_block(41 * MB)           # larger than the limit: freed at once
    del huge
    assert _core.pool_stats()[1] <= 40 * MB
    _core.pool_limit(0)                       # 0: disabled, and emptied
    assert _core.pool_stats() == (0, 0)
    b = _core.new_block(8 * MB)
    del b
    assert _core.pool_stats() == (0, 0)


def test_small_outputs_are_not_cached():
    for _ in range(3):
        b = _core.new_block(4 * MB - 1)
        del b
    assert _core.pool_stats() == (0, 0)


def test_empty_cache_frees_what_it_holds():
    b = _core.new_block(10 * MB)
    del b
    freed = kernels.empty_cache()
    assert freed >= 10 * MB and _core.pool_stats() == (0, 0)
    assert kernels.empty_cache() == 0


def test_threads_packing_and_dropping_large_batches_get_right_results():
    batches = [big_batch(s, B=32) for s in range(6)]
    refs = [pack_sequence([torch.from_numpy(a) for a in b], enforce_sorted=False).data
            for b in batches]
    errors = []

    def work(k):
        try:
            held = []
            for i in range(12):
                j = (k + i) % len(batches)
                p = fastcollate.pack(batches[j])
                held.append((j, p))
                if len(held) > 2:               # drop an older one: back to the cache
                    j0, p0 = held.pop(0)
                    if not torch.equal(p0.data, refs[j0]):
                        errors.append((k, j0))
            for j0, p0 in held:
                if not torch.equal(p0.data, refs[j0]):
                    errors.append((k, j0))
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("value, limit", [("0", 0), ("16", 16 * MB), ("0.5", MB // 2),
                                          ("", 256 * MB)])
def test_the_limit_comes_from_FASTCOLLATE_POOL_MB(value, limit):
    env = dict(os.environ, FASTCOLLATE_POOL_MB=value)
    out = subprocess.run([sys.executable, "-c",
                          "from fastcollate import _core; print(_core.pool_limit())"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) == limit


def test_a_bad_FASTCOLLATE_POOL_MB_is_a_clear_error():
    env = dict(os.environ, FASTCOLLATE_POOL_MB="lots")
    out = subprocess.run([sys.executable, "-c", "import fastcollate"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "FASTCOLLATE_POOL_MB" in out.stderr
