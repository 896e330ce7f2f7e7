"""flatten(), pack_rows(), FlatteningCollator and PackedCollate(mode="flat"): the
flattened (varlen) layout against a plain torch.cat + cumsum reference."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import fastcollate
from fastcollate import FlatSequence, FlatteningCollator, PackedCollate, flatten, pack_rows
from fastcollate import _flat
from fastcollate.flat import plan_flat, write_flat
from strategies import batches, expected_dtype, to_tensor

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- references: simple, reliable and slow ---------------------------------------------

def reference_flat(samples, dtype=None):
    ts = [to_tensor(s) for s in samples]
    dtype = dtype or expected_dtype(samples)
    values = torch.cat([t.to(dtype).reshape((-1,) + tuple(ts[0].shape[1:])) for t in ts])
    lengths = torch.tensor([len(t) for t in ts])
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    return values, cu, int(lengths.max())


def reference_labels(values, lengths, shift, ignore=-100):
    out, pos = [], 0
    for n in lengths:
        s = values[pos:pos + n].tolist()
        pos += n
        if n:
            out += (s[1:] + [ignore]) if shift else ([ignore] + s[1:])
    return out


def reference_ffd(lengths, capacity):
    """First-fit decreasing with a list of free spaces, scanned from the first row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])    # stable
    free, bins = [], [0] * len(lengths)
    for i in order:
        for b, f in enumerate(free):
            if f >= lengths[i]:
                free[b] -= lengths[i]
                bins[i] = b
                break
        else:
            free.append(capacity - lengths[i])
            bins[i] = len(free) - 1
    return bins, [capacity - f for f in free]


# -- flatten ---------------------------------------------------------------------------

@SETTINGS
@given(batches(min_length=0), st.sampled_from([torch.int32, torch.int64]))
def test_flatten_equals_cat_and_cumsum(samples, offsets_dtype):
    if all(len(s) == 0 for s in samples):
        samples = samples + [to_tensor(samples[0])[:0].new_zeros((1,) + tuple(
            to_tensor(samples[0]).shape[1:]))]
    values, cu, longest = reference_flat(samples)
    f = flatten(samples, offsets_dtype=offsets_dtype, position_ids=True, segment_ids=True)
    assert f.values.dtype == values.dtype and torch.equal(f.values, values)
    assert f.cu_seqlens.dtype == offsets_dtype and f.cu_seqlens.tolist() == cu.tolist()
    assert type(f.max_seqlen) is int and f.max_seqlen == longest
    lengths = (cu[1:] - cu[:-1]).tolist()
    assert f.position_ids.tolist() == [t for n in lengths for t in range(n)]
    assert f.segment_ids.tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    assert [t.tolist() for t in f.unbind()] == [to_tensor(s).to(values.dtype).tolist()
                                                for s in samples]


@SETTINGS
@given(st.lists(st.lists(st.integers(-2**40, 2**40), max_size=12), min_size=1, max_size=40),
       st.sampled_from(["mask_first", "shift"]), st.integers(-1000, 0),
       st.sampled_from(["list", "ndarray", "tensor"]))
def test_labels_mask_or_shift_at_every_sample_boundary(seqs, mode, ignore, kind):
    if kind == "ndarray":
        seqs = [np.array(s, dtype=np.int64) for s in seqs]
    elif kind == "tensor":
        seqs = [torch.tensor(s, dtype=torch.int64) for s in seqs]
    f = flatten(seqs, labels=mode, ignore_index=ignore)
    lengths = [len(s) for s in seqs]
    assert f.labels.dtype == torch.int64
    assert f.labels.tolist() == reference_labels(f.values, lengths, mode == "shift", ignore)


def test_labels_of_narrow_integer_values_are_int64():
    f = flatten([np.array([1, 2], dtype=np.int16), np.array([3], dtype=np.int16)],
                labels="mask_first")
    assert f.values.dtype == torch.int16 and f.labels.dtype == torch.int64
    assert f.labels.tolist() == [-100, 2, -100]


def test_labels_of_float_values_are_refused():
    with pytest.raises(TypeError, match="integer token ids"):
        flatten([[1.5, 2.0]], labels="shift")


