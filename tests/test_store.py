"""Flat ragged stores: RaggedArray, packing/padding by indices, StoreDataset.

The reference for every store result is the list path: ``pack([store[i] for i in
indices])`` (itself tested against torch), and a plain NumPy slice for the rows."""
import os
import pickle
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch.nn.utils.rnn import pack_sequence, pad_sequence
from torch.utils.data import DataLoader

import fastcollate
from fastcollate import (BucketBatchSampler, PackedCollate, RaggedArray, RaggedBatch,
                         StoreBatch, StoreDataset, open_store, pack, pad, write_store)
from fastcollate import _store
from reference import reference_pack

TMP = tempfile.mkdtemp(prefix="fc-store-")

VALUE_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                np.uint64, np.float16, np.float32, np.float64, np.bool_, np.complex64]
TARGETS = [None, torch.int64, torch.int32, torch.float32, torch.float64, torch.uint16]


def _values(rng, n, row, dtype):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, (n,) + row).astype(bool)
    if np.dtype(dtype).kind in "fc":
        return (rng.standard_normal((n,) + row) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (n,) + row, dtype=dtype, endpoint=True)


def _memmapped(values, name):
    path = os.path.join(TMP, name)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=values.dtype, shape=values.shape)
    mm[...] = values
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def _outcome(fn):
    """(result, None) or (None, exception type): the two paths must agree on both."""
    try:
        return fn(), None
    except (ValueError, TypeError, OverflowError, IndexError, RuntimeError) as e:
        return None, type(e)


def _same_packed(a, b):
    assert a.data.dtype == b.data.dtype
    assert torch.equal(a.data, b.data)
    assert torch.equal(a.batch_sizes, b.batch_sizes)
    for x, y in ((a.sorted_indices, b.sorted_indices), (a.unsorted_indices, b.unsorted_indices)):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y)


stores = st.fixed_dictionaries({
    "lengths": st.lists(st.integers(0, 9), min_size=1, max_size=24),
    "row": st.sampled_from([(), (3,), (2, 2)]),
    "dtype": st.sampled_from(VALUE_DTYPES),
    "target": st.sampled_from(TARGETS),
    "mapped": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
})


def _make(spec, name="prop.npy"):
    rng = np.random.default_rng(spec["seed"])
    lengths = np.array(spec["lengths"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = _values(rng, int(offsets[-1]), spec["row"], spec["dtype"])
    if spec["mapped"]:
        values = _memmapped(values, name)
    return RaggedArray(values, offsets), rng


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores, st.data())
def test_pack_by_indices_equals_pack_of_the_list(spec, data):
    store, rng = _make(spec)
    n = len(store)
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=30))   # repeats
    enforce = data.draw(st.booleans())
    if enforce:
        idx = sorted(idx, key=lambda i: -int(store.lengths[i]))
    target = spec["target"]
    ours, err = _outcome(lambda: pack(store[idx], dtype=target, enforce_sorted=enforce))
    ref, ref_err = _outcome(lambda: pack([store[i] for i in idx], dtype=target,
                                         enforce_sorted=enforce))
    assert err == ref_err
    if ref is not None:
        _same_packed(ours, ref)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores, st.data())
def test_pad_by_indices_equals_pad_of_the_list(spec, data):
    store, rng = _make(spec, "prop-pad.npy")
    idx = data.draw(st.lists(st.integers(0, len(store) - 1), min_size=1, max_size=30))
    opts = dict(batch_first=data.draw(st.booleans()),
                padding_side=data.draw(st.sampled_from(["right", "left"])),
                padding_value=data.draw(st.sampled_from([0, 1, 7])),
                pad_to_multiple_of=data.draw(st.sampled_from([None, 4])),
                return_lengths=True)
    target = spec["target"]
    ours, err = _outcome(lambda: pad(store[idx], dtype=target, **opts))
    ref, ref_err = _outcome(lambda: pad([store[i] for i in idx], dtype=target, **opts))
    assert err == ref_err
    if ref is not None:
        assert ours[0].dtype == ref[0].dtype
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


