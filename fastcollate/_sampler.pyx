# cython: language_level=3
"""Epoch-building kernel of :class:`fastcollate.sampler.BucketBatchSampler`.

One function, :func:`build_epoch`: stable-sort every chunk of ``bucket_size``
consecutive samples of a given order by length (descending), then cut each chunk
greedily into batches under a sample-count limit and/or a padded-token budget.
The result is a flat ``int64`` index array plus ``int64`` batch offsets
(batch ``b`` is ``idx[off[b]:off[b + 1]]``), so Python only slices at iteration time.

This module does not import torch. The Python layer (:mod:`fastcollate.sampler`)
validates input, draws the permutation (NumPy), shuffles the batch order and splits
batches across ranks; the loops here run without the GIL and check only what they need
to stay memory-safe (index and key ranges), raising instead of crashing.

The sort is a two-pass LSD counting sort over the whole order, O(m + nkeys + chunks):
pass 1 orders positions by key, descending, stably; pass 2 moves them, stably, into
their chunk. The result equals a stable descending sort of each chunk on its own.
"""
from libc.stdint cimport int64_t

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef Py_ssize_t _check_and_count(const int64_t[::1] order, const int64_t[::1] keys,
                                 Py_ssize_t nkeys, int64_t[::1] count,
                                 bint with_keys) noexcept nogil:
    """Return -1 if every ``order[p]`` indexes ``keys`` and its key is in
    ``[0, nkeys)``, else the first bad position. Counts keys into ``count`` when
    ``with_keys``."""
    cdef Py_ssize_t p, m = order.shape[0], n = keys.shape[0]
    cdef int64_t i, k
    for p in range(m):
        i = order[p]
        if i < 0 or i >= n:
            return p
        if with_keys:
            k = keys[i]
            if k < 0 or k >= nkeys:
                return p
            count[k] += 1
    return -1


cdef void _sort_chunks(const int64_t[::1] order, const int64_t[::1] keys,
                       Py_ssize_t bucket, int64_t[::1] count, int64_t[::1] pos,
                       int64_t[::1] cptr, int64_t[::1] out) noexcept nogil:
    """Stable descending sort of every chunk of ``order`` by ``keys[order[p]]``.

    ``count`` holds the key histogram on entry (from :func:`_check_and_count`)."""
    cdef Py_ssize_t p, c, m = order.shape[0], nkeys = count.shape[0]
    cdef int64_t run = 0, cnt, k
    # Pass 1: start of each key's run, largest key first; scatter positions.
    for c in range(nkeys - 1, -1, -1):
        cnt = count[c]
        count[c] = run
        run += cnt
    for p in range(m):
        k = keys[order[p]]
        pos[count[k]] = p
        count[k] += 1
    # Pass 2: stable scatter into chunks (chunk c starts at c * bucket).
    for c in range(cptr.shape[0]):
        cptr[c] = c * bucket
    for p in range(m):
        c = pos[p] // bucket
        out[cptr[c]] = order[pos[p]]
        cptr[c] += 1


cdef Py_ssize_t _cut(const int64_t[::1] idx, const int64_t[::1] lengths, Py_ssize_t bucket,
                     int64_t batch_size, int64_t max_tokens, int64_t[::1] off) noexcept nogil:
    """Greedy cut of every chunk of ``idx``; writes ``off[0..nb]``, returns ``nb``.

    A batch is closed before sample ``j`` when adding it would make the batch hold more
    than ``batch_size`` samples (if ``batch_size > 0``) or make ``count * max_len``
    exceed ``max_tokens`` (if ``max_tokens > 0``). A batch never spans two chunks and
    never is empty. The caller guarantees ``count * max_len`` fits in int64."""
    cdef Py_ssize_t s = 0, e, j, m = idx.shape[0], nb = 0
    cdef int64_t cnt, mx, nm, ln
    off[0] = 0
    while s < m:
        e = s + bucket if m - s > bucket else m
        cnt = 0
        mx = 0
        for j in range(s, e):
            ln = lengths[idx[j]]
            nm = ln if ln > mx else mx
            if cnt > 0 and ((batch_size > 0 and cnt >= batch_size)
                            or (max_tokens > 0 and (cnt + 1) * nm > max_tokens)):
                nb += 1
                off[nb] = j
                cnt = 0
                nm = ln
            cnt += 1
            mx = nm
        nb += 1
        off[nb] = e
        s = e
    return nb