def test_explicit_dtype_casts_and_python_ints_infer_int64():
    assert flatten([[1, 2], [3]]).values.dtype == torch.int64
    assert flatten([[True], [False]]).values.dtype == torch.bool
    f = flatten([[1, 2], [3]], dtype=torch.float16)
    assert f.values.dtype == torch.float16 and f.values.tolist() == [1, 2, 3]


def test_zero_length_samples_repeat_an_offset():
    f = flatten([[1, 2], [], [3]], position_ids=True, labels="mask_first")
    assert f.cu_seqlens.tolist() == [0, 2, 2, 3]
    assert f.labels.tolist() == [-100, 2, -100]
    assert [t.tolist() for t in f.nested().unbind()] == [[1, 2], [], [3]]


def test_tensor_batches_do_not_alias_the_inputs():
    a, b = torch.arange(3), torch.arange(5)          # small samples: one torch.cat
    f = flatten([a, b])
    a.fill_(-1)
    assert f.values.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    big = [torch.ones(1024, 8), torch.ones(10, 8)]    # large samples: read directly
    g = flatten(big)
    big[0].zero_()
    assert bool((g.values == 1).all())


def test_rows_and_strided_or_mixed_inputs():
    x = torch.arange(24.).view(6, 4)
    samples = [x[::2], np.ascontiguousarray(x[:2].numpy()[::-1]), [[1., 2., 3., 4.]]]
    values, cu, _ = reference_flat(samples)
    f = flatten(samples)
    assert torch.equal(f.values, values) and f.cu_seqlens.tolist() == cu.tolist()


def test_autograd_flows_back_through_flatten():
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(2, 2, requires_grad=True)
    f = flatten([a, b], position_ids=True)
    (f.values * torch.arange(5.).unsqueeze(1)).sum().backward()
    assert a.grad.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert b.grad.tolist() == [[3, 3], [4, 4]]
    assert f.position_ids.tolist() == [0, 1, 2, 0, 1]


def test_autograd_labels_by_torch_ops_match_the_kernel():
    ints = [torch.tensor([4, 5, 6]), torch.tensor([7, 8])]
    for mode in ("mask_first", "shift"):
        from fastcollate.flat import _labels_by_torch
        ref = flatten(ints, labels=mode).labels
        got = _labels_by_torch(torch.cat(ints), np.array([3, 2]), mode == "shift", -100)
        assert torch.equal(got, ref)


def test_int32_offsets_overflow_is_an_error_before_anything_is_written():
    out = np.full(3, 7, dtype=np.int32)
    with pytest.raises(OverflowError, match="int64"):
        _flat.cu_seqlens(np.array([2**31 - 1, 1]), out.ctypes.data, 4)
    assert out.tolist() == [7, 7, 7]
    out64 = np.empty(3, dtype=np.int64)
    assert _flat.cu_seqlens(np.array([2**31 - 1, 1]), out64.ctypes.data, 8)[0] == 2**31


@pytest.mark.parametrize("bad, exc, match", [
    ([], ValueError, "empty batch"),
    ([[1, 2], [[3, 4]]], ValueError, "sample 1"),
    ([np.zeros((2, 3)), np.zeros((2, 4))], ValueError, "sample 1: has shape"),
    ([[1, 2], ["a"]], TypeError, "sample 1"),
    ([[1], object()], TypeError, "sample 1"),
    (np.zeros((2, 3)), TypeError, "list or tuple"),
])
def test_bad_batches_raise_like_pack(bad, exc, match):
    with pytest.raises(exc, match=match):
        flatten(bad)


def test_python_int_too_large_for_the_dtype():
    with pytest.raises(OverflowError, match="sample 1"):
        flatten([[1], [300]], dtype=torch.uint8)


@pytest.mark.parametrize("opts, exc", [
    (dict(offsets_dtype=torch.float32), TypeError),
    (dict(labels="next"), ValueError),
    (dict(ignore_index=1.5), TypeError),
    (dict(position_ids="yes"), TypeError),
    (dict(nested=True, position_ids=True), ValueError),
])
def test_bad_options_are_refused(opts, exc):
    with pytest.raises(exc):
        flatten([[1, 2]], **opts)