def test_uint16_tokens_pack_to_int64_like_torch():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 50, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(0, 65536, int(offsets[-1])).astype(np.uint16)
    store = RaggedArray(values, offsets, dtype=torch.int64)
    idx = rng.integers(0, 40, 64)
    p = pack(store[idx])
    assert p.data.dtype == torch.int64 and p.sorted_indices is not None
    tensors = [torch.from_numpy(values[offsets[i]:offsets[i + 1]].astype(np.int64)) for i in idx]
    ref = pack_sequence(tensors, enforce_sorted=False)
    unpacked = torch.nn.utils.rnn.pad_packed_sequence(p, batch_first=True)[0]
    ref_unpacked = torch.nn.utils.rnn.pad_packed_sequence(ref, batch_first=True)[0]
    assert torch.equal(unpacked, ref_unpacked)
    assert torch.equal(pad(store[idx]), pad_sequence(tensors, batch_first=True))


def test_the_converting_copy_is_used_for_token_ids():
    store = RaggedArray(np.arange(10, dtype=np.uint16), [0, 4, 10], dtype=torch.int64)
    plan = fastcollate.packing.plan_batch(store[[0, 1]])
    assert plan.convert == "Hq" and plan.flat is None
    assert fastcollate.packing.plan_batch(store[[0, 1]], dtype=torch.uint16).convert == ""


def test_a_conversion_without_kernel_goes_through_torch():
    store = RaggedArray(np.array([1, 2, 3], dtype=np.uint16), [0, 2, 3])
    p = pack(store[[0, 1]], dtype=torch.float16)
    assert p.data.dtype == torch.float16 and p.data.tolist() == [1.0, 3.0, 2.0]


def test_pack_of_a_whole_store():
    store = RaggedArray(np.arange(5), [0, 2, 5])
    _same_packed(pack(store), pack(list(store)))


def _token_store(rng, n, max_len):
    """n samples of 1..max_len uint16 token ids, packed as int64."""
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, max_len, n))])
    values = rng.integers(0, 30000, offsets[-1]).astype(np.uint16)
    return RaggedArray(values, offsets, dtype=torch.int64), offsets


def test_packed_collate_pack_and_pad_modes_equal_the_sample_path():
    rng = np.random.default_rng(2)
    tokens, offsets = _token_store(rng, 50, 20)
    frames = RaggedArray(rng.standard_normal((offsets[-1], 4)).astype(np.float32), offsets)
    labels = rng.integers(0, 5, 50)
    ds = StoreDataset({"x": tokens, "f": frames, "y": labels})
    idx = [3, 7, 7, 0, 42]
    batch = ds.__getitems__(idx)
    samples = [ds[i] for i in idx]
    for collate in (PackedCollate(lengths=True, groups=[("x", "f")]),
                    PackedCollate(mode="pad", mask=True, padding_value=-1,
                                  dtype={"f": torch.float64})):
        ours, ref = collate(batch), collate(samples)
        assert ours.keys() == ref.keys()
        for k in ref:
            if isinstance(ref[k], torch.nn.utils.rnn.PackedSequence):
                _same_packed(ours[k], ref[k])
            else:
                assert ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k])


def test_packed_collate_tuple_and_bare_store_datasets():
    tokens = RaggedArray(np.arange(10, dtype=np.int32), [0, 3, 4, 8, 10])
    ds = StoreDataset((tokens, np.array([5, 6, 7, 8])))
    packed, labels = PackedCollate()(ds.__getitems__([2, 1]))
    assert packed.data.tolist() == [4, 3, 5, 6, 7] and labels.tolist() == [7, 6]
    bare = PackedCollate()(StoreDataset(tokens).__getitems__([0, 3]))
    _same_packed(bare, pack([tokens[0], tokens[3]]))


