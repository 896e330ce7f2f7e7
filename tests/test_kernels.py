"""The low-level kernels in fastcollate._core, every copy variant against a reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcollate import _core
from reference import reference_order


def reference_scatter(samples, order):
    """Packed rows, time step by time step, in rank order."""
    lengths = [len(s) for s in samples]
    return np.concatenate([np.stack([samples[i][t] for i in order if lengths[i] > t])
                           for t in range(max(lengths))])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=60),
       st.sampled_from([1, 2, 3, 4, 8, 12, 16, 20, 48, 64, 96, 320, 1000]),
       st.sampled_from([0, 1, 3, 8, 1000]),
       st.sampled_from([0, 1, 2, -1]),
       st.integers(0, 2**32 - 1))
def test_scatter_every_row_size_block_and_store_kind(lengths, row_bytes, block, stream, seed):
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, 256, size=(n, row_bytes), dtype=np.uint8) for n in lengths]
    bs, order, inverse = _core.sort_lengths(lengths)
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    out = np.full((sum(lengths), row_bytes), 0xAB, dtype=np.uint8)
    _core.scatter(ptrs, lengths, order, bs, row_bytes, out.ctypes.data, block, stream)
    np.testing.assert_array_equal(out, reference_scatter(samples, order.tolist()))


@st.composite
def long_tailed_lengths(draw):
    """A body of short samples and a few long ones (some of them tied), so that every
    phase of the tiled kernel runs: full 16-rank tiles, ranks ending inside a tile, the
    2-4 samples left in the tail, and the last one alone."""
    body = draw(st.lists(st.integers(1, 40), min_size=0, max_size=70))
    tail = draw(st.lists(st.integers(41, 400), min_size=0, max_size=5))
    ties = draw(st.lists(st.sampled_from(tail or [1]), max_size=3))
    lengths = body + tail + ties
    return lengths or [1]


@settings(max_examples=200, deadline=None)
@given(long_tailed_lengths(), st.sampled_from([1, 2, 4, 8, 16]),
       st.sampled_from([1, 3, 16, 17, 32, 64, 1000, -2, -3, -16, -17, -256]),
       st.integers(0, 2**32 - 1))
def test_tiled_scatter_of_narrow_rows_matches_the_reference(lengths, row_bytes, tile, seed):
    """Tiles of ``tile`` steps, or panels of ``-tile`` ranks."""
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, 256, size=(n, row_bytes), dtype=np.uint8) for n in lengths]
    bs, order, _ = _core.sort_lengths(lengths)
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    out = np.full((sum(lengths), row_bytes), 0xAB, dtype=np.uint8)
    _core.scatter(ptrs, lengths, order, bs, row_bytes, out.ctypes.data, tile=tile)
    np.testing.assert_array_equal(out, reference_scatter(samples, order.tolist()))


@pytest.mark.parametrize("row_bytes", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("tile", [2, 3, 5, 16, 64, -2, -256])
@pytest.mark.parametrize("offset", [0, 1])
def test_full_tiles_of_every_narrow_row_match_the_reference(row_bytes, tile, offset):
    """Batches where every rank of many tiles stays active over the whole tile, so that
    the register transposes (whole blocks of steps x 16 ranks) write most rows, with
    sources at aligned and at odd addresses."""
    rng = np.random.default_rng(row_bytes * 1000 + tile + 500)
    lengths = [int(n) for n in rng.integers(60, 200, size=40)] + [1, 2, 3, 5, 17, 300]
    buf = rng.integers(0, 256, size=sum(lengths) * row_bytes + len(lengths) + 64,
                       dtype=np.uint8)
    samples, at = [], offset
    for n in lengths:
        samples.append(buf[at:at + n * row_bytes].reshape(n, row_bytes))
        at += n * row_bytes + offset
    bs, order, _ = _core.sort_lengths(lengths)
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    out = np.full((sum(lengths), row_bytes), 0xAB, dtype=np.uint8)
    _core.scatter(ptrs, lengths, order, bs, row_bytes, out.ctypes.data, tile=tile)
    np.testing.assert_array_equal(out, reference_scatter(samples, order.tolist()))


@pytest.mark.parametrize("row_bytes", [2, 4, 8, 16])
@pytest.mark.parametrize("window", [64, 512, 4096])
def test_windows_of_one_buffer_in_the_same_cache_sets_match_the_reference(row_bytes,
                                                                          window):
    """Panels asked for (as for large outputs) over samples that start ``window`` bytes
    apart in one buffer (fixed windows of a flat corpus, in random order): their first
    lines share a few cache sets, so the kernel takes the tiles instead; ragged ends
    (some windows cut short) and every sample still land in place."""
    rng = np.random.default_rng(window + row_bytes)
    n = max(window // row_bytes, 1)
    buf = rng.integers(0, 256, size=400 * window + 64, dtype=np.uint8)
    starts = rng.choice(400, size=300, replace=False) * window
    lengths = [n if k % 7 else max(1, n // 3) for k in range(300)]
    samples = [buf[s:s + m * row_bytes].reshape(m, row_bytes) for s, m in zip(starts, lengths)]
    bs, order, _ = _core.sort_lengths(lengths)
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    out = np.full((sum(lengths), row_bytes), 0xAB, dtype=np.uint8)
    _core.scatter(ptrs, lengths, order, bs, row_bytes, out.ctypes.data, tile=-256)
    np.testing.assert_array_equal(out, reference_scatter(samples, order.tolist()))


def test_choose_tile_tiles_only_narrow_rows_of_long_batches():
    assert _core.choose_tile(8, 1000) > 0 and _core.choose_tile(1, 64) > 0
    assert _core.choose_tile(8, 4) == 0          # under 8 steps: the blocked loop
    assert _core.choose_tile(8, 8) == _core.choose_tile(2, 32) == _core.TILE_STEPS
    assert _core.choose_tile(320, 1000) == 0     # wide rows: the blocked loop
    # outputs beyond the caches: panels of ranks, except for 1-byte rows
    big = _core.PANEL_MIN_BYTES
    assert _core.choose_tile(8, 1000, 8192, big) == -_core.PANEL_RANKS
    assert _core.choose_tile(4, 8, 8192, big) == -_core.PANEL_RANKS
    assert _core.choose_tile(8, 1000, 1024, big - 1) == _core.TILE_STEPS
    assert _core.choose_tile(1, 1000, 8192, big) == _core.TILE_STEPS
    assert _core.choose_tile(320, 1000, 8192, big) == 0


def test_panel_min_bytes_sets_and_restores_the_threshold():
    old = _core.panel_min_bytes(0)
    try:
        assert old == _core.PANEL_MIN_BYTES
        assert _core.choose_tile(8, 4, 16, 1) == -_core.PANEL_RANKS
        with pytest.raises(ValueError):
            _core.panel_min_bytes(-1)
    finally:
        assert _core.panel_min_bytes(old) == 0
    assert _core.choose_tile(8, 4, 16, 1) == 0


def test_scatter_streams_large_outputs_correctly():
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((int(n), 80)).astype(np.float32)
               for n in rng.integers(100, 1500, size=64)]       # ~16 MB
    assert _core.choose_stream(320, sum(map(len, samples)) * 320) > 0
    bs, order, _ = _core.sort_lengths([len(s) for s in samples])
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    out = np.empty((sum(map(len, samples)), 80), dtype=np.float32)
    _core.scatter(ptrs, [len(s) for s in samples], order, bs, 320, out.ctypes.data)
    np.testing.assert_array_equal(out, reference_scatter(samples, order.tolist()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=100))
def test_sort_lengths_is_the_stable_descending_order(lengths):
    bs, order, inverse = _core.sort_lengths(lengths)
    assert order.tolist() == reference_order(lengths)
    assert bs.tolist() == [sum(n > t for n in lengths) for t in range(max(lengths))]
    assert (order[inverse] == np.arange(len(lengths))).all()


def test_scatter_rejects_inconsistent_metadata():
    a = np.arange(3, dtype=np.int64)
    out = np.empty(3, dtype=np.int64)
    bs, order, _ = _core.sort_lengths([3])
    with pytest.raises(ValueError, match="batch_sizes"):
        _core.scatter([a.ctypes.data], [3], order, [1, 1], 8, out.ctypes.data)
    with pytest.raises(ValueError, match="out of range"):
        _core.scatter([a.ctypes.data], [3], [5], bs, 8, out.ctypes.data)
    with pytest.raises(ValueError, match=r"batch_sizes\[1\] = 2 does not match"):
        _core.scatter([a.ctypes.data] * 2, [3, 1], None, [2, 2, 1], 8, out.ctypes.data)
    with pytest.raises(ValueError, match="not sorted"):
        _core.scatter([a.ctypes.data] * 2, [1, 3], None, [2, 1, 1], 8, out.ctypes.data)
    # more steps than samples (the O(B) check): a first step above B, a last one short
    with pytest.raises(ValueError, match=r"batch_sizes\[0\] = 2 does not match"):
        _core.scatter([a.ctypes.data], [3], None, [2, 1, 1], 8, out.ctypes.data)
    with pytest.raises(ValueError, match=r"batch_sizes\[2\] = 1 does not match"):
        _core.scatter([a.ctypes.data] * 2, [3, 3], None, [2, 2, 1], 8, out.ctypes.data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=10),
       st.sampled_from(["none", "bump", "drop", "append", "swap", "order", "lengths"]),
       st.integers(0, 2**32 - 1))
def test_scatter_takes_exactly_the_consistent_tables(lengths, change, seed):
    """The tables check (O(B) plus one pass over the steps) against the plain one:
    ``batch_sizes[t]`` must be the number of lengths above ``t`` for every step, the
    order a permutation sorting the lengths. Whatever is changed, scatter either
    raises ValueError before writing, or the tables were consistent and the output is
    the reference's."""
    rng = np.random.default_rng(seed)
    samples = [np.arange(100 * i, 100 * i + n + 1, dtype=np.int64)     # a row to spare
               for i, n in enumerate(lengths)]
    bs = [sum(n > t for n in lengths) for t in range(max(lengths))]
    order = reference_order(lengths)
    lens = list(lengths)
    if change == "bump":
        t = int(rng.integers(len(bs)))
        bs[t] += int(rng.choice([-2, -1, 1, 2]))
    elif change == "drop":
        bs.pop(int(rng.integers(len(bs))))
    elif change == "append":
        bs.insert(int(rng.integers(len(bs) + 1)), int(rng.integers(0, len(lens) + 2)))
    elif change == "swap" and len(bs) > 1:
        i, j = rng.choice(len(bs), size=2, replace=False)
        bs[i], bs[j] = bs[j], bs[i]
    elif change == "order" and len(order) > 1:
        i, j = rng.choice(len(order), size=2, replace=False)
        order[i], order[j] = order[j], order[i]
    elif change == "lengths":
        i = int(rng.integers(len(lens)))
        lens[i] = max(0, lens[i] + int(rng.choice([-1, 1])))
    ordered = [lens[i] for i in order]
    consistent = (sorted(order) == list(range(len(lens))) and min(lens) >= 1
                  and all(a >= b for a, b in zip(ordered, ordered[1:]))
                  and bs == [sum(n > t for n in lens) for t in range(max(lens))])
    total = sum(lens)
    out = np.full(total + 8, -1, dtype=np.int64)
    ptrs = np.array([s.ctypes.data for s in samples], dtype=np.int64)
    if not consistent:
        with pytest.raises(ValueError):
            _core.scatter(ptrs, lens, order, bs, 8, out.ctypes.data)
        assert (out == -1).all()
        return
    _core.scatter(ptrs, lens, order, bs, 8, out.ctypes.data)
    got = [s[:n] for s, n in zip(samples, lens)]
    np.testing.assert_array_equal(out[:total], reference_scatter(got, order))
    assert (out[total:] == -1).all()