def test_write_flat_refuses_a_list_changed_since_planning():
    seqs = [[1.5, 2.5], [3.5]]
    plan = plan_flat(seqs)
    seqs[0].append(4.5)
    with pytest.raises(ValueError, match="sample 0 has length 3 but was planned"):
        write_flat(plan, torch.empty(3, dtype=plan.dtype))


def test_write_flat_checks_out():
    plan = plan_flat([np.arange(3), np.arange(2)])
    with pytest.raises(ValueError, match="out must be"):
        write_flat(plan, torch.empty(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="output holds 4"):
        write_flat(plan, torch.empty(4, dtype=torch.int64))


def test_concat_kernel_checks_every_destination():
    src = np.arange(4, dtype=np.int64)
    out = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="sample 1"):
        _flat.concat([src.ctypes.data] * 2, [2, 2], 8, out.ctypes.data, 4, starts=[0, 3])
    with pytest.raises(ValueError, match="sample 0"):
        _flat.concat([src.ctypes.data], [2], 8, out.ctypes.data, 4, starts=[-1])
    with pytest.raises(ValueError, match="negative"):
        _flat.concat([src.ctypes.data], [-2], 8, out.ctypes.data, 4)
    assert out.tolist() == [0, 0, 0, 0]
    _flat.concat([src.ctypes.data, src.ctypes.data + 16], [2, 2], 8, out.ctypes.data, 4,
                 stream=1)
    assert out.tolist() == [0, 1, 2, 3]


def test_large_outputs_take_streaming_stores_and_stay_exact():
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((n, 80)).astype(np.float32) for n in (900, 1300, 7)]
    f = flatten(samples)            # > 1 MiB: non-temporal stores
    assert np.array_equal(f.values.numpy(), np.concatenate(samples))


def test_pin_memory_when_available():
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA")
    f = flatten([[1, 2], [3]], position_ids=True, pin_memory=True)
    assert f.values.is_pinned() and f.cu_seqlens.is_pinned() and f.position_ids.is_pinned()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_give_cuda_offsets_and_a_python_max_seqlen():
    f = flatten([torch.arange(3, device="cuda"), torch.arange(2, device="cuda")],
                position_ids=True, labels="shift")
    assert f.values.is_cuda and f.cu_seqlens.is_cuda and f.labels.is_cuda
    assert f.max_seqlen == 3 and f.labels.tolist() == [1, 2, -100, 1, -100]


def test_to_device_keeps_a_flat_sequence_and_its_python_max_seqlen():
    f = flatten([[1, 2], [3]], position_ids=True)
    moved = fastcollate.to_device(f, "cpu")
    assert isinstance(moved, FlatSequence) and type(moved.max_seqlen) is int
    assert moved.values.tolist() == [1, 2, 3] and moved.segment_ids is None


# -- torch.nested and attention ----------------------------------------------------------

def test_nested_is_zero_copy_and_unbinds_to_the_samples():
    samples = [torch.randn(n, 4) for n in (3, 1, 5)]
    f = flatten(samples)
    nt = f.nested()
    assert nt.is_nested and nt.values().data_ptr() == f.values.data_ptr()
    assert nt.offsets().data_ptr() == f.cu_seqlens.data_ptr()
    assert all(torch.equal(a, b) for a, b in zip(nt.unbind(), samples))
    direct = flatten(samples, nested=True)
    assert all(torch.equal(a, b) for a, b in zip(direct.unbind(), samples))


def _attend_alone(x, causal):               # x: (L, H, D)
    q = x.transpose(0, 1)
    return F.scaled_dot_product_attention(q, q, q, is_causal=causal).transpose(0, 1)


def test_sdpa_over_the_jagged_tensor_equals_each_sample_alone():
    torch.manual_seed(0)
    samples = [torch.randn(n, 2, 8) for n in (5, 1, 9, 3)]
    nt = flatten(samples).nested().transpose(1, 2)          # (B, H, j, D)
    with warnings.catch_warnings():     # (jagged SDPA takes no is_causal on the CPU)
        warnings.simplefilter("ignore")
        out = F.scaled_dot_product_attention(nt, nt, nt).transpose(1, 2)
    for got, x in zip(out.unbind(), samples):
        assert torch.allclose(got, _attend_alone(x, False), atol=1e-5)