def test_packed_collate_refuses_ragged_keys_that_are_not_the_stores():
    ds = StoreDataset({"x": RaggedArray(np.arange(3), [0, 1, 3]), "y": np.zeros(2)})
    with pytest.raises(ValueError, match="ragged fields"):
        PackedCollate(ragged=["x", "y"])(ds.__getitems__([0]))
    with pytest.raises(ValueError, match="empty batch"):
        PackedCollate()(ds.__getitems__([]))


def test_store_batch_is_a_sequence_of_the_samples():
    ds = StoreDataset({"x": RaggedArray(np.arange(6), [0, 2, 6]), "y": np.array([1, 2])})
    batch = ds.__getitems__([1, 0, 1])
    assert isinstance(batch, StoreBatch) and len(batch) == 3
    items = list(batch)
    assert [it["y"] for it in items] == [2, 1, 2]
    assert [it["x"].tolist() for it in items] == [[2, 3, 4, 5], [0, 1], [2, 3, 4, 5]]
    assert len(batch[1:]) == 2


def test_dataloader_with_bucket_sampler_equals_the_per_sample_dataset():
    rng = np.random.default_rng(3)
    tokens, _ = _token_store(rng, 200, 30)
    labels = rng.integers(0, 3, 200)
    ds = StoreDataset({"x": tokens, "y": labels})

    class PerSample(torch.utils.data.Dataset):
        def __len__(self):
            return 200

        def __getitem__(self, i):
            return {"x": tokens[i].astype(np.int64), "y": labels[i]}

    sampler = BucketBatchSampler(ds.lengths, max_tokens=300, seed=0)
    fast = list(DataLoader(ds, batch_sampler=sampler, collate_fn=PackedCollate()))
    slow = list(DataLoader(PerSample(), batch_sampler=sampler, collate_fn=PackedCollate()))
    assert len(fast) == len(slow) > 5
    for a, b in zip(fast, slow):
        _same_packed(a["x"], b["x"])
        assert torch.equal(a["y"], b["y"])


def test_with_a_worker_the_batch_is_one_shared_block():
    tokens = RaggedArray(np.arange(40, dtype=np.uint16), np.arange(0, 41, 4), dtype=torch.int64)
    ds = StoreDataset({"x": tokens, "y": np.arange(10)})
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=PackedCollate())
    batch = next(iter(loader))
    _same_packed(batch["x"], pack([tokens[i] for i in range(4)], dtype=torch.int64))
    storages = {t.untyped_storage().data_ptr() for t in
                (batch["x"].data, batch["x"].batch_sizes, batch["y"])}
    assert len(storages) == 1 and batch["y"].is_shared()


# -- the store type ------------------------------------------------------------------

def test_store_views_slices_and_lengths():
    values = np.arange(20).reshape(10, 2)
    store = RaggedArray(values, [0, 3, 3, 7, 10])
    assert len(store) == 4 and store.row == (2,)
    assert store.lengths.tolist() == [3, 0, 4, 3]
    assert not store.lengths.flags.writeable
    assert np.shares_memory(store[2], values) and store[2].tolist() == values[3:7].tolist()
    assert store[-1].tolist() == values[7:].tolist()
    sub = store[1:3]
    assert isinstance(sub, RaggedArray) and sub.lengths.tolist() == [0, 4]
    assert np.shares_memory(sub.values, values) and sub[1].tolist() == store[2].tolist()
    stepped = store[::2]
    assert isinstance(stepped, RaggedBatch) and stepped.indices.tolist() == [0, 2]
    assert [s.tolist() for s in store] == [store[i].tolist() for i in range(4)]
    assert "4 samples" in repr(store)
    with pytest.raises(IndexError, match="out of range"):
        store[4]


def test_a_memory_mapped_store_pickles_as_its_file():
    values = _memmapped(np.arange(100_000, dtype=np.uint16), "pickled.npy")
    offsets = _memmapped(np.arange(0, 100_001, 100, dtype=np.int64), "pickled-off.npy")
    store = RaggedArray(values, offsets, dtype=torch.int64)
    blob = pickle.dumps(store)
    assert len(blob) < 2000                    # not the 200 KB of values
    back = pickle.loads(blob)
    assert isinstance(back.values, np.memmap) and back.dtype == torch.int64
    _same_packed(pack(back[[5, 999, 5]]), pack(store[[5, 999, 5]]))
    sub = pickle.loads(pickle.dumps(store[100:200]))
    assert isinstance(sub.values, np.memmap) and sub[0].tolist() == store[100].tolist()


