"""Readers for flat corpora that exist: Arrow list columns (Hugging Face ``datasets``,
``pyarrow``) and the memory-mapped indexed datasets of fairseq and Megatron-LM
(``.idx`` + ``.bin``). Each returns a :class:`fastcollate.RaggedArray` (or a
:class:`fastcollate.ChunkedRaggedArray`) over the format's own memory, without copying
the values.

``pyarrow`` is needed only by :func:`from_arrow` (``pip install fastcollate[arrow]``),
``datasets`` only by :func:`from_hf` (``fastcollate[hf]``); the indexed-dataset reader
needs NumPy alone.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from .store import ChunkedRaggedArray, RaggedArray

__all__ = ["from_arrow", "from_hf", "read_indexed", "INDEX_MAGIC", "INDEX_DTYPES"]


# ---------------------------------------------------------------------------------------
# Arrow
# ---------------------------------------------------------------------------------------

def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:
        raise ImportError("reading Arrow arrays needs pyarrow: pip install "
                          "'fastcollate[arrow]'") from e
    return pyarrow


def _primitive_values(pa: Any, child: Any, start: int, stop: int) -> np.ndarray:
    """Elements ``start:stop`` of a primitive Arrow array as NumPy, zero-copy where
    Arrow allows it (every fixed-width type but bool)."""
    part = child.slice(start, stop - start)
    if part.null_count:
        k = int(np.flatnonzero(np.asarray(part.is_null()))[0])
        raise ValueError(f"value {start + k} of the list values is null: a store holds "
                         "numbers only (fill or drop the nulls first)")
    if not (pa.types.is_integer(part.type) or pa.types.is_floating(part.type)
            or pa.types.is_boolean(part.type)):
        raise TypeError(f"list values of Arrow type {part.type} are not supported; "
                        "expected integers, floats or booleans")
    try:
        return part.to_numpy(zero_copy_only=True)
    except pa.ArrowInvalid:          # bit-packed booleans: one copy
        return part.to_numpy(zero_copy_only=False)


def _chunk(pa: Any, arr: Any, dtype: Optional[torch.dtype], where: str) -> RaggedArray:
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise TypeError(f"{where}expected an Arrow list or large_list array, got type {t}")
    if arr.null_count:
        k = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise ValueError(f"{where}sample {k} is null: every sample must be a list "
                         "(fill or drop the null rows first)")
    # arr.offsets honours a slice (its first entry may be > 0); arr.values does not
    offsets = np.asarray(arr.offsets)
    first, last = int(offsets[0]), int(offsets[-1])
    child = arr.values
    row: Tuple[int, ...] = ()
    if pa.types.is_fixed_size_list(child.type):     # rows: list<fixed_size_list<T, k>>
        k = child.type.list_size
        if child.null_count:
            raise ValueError(f"{where}a row of the list values is null")
        row = (k,)
        inner = child.values
        base = child.offset * k
        flat = _primitive_values(pa, inner, base + first * k, base + last * k)
        values = flat.reshape((last - first,) + row)
    else:
        values = _primitive_values(pa, child, first, last)
    if first:
        offsets = offsets - first
    return RaggedArray(values, offsets.astype(np.int64, copy=False), dtype=dtype)


def from_arrow(array: Any, *, dtype: Optional[torch.dtype] = None
               ) -> Union[RaggedArray, ChunkedRaggedArray]:
    """A store over an Arrow list column, zero-copy.

    Parameters
    ----------
    array : pyarrow.ListArray, LargeListArray or ChunkedArray of them
        e.g. ``ds.data.column("input_ids")`` for a Hugging Face dataset (see also
        :func:`from_hf`), or any ``pyarrow`` list array, sliced arrays included. The
        list values must be numbers (integers, floats, booleans), optionally in rows of
        a ``fixed_size_list`` (``list<fixed_size_list<float, 80>>`` gives rows of 80).
    dtype : torch.dtype, optional
        The dtype batches are packed to (default: the values' own).

    Returns
    -------
    RaggedArray for one chunk, ChunkedRaggedArray for several (no concatenation). The
    values are views of Arrow's buffers (kept alive by the store); only the offsets are
    converted (int32 list offsets, or a sliced array's, to int64 from 0). Null samples
    or values raise ValueError naming the first.

    Examples
    --------
    >>> import pyarrow as pa, fastcollate
    >>> from fastcollate.formats import from_arrow
    >>> col = pa.array([[1, 2, 3], [4], [5, 6]]).slice(1)
    >>> store = from_arrow(col)
    >>> store.lengths.tolist(), fastcollate.pack(store[[1, 0]]).data.tolist()
    ([1, 2], [5, 4, 6])
    """
    pa = _pyarrow()
    if isinstance(array, pa.ChunkedArray):
        chunks = [c for c in array.chunks if len(c)] or list(array.chunks[:1])
        if not chunks:
            raise ValueError("the chunked array has no chunks")
        stores = [_chunk(pa, c, dtype, f"chunk {j}: ") for j, c in enumerate(chunks)]
        return stores[0] if len(stores) == 1 else ChunkedRaggedArray(stores, dtype=dtype)
    if isinstance(array, pa.Array):
        return _chunk(pa, array, dtype, "")
    raise TypeError(f"expected a pyarrow Array or ChunkedArray, got {type(array).__name__}")


def from_hf(dataset: Any, column: str, *, dtype: Optional[torch.dtype] = None
            ) -> Union[RaggedArray, ChunkedRaggedArray]:
    """A store over a column of a Hugging Face ``datasets.Dataset``, zero-copy (the
    dataset's Arrow table, memory-mapped from its cache files). A dataset with an
    indices mapping (after ``shuffle``/``select``/``filter``) is refused: its table is
    not in dataset order; call ``dataset.flatten_indices()`` first, or pass the
    indices to the sampler instead."""
    if getattr(dataset, "_indices", None) is not None:
        raise ValueError("this dataset has an indices mapping (shuffle/select/filter): "
                         "its Arrow table is not in dataset order; use "
                         "dataset.flatten_indices() first")
    names = list(dataset.column_names)
    if column not in names:
        raise KeyError(f"column {column!r} is not in the dataset's columns {names}")
    return from_arrow(dataset.data.column(column), dtype=dtype)


# ---------------------------------------------------------------------------------------
# fairseq / Megatron-LM memory-mapped indexed dataset (.idx + .bin)
# ---------------------------------------------------------------------------------------

INDEX_MAGIC = b"MMIDIDX\x00\x00"
"""The first 9 bytes of an ``.idx`` file."""

INDEX_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                6: np.float64, 7: np.float32, 8: np.uint16, 9: np.uint32, 10: np.uint64}
"""dtype codes of the ``.idx`` header (Megatron-LM's ``DType``; fairseq agrees on 1-6 and
8, its code 7 is float64 and 9/10 appear in recent versions)."""

_HEADER = struct.Struct("<9sQBQQ")      # magic, version, dtype code, sequences, documents


def _prefix(path: Union[str, os.PathLike]) -> str:
    p = os.fspath(path)
    return p[:-4] if p.endswith((".idx", ".bin")) else p


def read_indexed(path: Union[str, os.PathLike], *, dtype: Optional[torch.dtype] = None,
                 return_documents: bool = False) -> Any:
    """Open a fairseq/Megatron-LM memory-mapped indexed dataset as a store.

    The ``.idx`` file holds the header (``MMIDIDX\\x00\\x00``, version 1 as uint64, the
    dtype code as uint8, the sequence and document counts as uint64), then the sequence
    lengths (int32), their byte offsets in ``.bin`` (int64) and the document index
    (int64): the layout their ``_IndexWriter`` writes. The ``.bin`` file is
    memory-mapped; nothing is read until a batch is.

    Parameters
    ----------
    path : the common prefix (``corpus`` for ``corpus.idx``/``corpus.bin``), or either file.
    dtype : torch.dtype, optional
        The packed dtype (e.g. ``torch.int64`` for uint16 token ids).
    return_documents : bool
        Also return the document index (int64: sequence indices where each document
        starts, then the number of sequences).

    Raises
    ------
    ValueError
        A wrong magic, version or dtype code, a truncated ``.idx``, sequences that are
        not stored back to back in order, or a ``.bin`` shorter than the lengths claim.
    """
    prefix = _prefix(path)
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    for p in (idx_path, bin_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} does not exist")
    idx_size = os.path.getsize(idx_path)
    with open(idx_path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise ValueError(f"{idx_path}: {len(head)} bytes, too short for the header "
                         f"({_HEADER.size} bytes)")
    magic, version, code, n, n_docs = _HEADER.unpack(head)
    if magic != INDEX_MAGIC:
        raise ValueError(f"{idx_path} is not a memory-mapped indexed dataset: it starts "
                         f"with {magic!r}, expected {INDEX_MAGIC!r}")
    if version != 1:
        raise ValueError(f"{idx_path}: version {version}, only version 1 is known")
    if code not in INDEX_DTYPES:
        raise ValueError(f"{idx_path}: unknown dtype code {code} (known: "
                         f"{sorted(INDEX_DTYPES)})")
    vdtype = np.dtype(INDEX_DTYPES[code])
    need = _HEADER.size + 4 * n + 8 * n + 8 * n_docs
    if idx_size < need:
        raise ValueError(f"{idx_path} is truncated: {idx_size} bytes, but {n} sequences "
                         f"and {n_docs} document entries need {need}")

    def part(offset: int, count: int, t: Any) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=t)
        return np.memmap(idx_path, mode="r", dtype=t, offset=offset, shape=(count,))

    sizes = part(_HEADER.size, n, np.int32)
    pointers = part(_HEADER.size + 4 * n, n, np.int64)
    docs = part(_HEADER.size + 12 * n, n_docs, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        if int(sizes.min()) < 0:
            k = int(np.flatnonzero(sizes < 0)[0])
            raise ValueError(f"{idx_path}: sequence {k} has negative length {sizes[k]}")
        np.cumsum(sizes, dtype=np.int64, out=offsets[1:])
        bad = np.flatnonzero(pointers != offsets[:-1] * vdtype.itemsize)
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{idx_path}: sequence {k} starts at byte {pointers[k]} of "
                             f"{bin_path}, expected {offsets[k] * vdtype.itemsize}: only "
                             "sequences stored back to back, in order, are supported")
    rows = os.path.getsize(bin_path) // vdtype.itemsize
    total = int(offsets[-1])
    if total > rows:
        raise ValueError(f"{bin_path} holds {rows} values but the index claims {total} "
                         "(values shorter than the offsets claim: truncated .bin?)")
    values = (np.memmap(bin_path, mode="r", dtype=vdtype, shape=(total,)) if total
              else np.zeros(0, dtype=vdtype))
    store = RaggedArray(values, offsets, dtype=dtype)
    return (store, np.array(docs)) if return_documents else store
