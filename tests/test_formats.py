"""Readers for existing corpora: Arrow list arrays (pyarrow, Hugging Face datasets) and
the fairseq/Megatron-LM memory-mapped indexed dataset (.idx + .bin)."""
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fastcollate import ChunkedRaggedArray, RaggedArray, pack, pad
from fastcollate.formats import INDEX_MAGIC, from_arrow, from_hf, read_indexed


def _same_packed(a, b):
    assert a.data.dtype == b.data.dtype and torch.equal(a.data, b.data)
    assert torch.equal(a.batch_sizes, b.batch_sizes)
    assert torch.equal(a.sorted_indices, b.sorted_indices)


# -- Arrow ------------------------------------------------------------------------------

ARROW_TYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float32",
               "float64"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_arrow_store_packs_like_the_python_lists(data):
    pa = pytest.importorskip("pyarrow")
    type_name = data.draw(st.sampled_from(ARROW_TYPES))
    large = data.draw(st.booleans())
    n_chunks = data.draw(st.integers(1, 3))
    rows = []
    chunks = []
    for _ in range(n_chunks):
        lists = data.draw(st.lists(st.lists(st.integers(0, 100), min_size=1, max_size=8),
                                   min_size=2, max_size=10))
        typ = (pa.large_list if large else pa.list_)(getattr(pa, type_name)())
        arr = pa.array(lists, type=typ)
        start = data.draw(st.integers(0, len(lists) - 1))           # sliced arrays
        stop = data.draw(st.integers(start + 1, len(lists)))
        arr = arr.slice(start, stop - start)
        chunks.append(arr)
        rows += lists[start:stop]
    column = pa.chunked_array(chunks) if n_chunks > 1 or data.draw(st.booleans()) else chunks[0]
    target = data.draw(st.sampled_from([None, torch.int64]))
    store = from_arrow(column, dtype=target)
    assert len(store) == len(rows)
    assert store.lengths.tolist() == [len(r) for r in rows]
    idx = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=12))
    np_type = np.dtype(type_name)
    ref = [np.array(rows[i], dtype=np_type) for i in idx]
    _same_packed(pack(store[idx]), pack(ref, dtype=target))
    assert torch.equal(pad(store[idx]), pad(ref, dtype=target))


def test_arrow_values_are_not_copied():
    pa = pytest.importorskip("pyarrow")
    arr = pa.array([[1, 2, 3], [4], [5, 6]], type=pa.list_(pa.uint16())).slice(1)
    store = from_arrow(arr)
    child = arr.values
    data_address = child.buffers()[1].address + (child.offset + 3) * 2
    assert store.values.ctypes.data == data_address
    assert store.offsets.tolist() == [0, 1, 3]
    del arr, child                         # the store keeps Arrow's buffer alive
    assert pack(store[[1, 0]], dtype=torch.int64).data.tolist() == [5, 4, 6]


def test_arrow_chunked_array_stays_in_chunks():
    pa = pytest.importorskip("pyarrow")
    col = pa.chunked_array([pa.array([[1, 2], [3]]), pa.array([[4, 5, 6]])])
    store = from_arrow(col)
    assert isinstance(store, ChunkedRaggedArray) and len(store.chunks) == 2
    assert store[2].tolist() == [4, 5, 6] and store.lengths.tolist() == [2, 1, 3]
    assert pack(store[[2, 0]]).data.tolist() == [4, 1, 5, 2, 6]
    with pytest.raises(IndexError, match="out of range"):
        store[[3]]


def test_arrow_rows_from_fixed_size_lists():
    pa = pytest.importorskip("pyarrow")
    typ = pa.list_(pa.list_(pa.float32(), 2))
    arr = pa.array([[[0, 1]], [[2, 3], [4, 5]], [[6, 7]]], type=typ).slice(1)
    store = from_arrow(arr)
    assert store.row == (2,) and store[0].tolist() == [[2, 3], [4, 5]]
    assert pack(store[[0, 1]]).data.shape == (3, 2)


def test_arrow_nulls_and_wrong_types_are_refused():
    pa = pytest.importorskip("pyarrow")
    with pytest.raises(ValueError, match="sample 1 is null"):
        from_arrow(pa.array([[1], None, [2]]))
    with pytest.raises(ValueError, match="value 1 of the list values is null"):
        from_arrow(pa.array([[1, None], [2]]))
    with pytest.raises(TypeError, match="list or large_list"):
        from_arrow(pa.array([1, 2, 3]))
    with pytest.raises(TypeError, match="not supported"):
        from_arrow(pa.array([["a"], ["b"]]))
    with pytest.raises(TypeError, match="pyarrow Array"):
        from_arrow([[1, 2]])