def test_an_in_memory_store_pickles_its_values():
    store = RaggedArray(np.arange(5), [0, 2, 5])
    back = pickle.loads(pickle.dumps(store))
    assert back[1].tolist() == [2, 3, 4]


def test_huge_sparse_store_reads_only_the_selected_rows(tmp_path):
    """A store far larger than memory (a sparse file): packing reads only its rows."""
    resource = pytest.importorskip("resource")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = max(2 * ram, 64 << 30)
    path = tmp_path / "huge.bin"
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError:
        pytest.skip("no sparse files here")
    n_rows = size // 2
    per = 1 << 20
    n = n_rows // per
    offsets = np.arange(n + 1, dtype=np.int64) * per
    picks = [n - 1, 0, n // 2]
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in picks:
            os.pwrite(fd, np.full(per, i % 65536, dtype=np.uint16).tobytes(), int(offsets[i]) * 2)
    finally:
        os.close(fd)
    store = RaggedArray(np.memmap(path, mode="r", dtype=np.uint16), offsets, dtype=torch.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = pack(store[picks])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert p.data.shape == (3 * per,)
    assert p.data[:3].tolist() == [(n - 1) % 65536, 0, (n // 2) % 65536]
    assert grown_mb < 200                      # 3 * 2 MB read + 24 MB out, not the file


# -- bad stores and bad indices -------------------------------------------------------

@pytest.mark.parametrize("offsets, match", [
    ([0, 3, 2, 5], "decrease at entry 2"),
    ([1, 3, 5], r"offsets\[0\] is 1"),
    ([0, 3, 7], "shorter than the offsets claim"),
    ([0, 3, 4], r"offsets\[-1\] is 4 but the values have 5"),
    ([], "empty"),
])
def test_bad_offsets_are_named(offsets, match):
    with pytest.raises(ValueError, match=match):
        RaggedArray(np.arange(5), np.array(offsets, dtype=np.int64))


def test_offsets_of_the_wrong_type_are_refused():
    with pytest.raises(TypeError, match="integers"):
        RaggedArray(np.arange(5), np.array([0.0, 5.0]))
    with pytest.raises(ValueError, match="one-dimensional"):
        RaggedArray(np.arange(5), np.array([[0, 5]]))
    with pytest.raises(TypeError, match="values must be"):
        RaggedArray([1, 2, 3], [0, 3])
    with pytest.raises(TypeError, match="not supported"):
        RaggedArray(np.array(["a", "b"]), [0, 2])
    assert RaggedArray(np.arange(5), np.array([0, 5], dtype=np.int32)).offsets.dtype == np.int64


@pytest.mark.parametrize("indices, exc, match", [
    ([0, 3], IndexError, "index 3 .position 1. is out of range"),
    ([-1], IndexError, "negative indices are refused"),
    ([0.5], TypeError, "integers"),
    ([[0]], TypeError, "one-dimensional"),
])
def test_bad_indices_are_named(indices, exc, match):
    store = RaggedArray(np.arange(5), [0, 2, 4, 5])
    with pytest.raises(exc, match=match):
        pack(store[indices])
    with pytest.raises(exc, match=match):
        StoreDataset(store).__getitems__(indices)


def test_offsets_changed_after_checking_never_read_outside_the_values():
    store = RaggedArray(np.arange(5), np.array([0, 2, 5]))
    batch = store[[0, 1]]
    store.offsets[2] = 10**12                  # a caller scribbling on the table
    with pytest.raises(ValueError, match="outside the store"):
        pack(batch)
    store.offsets[1] = 4
    store.offsets[2] = 3
    with pytest.raises(ValueError, match="outside the store"):
        pad(store[[1]])


def test_kernels_check_their_tables():
    ptrs = np.zeros(2, dtype=np.int64)
    out = torch.empty(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="non-increasing"):
        _store.convert_packed("H", "q", ptrs, [1, 3], None, 1, out.data_ptr(), 4)
    with pytest.raises(ValueError, match="output holds 3"):
        _store.convert_packed("H", "q", ptrs, [3, 1], None, 1, out.data_ptr(), 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        _store.convert_padded("H", "q", ptrs, [3, 1], 2, 1, out.data_ptr(), 4, True, False,
                              bytes(8))
    with pytest.raises(ValueError, match="no converting copy"):
        _store.convert_packed("e", "q", ptrs, [1, 1], None, 1, out.data_ptr(), 4)
    assert _store.can_convert("H", "q") and not _store.can_convert("q", "H")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores, st.data())
def test_pack_of_a_selection_in_one_call_equals_the_packed_reference(spec, data):
    """_store.pack_selection (what pack(store[idx]) runs for a store of its values'
    dtype): every row at its packed place, the indices as torch's."""
    spec = dict(spec, lengths=[n + 1 for n in spec["lengths"]])      # no empty sample
    store, _ = _make(spec, "onecall.npy")
    idx = data.draw(st.lists(st.integers(0, len(store) - 1), min_size=1, max_size=30))
    enforce = data.draw(st.booleans())
    if enforce:
        idx = sorted(idx, key=lambda i: -int(store.lengths[i]))
    got = _store.pack_selection(store.offsets, np.array(idx), store.values, enforce)
    assert got is not None
    data_, bs, si, ui = got
    want, want_bs, want_si, want_ui = reference_pack(
        [torch.from_numpy(np.array(store[i])) for i in idx], enforce)
    assert data_.dtype == store.values.dtype and torch.equal(torch.from_numpy(data_), want)
    assert bs.tolist() == want_bs
    assert (si is None) if enforce else (si.tolist() == want_si and ui.tolist() == want_ui)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores, st.data())
def test_pack_of_a_converting_store_equals_pack_of_the_converted_list(spec, data):
    """A store made with dtype= (uint16 ids read as int64...): pack(store[idx]) in one
    call, or planned where torch converts, equals the converted samples packed."""
    spec = dict(spec, lengths=[n + 1 for n in spec["lengths"]])
    plain, _ = _make(spec, "convert.npy")
    target = spec["target"] or torch.int64
    store = RaggedArray(plain.values, plain.offsets, dtype=target)
    idx = data.draw(st.lists(st.integers(0, len(store) - 1), min_size=1, max_size=30))
    ours = pack(store[idx])
    ref = pack([torch.from_numpy(np.array(plain[i])).to(target) for i in idx])
    assert ours.data.dtype == target
    _same_packed(ours, ref)


def test_pack_of_a_selection_is_one_call_unless_torch_converts(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("planned")
    store = RaggedArray(np.arange(12, dtype=np.int32).reshape(6, 2), [0, 2, 3, 6])
    with monkeypatch.context() as m:
        m.setattr(fastcollate.packing, "plan_batch", refuse)
        p = pack(store[[2, 0, 2]])
    assert p.data.dtype == torch.int32 and p.batch_sizes.tolist() == [3, 3, 2]
    assert p.data[:3].tolist() == [[6, 7], [6, 7], [0, 1]]
    assert p.sorted_indices.tolist() == [0, 2, 1]
    # a store converting on read (uint16 -> int64) with a converting copy: one call too
    u16 = RaggedArray(np.arange(4, dtype=np.uint16), [0, 1, 4], dtype=torch.int64)
    with monkeypatch.context() as m:
        m.setattr(fastcollate.packing, "plan_batch", refuse)
        p = pack(u16[[1, 0]])
    assert p.data.dtype == torch.int64 and p.data.tolist() == [1, 0, 2, 3]
    # a conversion through torch (uint16 -> float16), dtype=: planned
    f16 = RaggedArray(np.arange(4, dtype=np.uint16), [0, 1, 4], dtype=torch.float16)
    for batch, kw in [(f16[[1, 0]], {}), (store[[0]], {"dtype": torch.int64})]:
        with monkeypatch.context() as m:
            m.setattr(fastcollate.packing, "plan_batch", refuse)
            with pytest.raises(AssertionError, match="planned"):
                pack(batch, **kw)
    empty = RaggedArray(np.arange(3), [0, 0, 3])
    assert _store.pack_selection(empty.offsets, np.array([1, 0]), empty.values) is None
    assert _store.pack_selection(store.offsets, np.array([0, 2]), store.values, True) is None


def test_zero_length_samples_pack_error_and_pad_fine():
    store = RaggedArray(np.arange(3), [0, 0, 3])
    with pytest.raises(ValueError, match=r"sample 1 has length 0.*\(store sample 0\)"):
        pack(store[[1, 0]])                     # batch position, then store index
    assert pad(store[[0, 1]]).tolist() == [[0, 0, 0], [0, 1, 2]]


# -- the on-disk format ---------------------------------------------------------------

def test_write_store_streams_and_reopens_memory_mapped(tmp_path):
    seqs = [np.arange(i % 7 + 1) for i in range(500)]
    store = write_store(tmp_path / "s", iter(seqs), dtype=np.uint16, buffer_bytes=256)
    assert isinstance(store.values, np.memmap) and store.values.dtype == np.uint16
    assert [s.tolist() for s in store] == [s.tolist() for s in seqs]
    assert np.load(tmp_path / "s" / "offsets.npy")[-1] == sum(map(len, seqs))
    again = open_store(tmp_path / "s", dtype=torch.int64)
    assert pack(again[[3, 4]]).data.dtype == torch.int64
    rows = write_store(tmp_path / "r", (np.ones((i + 1, 3)) for i in range(4)),
                       dtype=np.float32)
    assert rows.row == (3,) and rows.lengths.tolist() == [1, 2, 3, 4]


def test_write_store_holds_a_bounded_buffer(tmp_path):
    import tracemalloc

    def corpus():                              # 4M tokens, 8 MB as uint16
        for i in range(4000):
            yield np.full(1000, i, dtype=np.int64)

    tracemalloc.start()
    store = write_store(tmp_path / "big", corpus(), dtype=np.uint16, buffer_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(store) == 4000 and int(store[3999][0]) == 3999
    assert peak < 6 << 20


def test_write_store_errors(tmp_path):
    with pytest.raises(OverflowError, match="sequence 1"):
        write_store(tmp_path / "a", [[1], [70000]], dtype=np.uint16)
    with pytest.raises(ValueError, match="sequence 1 has shape"):
        write_store(tmp_path / "b", [np.zeros((2, 3)), np.zeros((2, 4))], dtype=np.float32)
    write_store(tmp_path / "c", [[1]], dtype=np.int64)
    with pytest.raises(FileExistsError):
        write_store(tmp_path / "c", [[1]], dtype=np.int64)
    empty = write_store(tmp_path / "d", [], dtype=np.uint16)
    assert len(empty) == 0
    with pytest.raises(FileNotFoundError, match="is .* a store"):
        open_store(tmp_path / "nothing")


def test_build_store_command(tmp_path, capsys):
    from fastcollate.__main__ import main
    text = tmp_path / "in.txt"
    text.write_text("the cat sat\n\nthe dog\n")
    main(["build-store", str(text), str(tmp_path / "w"), "--tokenizer", "whitespace"])
    store = open_store(tmp_path / "w")
    vocab = (tmp_path / "w" / "vocab.txt").read_text().split("\n")[:-1]
    assert [[vocab[t] for t in s] for s in store] == [["the", "cat", "sat"], ["the", "dog"]]
    main(["build-store", str(text), str(tmp_path / "b")])
    assert bytes(open_store(tmp_path / "b")[1]) == b"the dog"
    assert "2 sequences" in capsys.readouterr().err