def test_sdpa_with_a_block_diagonal_mask_from_cu_seqlens_equals_each_sample_alone():
    torch.manual_seed(1)
    samples = [torch.randn(n, 2, 8) for n in (4, 7, 2)]
    f = flatten(samples, segment_ids=True, position_ids=True)
    seg, pos = f.segment_ids, f.position_ids
    mask = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])   # causal
    q = f.values.transpose(0, 1).unsqueeze(0)                   # (1, H, total, D)
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)[0].transpose(0, 1)
    cu = f.cu_seqlens.tolist()
    for i, x in enumerate(samples):
        assert torch.allclose(out[cu[i]:cu[i + 1]], _attend_alone(x, True), atol=1e-5)


# -- pack_rows ---------------------------------------------------------------------------

@SETTINGS
@given(st.lists(st.integers(0, 20), min_size=1, max_size=60), st.integers(20, 48))
def test_first_fit_decreasing_equals_the_reference(lengths, capacity):
    bins, used = _flat.first_fit_decreasing(lengths, capacity)
    ref_bins, ref_used = reference_ffd(lengths, capacity)
    assert bins.tolist() == ref_bins and used.tolist() == ref_used


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 99), max_size=16), min_size=1, max_size=40),
       st.integers(16, 40), st.sampled_from(["list", "ndarray", "tensor"]))
def test_pack_rows_places_every_sample_whole(seqs, max_length, kind):
    if kind == "ndarray":
        samples = [np.array(s, dtype=np.int64) for s in seqs]
    elif kind == "tensor":
        samples = [torch.tensor(s, dtype=torch.int64) for s in seqs]
    else:
        samples = seqs
    r = pack_rows(samples, max_length, padding_value=-1)
    R = r.values.shape[0]
    assert r.values.shape == (R, max_length)
    assert sorted(i for row in r.rows for i in row) == list(range(len(seqs)))
    seg = r.segment_ids
    for row_index, row in enumerate(r.rows):
        assert row == sorted(row)                       # input order inside a row
        pos = 0
        for i in row:
            n = len(seqs[i])
            assert r.values[row_index, pos:pos + n].tolist() == list(seqs[i])
            assert r.position_ids[row_index, pos:pos + n].tolist() == list(range(n))
            assert seg[row_index, pos:pos + n].tolist() == [i] * n
            pos += n
        assert r.values[row_index, pos:].tolist() == [-1] * (max_length - pos)
        assert seg[row_index, pos:].tolist() == [-1] * (max_length - pos)
    # cu_seqlens: over the flattened rows, one segment per sample or padding tail
    cu = r.cu_seqlens.tolist()
    assert cu[0] == 0 and cu[-1] == R * max_length
    flat_seg = seg.view(-1).tolist()
    for a, b in zip(cu, cu[1:]):
        assert b > a and len(set(flat_seg[a:b])) == 1
        assert r.position_ids.view(-1)[a:b].tolist() == list(range(b - a))
    assert r.max_seqlen == max(b - a for a, b in zip(cu, cu[1:]))
    splits = r.row_splits.tolist()
    assert splits[0] == 0 and splits[-1] == len(cu) - 1
    assert all(cu[splits[k]] == k * max_length for k in range(R))
    assert r.efficiency == pytest.approx(sum(map(len, seqs)) / (R * max_length))


def test_pack_rows_efficiency_beats_one_sample_per_row():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.3, 0.8, 512), 1, 256).astype(int)
    r = pack_rows([np.zeros(n, dtype=np.int64) for n in lengths], 256)
    assert r.efficiency > 0.95
    assert r.efficiency > lengths.sum() / (len(lengths) * 256)


def test_pack_rows_with_feature_rows_and_float_padding():
    samples = [torch.ones(3, 2), torch.full((2, 2), 2.)]
    r = pack_rows(samples, 4, padding_value=0.5)
    assert r.values.shape == (2, 4, 2) and r.rows == [[0], [1]]
    assert r.values[1].tolist() == [[2, 2], [2, 2], [0.5, 0.5], [0.5, 0.5]]