def test_hugging_face_dataset_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4], [5, 6]] * 50,
                                     "label": [0, 1, 2] * 50})
    ds.save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))      # memory-mapped Arrow
    store = from_hf(ds, "input_ids", dtype=torch.int64)
    assert len(store) == 150
    idx = [0, 4, 2]
    ref = [torch.tensor(ds[i]["input_ids"]) for i in idx]
    _same_packed(pack(store[idx]), pack(ref))
    with pytest.raises(ValueError, match="flatten_indices"):
        from_hf(ds.shuffle(seed=0), "input_ids")
    with pytest.raises(KeyError, match="not in the dataset"):
        from_hf(ds, "tokens")


# -- fairseq / Megatron-LM indexed dataset --------------------------------------------

CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6,
         np.float32: 7, np.uint16: 8}


def write_megatron(prefix, sequences, dtype, documents=None, *, version=1, code=None,
                   magic=INDEX_MAGIC):
    """An indexed dataset laid out exactly as Megatron-LM's _IndexWriter writes it:
    header, version <Q, dtype code <B, sequence count <Q, document count <Q, lengths
    int32, byte pointers int64, document indices int64; the tokens back to back in .bin."""
    itemsize = np.dtype(dtype).itemsize
    with open(f"{prefix}.bin", "wb") as f:
        for s in sequences:
            f.write(np.asarray(s, dtype=dtype).tobytes(order="C"))
    lengths = [len(s) for s in sequences]
    pointers, ptr = [], 0
    for n in lengths:
        pointers.append(ptr)
        ptr += n * itemsize
    documents = list(range(len(sequences) + 1)) if documents is None else documents
    with open(f"{prefix}.idx", "wb") as f:
        f.write(magic)
        f.write(struct.pack("<Q", version))
        f.write(struct.pack("<B", CODES[dtype] if code is None else code))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(documents)))
        f.write(np.array(lengths, dtype=np.int32).tobytes(order="C"))
        f.write(np.array(pointers, dtype=np.int64).tobytes(order="C"))
        f.write(np.array(documents, dtype=np.int64).tobytes(order="C"))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_megatron_indexed_dataset_reads_as_written(tmp_path, dtype):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 120, rng.integers(1, 30)) for _ in range(57)]
    write_megatron(tmp_path / "corpus_text_document", seqs, dtype, documents=[0, 20, 57])
    store, docs = read_indexed(tmp_path / "corpus_text_document", dtype=torch.int64,
                               return_documents=True)
    assert isinstance(store.values, np.memmap) and store.values.dtype == dtype
    assert docs.tolist() == [0, 20, 57]
    assert [s.tolist() for s in store] == [s.tolist() for s in seqs]
    idx = [56, 0, 3, 3]
    _same_packed(pack(store[idx]), pack([torch.from_numpy(seqs[i]) for i in idx]))
    assert len(read_indexed(str(tmp_path / "corpus_text_document.idx"))) == 57


def test_empty_indexed_dataset(tmp_path):
    write_megatron(tmp_path / "e", [], np.uint16)
    assert len(read_indexed(tmp_path / "e")) == 0


@pytest.mark.parametrize("change, match", [
    (dict(magic=b"TNTIDX\x00\x00\x00"), "not a memory-mapped indexed dataset"),
    (dict(version=2), "version 2"),
    (dict(code=42), "unknown dtype code 42"),
])
def test_bad_index_headers_are_named(tmp_path, change, match):
    write_megatron(tmp_path / "c", [[1, 2], [3]], np.uint16, **change)
    with pytest.raises(ValueError, match=match):
        read_indexed(tmp_path / "c")


def test_truncated_and_out_of_order_files_are_refused(tmp_path):
    write_megatron(tmp_path / "c", [[1, 2], [3, 4, 5]], np.uint16)
    idx = (tmp_path / "c.idx").read_bytes()
    (tmp_path / "c.idx").write_bytes(idx[:-9])
    with pytest.raises(ValueError, match="truncated"):
        read_indexed(tmp_path / "c")
    (tmp_path / "c.idx").write_bytes(idx[:20])
    with pytest.raises(ValueError, match="too short for the header"):
        read_indexed(tmp_path / "c")
    (tmp_path / "c.idx").write_bytes(idx)
    (tmp_path / "c.bin").write_bytes((tmp_path / "c.bin").read_bytes()[:-2])
    with pytest.raises(ValueError, match="shorter than the offsets claim"):
        read_indexed(tmp_path / "c")
    head = 34 + 2 * 4
    swapped = idx[:head] + struct.pack("<qq", 6, 0) + idx[head + 16:]
    (tmp_path / "c.idx").write_bytes(swapped)
    with pytest.raises(ValueError, match="back to back"):
        read_indexed(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        read_indexed(tmp_path / "missing")