def test_read_lists_range_checks_every_integer_width():
    out = np.zeros(2, dtype=np.int8)
    offsets = _core.offsets_of(np.array([1, 1], dtype=np.int64))
    two = np.array([2])
    with pytest.raises(OverflowError, match="sample 0, element 1"):
        _core.read_lists([[1, 200]], two, np.array([0]), offsets, out.ctypes.data, 2, "c",
                         -128, 127)
    _core.read_lists([[1, -5]], two, np.array([0]), offsets, out.ctypes.data, 2, "c",
                     -128, 127)
    assert out.tolist() == [1, -5]
    with pytest.raises(TypeError, match="sample 0 is a ndarray"):
        _core.read_lists([np.arange(2)], two, np.array([0]), offsets, out.ctypes.data, 2, "q")
    with pytest.raises(ValueError, match="longer than the offsets"):
        _core.read_lists([[1, 2, 3]], np.array([3]), np.array([0]), offsets,
                         out.ctypes.data, 2, "c", -128, 127)


@pytest.mark.parametrize("code", ["q", "b", "d", "D"])
def test_read_lists_refuses_a_list_whose_length_is_not_the_planned_one(code):
    out = np.full(8, 7, dtype=np.complex128)        # 128 bytes: room for any code
    offsets = _core.offsets_of(np.array([2, 2, 1], dtype=np.int64))
    for grown in ([1, 2, 3, 4], [1]):
        with pytest.raises(ValueError, match="sample 1 has length .* planned with length 2"):
            _core.read_lists([[1, 2, 3], grown], np.array([3, 2]), np.array([0, 1]),
                             offsets, out.ctypes.data, 5, code, -(2**63), 2**63 - 1)