def test_pack_rows_of_float_lists_cast_keep_the_padding():
    r = pack_rows([[1.5, 2.5], [3.5]], 2, padding_value=-1, dtype=torch.float16)
    assert r.values.dtype == torch.float16
    assert r.values.tolist() == [[1.5, 2.5], [3.5, -1.0]]


def test_pack_rows_backpropagates():
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    r = pack_rows([a, b], 4)
    (r.values * torch.arange(8.).view(2, 4)).sum().backward()
    assert r.rows == [[1], [0]]
    assert b.grad.tolist() == [0, 1, 2] and a.grad.tolist() == [4, 5]


def test_pack_rows_errors():
    with pytest.raises(ValueError, match="sample 1 has length 5, longer than max_length 4"):
        pack_rows([[1], [1, 2, 3, 4, 5]], 4)
    with pytest.raises(ValueError, match="max_length"):
        pack_rows([[1]], 0)
    with pytest.raises(TypeError, match="max_length"):
        pack_rows([[1]], 2.0)
    with pytest.raises(OverflowError, match="padding_value"):
        pack_rows([[1]], 2, padding_value=-1, dtype=torch.uint8)


# -- Hugging Face's DataCollatorWithFlattening ---------------------------------------------

def _tokenized_features():
    """Features from a tokenizer built here (no download): a word-level vocabulary."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    texts = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog",
             "hello", "flash attention takes cu seqlens and max seqlen"]
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, tokenizers.trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "[PAD]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                pad_token="[PAD]")
    return [{"input_ids": fast(t)["input_ids"]} for t in texts]


def _hf_options():
    return [dict(), dict(return_flash_attn_kwargs=True, return_seq_idx=True),
            dict(return_position_ids=False, separator_id=-1),
            dict(position_ids_start=2, return_flash_attn_kwargs=True)]


def _assert_same_batch(ours, ref):
    assert list(ours) == list(ref)
    for k in ref:
        a, b = ours[k], ref[k]
        if isinstance(b, int):
            assert type(a) is int and a == b, k
        elif isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype, k
            assert np.array_equal(a, b), k
        else:
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), k


@pytest.mark.parametrize("options", _hf_options())
def test_equal_to_data_collator_with_flattening_on_tokenized_features(options):
    transformers = pytest.importorskip("transformers")
    features = _tokenized_features()
    ref = transformers.DataCollatorWithFlattening(**options)(features)
    _assert_same_batch(FlatteningCollator(**options)(features), ref)


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 50000), max_size=20), min_size=1, max_size=30),
       st.booleans(), st.sampled_from(["list", "ndarray", "tensor"]),
       st.sampled_from(range(len(_hf_options()))), st.sampled_from(["pt", "np"]))
def test_equal_to_data_collator_with_flattening_on_random_features(
        seqs, with_labels, kind, which, tensors):
    transformers = pytest.importorskip("transformers")
    if all(len(s) == 0 for s in seqs):
        seqs = seqs + [[1]]
    conv = {"list": list, "ndarray": lambda s: np.array(s, dtype=np.int64),
            "tensor": lambda s: torch.tensor(s, dtype=torch.int64)}[kind]
    features = [{"input_ids": conv(s)} for s in seqs]
    if with_labels:
        for f, s in zip(features, seqs):
            f["labels"] = conv([v + 1 for v in s])
    options = dict(_hf_options()[which], return_tensors=tensors)
    ref = transformers.DataCollatorWithFlattening(**options)(features)
    _assert_same_batch(FlatteningCollator(**options)(features), ref)


def test_flattening_collator_errors():
    with pytest.raises(ValueError, match="every example is empty"):
        FlatteningCollator()([{"input_ids": []}])
    with pytest.raises(ValueError, match="sample 1: labels has length 1"):
        FlatteningCollator()([{"input_ids": [1], "labels": [1]},
                              {"input_ids": [2, 3], "labels": [4]}])
    with pytest.raises(ValueError, match="return_tensors"):
        FlatteningCollator(return_tensors="tf")


# -- PackedCollate(mode="flat") ------------------------------------------------------------

def test_collate_flat_mode_gives_a_flat_sequence_per_ragged_field():
    collate = PackedCollate(mode="flat", lengths=True,
                            flat={"x": {"position_ids": True, "labels": "shift"}})
    batch = collate([{"x": [1, 2, 3], "y": np.array([1., 2.]), "id": 7},
                     {"x": [4], "y": np.array([3.]), "id": 8}])
    x, y = batch["x"], batch["y"]
    assert isinstance(x, FlatSequence) and isinstance(y, FlatSequence)
    assert x.values.tolist() == [1, 2, 3, 4] and x.cu_seqlens.tolist() == [0, 3, 4]
    assert x.position_ids.tolist() == [0, 1, 2, 0] and x.labels.tolist() == [2, 3, -100, -100]
    assert y.values.tolist() == [1., 2., 3.] and y.max_seqlen == 2
    assert y.position_ids is None and y.labels is None
    with pytest.raises(TypeError, match="integer token ids"):
        PackedCollate(mode="flat", flat={"labels": "shift"})([{"y": [1.5]}])
    with pytest.raises(KeyError, match="'z'"):
        PackedCollate(mode="flat", flat={"z": {"labels": "shift"}})([{"y": [1]}])
    assert batch["id"].tolist() == [7, 8] and batch["x_lengths"].tolist() == [3, 1]


def test_collate_flat_mode_writes_one_shared_block():
    collate = PackedCollate(mode="flat", shared_memory=True,
                            flat={"segment_ids": True, "offsets_dtype": torch.int64})
    (x, labels) = collate([(np.arange(3), 0), (np.arange(2), 1)])
    storages = {t.untyped_storage().data_ptr() for t in (x.values, x.cu_seqlens,
                                                         x.segment_ids, labels)}
    assert len(storages) == 1 and x.values.is_shared()
    assert x.cu_seqlens.dtype == torch.int64 and x.segment_ids.tolist() == [0, 0, 0, 1, 1]


def test_collate_flat_mode_nested_and_bad_options():
    nt, = PackedCollate(mode="flat", flat={"nested": True})([([1, 2],), ([3],)])
    assert [t.tolist() for t in nt.unbind()] == [[1, 2], [3]]
    with pytest.raises(ValueError, match="mode='flat'"):
        PackedCollate(flat={"position_ids": True})
    with pytest.raises(TypeError, match="unknown flat options"):
        PackedCollate(mode="flat", flat={"positions": True})
    with pytest.raises(TypeError, match="field 'x'"):
        PackedCollate(mode="flat")([{"x": [1]}, {"x": ["a"]}])


class _Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"input_ids": list(range(1, i % 5 + 2)), "label": i}


def test_collate_flat_mode_in_dataloader_workers_equals_main_process():
    collate = PackedCollate(mode="flat", flat={"position_ids": True})
    main = list(DataLoader(_Tokens(), batch_size=4, collate_fn=collate))
    workers = list(DataLoader(_Tokens(), batch_size=4, collate_fn=collate, num_workers=2))
    assert len(main) == len(workers) == 3
    for a, b in zip(main, workers):
        for name in ("values", "cu_seqlens", "position_ids"):
            assert torch.equal(getattr(a["input_ids"], name), getattr(b["input_ids"], name))
        assert a["input_ids"].max_seqlen == b["input_ids"].max_seqlen
        assert torch.equal(a["label"], b["label"])


@pytest.mark.parametrize("kind", ["numpy", "tensor", "big tensor"])
@pytest.mark.parametrize("src,dst", [(torch.uint8, torch.int16), (torch.int32, torch.int64),
                                     (torch.float32, torch.float64)])
def test_flatten_converts_inside_the_copy_like_torch_cat_then_to(kind, src, dst):
    """Samples of another dtype than ``dtype=`` (converted inside the copy) come out
    converted, at their place, with the pack_rows padding left alone."""
    n = 3000 if kind == "big tensor" else 5
    samples = [torch.arange(n, dtype=src) % 100, torch.arange(2, dtype=src) + 7]
    if kind == "numpy":
        samples = [s.numpy() for s in samples]
    f = fastcollate.flatten(samples, dtype=dst)
    expected = torch.cat([torch.as_tensor(s) for s in samples]).to(dst)
    assert f.values.dtype == dst and torch.equal(f.values, expected)
    rows = fastcollate.pack_rows(samples, n + 2, dtype=dst, padding_value=-1)
    assert torch.equal(rows.values.flatten()[:n + 2], expected)