def build_epoch(order, lengths, keys, Py_ssize_t nkeys, Py_ssize_t bucket_size,
                int64_t batch_size, int64_t max_tokens, bint sort=True):
    """Sort each chunk of ``order`` by length (descending, stable) and cut batches.

    Parameters
    ----------
    order : int64 ndarray, C-contiguous
        Sample indices in epoch order (already permuted by the caller).
    lengths : int64 ndarray, C-contiguous
        Per-sample lengths, indexed by the values of ``order``.
    keys : int64 ndarray, C-contiguous
        Sort keys, indexed like ``lengths``, in ``[0, nkeys)``, ordered as the lengths
        (the lengths themselves when small, else their dense ranks).
    nkeys : int
        Number of distinct key values the histogram must hold.
    bucket_size : int
        Chunk size; chunk ``c`` is ``order[c * bucket_size:(c + 1) * bucket_size]``.
    batch_size, max_tokens : int
        Limits; ``0`` means no limit of that kind.
    sort : bool
        ``False`` skips the sort and cuts ``order`` as given (random batching, for
        comparison).

    Returns
    -------
    idx : int64 ndarray, shape (m,)
    offsets : int64 ndarray, shape (nb + 1,)
        Batch ``b`` is ``idx[offsets[b]:offsets[b + 1]]``.

    Examples
    --------
    >>> import numpy as np
    >>> L = np.array([3, 1, 2, 5], dtype=np.int64)
    >>> idx, off = build_epoch(np.arange(4), L, L, 6, 4, 2, 0)
    >>> idx.tolist(), off.tolist()
    ([3, 0, 2, 1], [0, 2, 4])
    """
    cdef const int64_t[::1] o = np.ascontiguousarray(order, dtype=np.int64)
    cdef const int64_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef const int64_t[::1] ky = np.ascontiguousarray(keys, dtype=np.int64)
    cdef Py_ssize_t m = o.shape[0], nchunks, bad, nb
    if ky.shape[0] != ln.shape[0]:
        raise ValueError(f"keys has {ky.shape[0]} entries, lengths {ln.shape[0]}")
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    if nkeys < 1:
        raise ValueError(f"nkeys must be >= 1, got {nkeys}")
    if batch_size < 0 or max_tokens < 0:
        raise ValueError("batch_size and max_tokens must be >= 0 (0: no limit)")
    nchunks = (m + bucket_size - 1) // bucket_size
    idx_arr = np.empty(m, dtype=np.int64)
    off_arr = np.empty(m + 1, dtype=np.int64)
    cdef int64_t[::1] out = idx_arr, off = off_arr
    cdef int64_t[::1] count = np.zeros(nkeys if sort else 0, dtype=np.int64)
    cdef int64_t[::1] pos = np.empty(m if sort else 0, dtype=np.int64)
    cdef int64_t[::1] cptr = np.empty(nchunks if sort else 0, dtype=np.int64)
    with nogil:
        bad = _check_and_count(o, ky, nkeys, count, sort)
    if bad >= 0:
        i = o[bad]
        if i < 0 or i >= ln.shape[0]:
            raise IndexError(f"order[{bad}] = {i} is out of range for {ln.shape[0]} samples")
        raise ValueError(f"keys[{i}] = {ky[i]} is out of range [0, {nkeys})")
    with nogil:
        if sort:
            _sort_chunks(o, ky, bucket_size, count, pos, cptr, out)
        else:
            out[:] = o
        nb = _cut(out, ln, bucket_size, batch_size, max_tokens, off)
    return idx_arr, off_arr[:nb + 1].copy()