def test_read_lists_never_writes_past_n_out():
    out = np.zeros(4, dtype=np.int64)
    offsets = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    with pytest.raises(ValueError, match="outside the output"):
        _core.read_lists([[1, 2, 3, 4]], np.array([4]), np.array([0]), offsets,
                         out[:2].ctypes.data, 2, "q", -(2**63), 2**63 - 1)
    assert out[2:].tolist() == [0, 0]
    with pytest.raises(ValueError, match="outside the output"):
        _core.read_lists([[1]], np.array([1]), np.array([-1]), offsets, out.ctypes.data, 4,
                         "q", -(2**63), 2**63 - 1)


def test_read_ints_refuses_a_list_whose_length_is_not_the_planned_one():
    out = np.zeros(3, dtype=np.int64)
    offsets = np.array([0, 2, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="sample 0 has length 3 but was planned with length 2"):
        _core.read_ints([[1, 2, 3], [4]], np.array([2, 1]), np.array([0, 1]), offsets,
                        out.ctypes.data, 3)


def test_read_lists_converts_floats_to_ints_like_torch_tensor():
    out = np.zeros(3, dtype=np.int64)
    offsets = np.array([0, 1, 2, 3], dtype=np.int64)
    _core.read_lists([[2.7, -2.7, 2**60 + 1]], np.array([3]), np.array([0]), offsets,
                     out.ctypes.data, 3, "q", -(2**63), 2**63 - 1)
    assert out.tolist() == [2, -2, 2**60 + 1]
    for bad in (float("nan"), float("inf"), 2.0**63, 256.0, -0.5):
        lo, hi = (0, 255) if bad in (256.0, -0.5) else (-(2**63), 2**63 - 1)
        with pytest.raises(OverflowError, match="sample 0, element 0"):
            _core.read_lists([[bad]], np.array([1]), np.array([0]), offsets,
                             out.ctypes.data, 3, "q", lo, hi)


def test_list_kind_reports_the_first_sample_it_cannot_read():
    assert _core.list_kind([[1, 2], [3.0]])[0] == _core.KIND_FLOAT
    assert _core.list_kind([[True], [False]])[0] == _core.KIND_BOOL
    assert _core.list_kind([[1], [1j]])[0] == _core.KIND_COMPLEX
    assert _core.list_kind([[1], [[2]], ["x"]]) == (_core.KIND_OTHER, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=20),
       st.sampled_from([1, 2, 3, 4, 8, 12, 16, 20, 64, 320]), st.integers(0, 2),
       st.booleans(), st.booleans(), st.booleans(), st.sampled_from([0, 1, 2]),
       st.integers(0, 2**32 - 1))
def test_pad_scatter_every_layout(lengths, row_bytes, extra, batch_first, left, zero, stream,
                                  seed):
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths) + extra
    srcs = [rng.integers(0, 256, size=(n, row_bytes), dtype=np.uint8) for n in lengths]
    skip = rng.random(B) < 0.2                       # address 0: only the padding is written
    ptrs = np.array([0 if k else s.ctypes.data for s, k in zip(srcs, skip)], dtype=np.int64)
    # a pattern of one element (a divisor of the row) or of the whole row, repeated
    widths = sorted({d for d in (1, 2, 4, 8, row_bytes) if row_bytes % d == 0})
    width = widths[seed % len(widths)]
    pad = None if zero else bytes(rng.integers(0, 256, size=width, dtype=np.uint8))
    out = np.full(B * T * row_bytes, 0xAB, dtype=np.uint8)
    _core.pad_scatter(ptrs, lengths, T, row_bytes, out.ctypes.data, batch_first, left, pad,
                      stream)
    view = out.reshape((B, T, row_bytes) if batch_first else (T, B, row_bytes))
    view = view if batch_first else view.transpose(1, 0, 2)
    expect_pad = (np.frombuffer(pad * (row_bytes // len(pad)), np.uint8) if pad
                  else np.zeros(row_bytes, np.uint8))
    for i, n in enumerate(lengths):
        start = T - n if left else 0
        data = view[i, start:start + n]
        np.testing.assert_array_equal(data, np.full_like(data, 0xAB) if skip[i] else srcs[i])
        padding = np.concatenate([view[i, :start], view[i, start + n:]])
        assert (padding == expect_pad).all()


def test_sort_lengths_works_on_a_private_copy_of_the_lengths():
    """The sort checks the lengths, then indexes its histogram with them without the
    GIL: they must be a snapshot, never the caller's array, which another thread may
    be writing (NumPy's own operations release the GIL)."""
    lengths = np.array([3, 1, 2], dtype=np.int64)
    assert not np.shares_memory(_core._int64_lengths(lengths), lengths)
    bs, order, inverse = _core.sort_lengths(lengths)
    assert bs.tolist() == [3, 2, 1] and order.tolist() == [0, 2, 1]


def _tensor_kinds():
    import torch
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    c = torch.randn(3, 2, dtype=torch.complex64)
    return {
        "contiguous": base,
        "transposed": base.t(),
        "sliced": base[1:, 2:5],
        "expanded": torch.zeros(1).expand(5),
        "scalar": torch.tensor(3),
        "empty": torch.empty(0, 3, dtype=torch.int16),
        "requires_grad": torch.ones(3, requires_grad=True),
        "conj": c.conj(),
        "neg": torch._neg_view(base),
        "uint8": torch.arange(7, dtype=torch.uint8),
        "offset": torch.arange(10, dtype=torch.int64)[3:],
    }


@pytest.mark.parametrize("kind", list(_tensor_kinds()))
def test_attr_reads_what_the_ordinary_attribute_reads(kind):
    import torch
    x = _tensor_kinds()[kind]
    for name in ("numel", "element_size", "is_contiguous", "is_neg", "is_conj",
                 "storage_offset", "data_ptr", "dim"):
        a = _core._Attr(torch.Tensor, name)
        assert a.direct, name       # torch's builtins: the C function is called
        assert a(x) == getattr(x, name)(), name
    for name in ("shape", "dtype", "is_cpu", "requires_grad", "ndim", "nbytes"):
        a = _core._Attr(torch.Tensor, name, False)
        assert a.direct, name
        assert a(x) == getattr(x, name), name
    st = x.untyped_storage()
    assert _core._Attr(torch.Tensor, "untyped_storage")(x).data_ptr() == st.data_ptr()
    for name in ("data_ptr", "nbytes"):
        assert _core._Attr(type(st), name)(st) == getattr(st, name)()


def test_attr_reads_python_overrides_the_ordinary_way_and_refuses_other_types():
    import torch

    class Mine(torch.Tensor):
        def numel(self):
            return -7

        @property
        def shape(self):
            return "not a size"

    x = torch.arange(3).as_subclass(Mine)
    numel, shape = _core._Attr(Mine, "numel"), _core._Attr(Mine, "shape", False)
    assert not numel.direct and not shape.direct
    assert numel(x) == -7 and shape(x) == "not a size"
    assert _core._Attr(Mine, "ndim", False).direct      # inherited builtin
    assert _core._Attr(Mine, "ndim", False)(x) == 1
    with pytest.raises(TypeError):
        _core._Attr(torch.Tensor, "numel")(x)           # not exactly a torch.Tensor
    with pytest.raises(TypeError):
        _core._Attr(torch.Tensor, "numel")(np.arange(3))
    with pytest.raises(TypeError):
        _core._Attr("torch.Tensor", "numel")
    with pytest.raises(AttributeError):
        _core._Attr(torch.Tensor, "no_such_attribute")
