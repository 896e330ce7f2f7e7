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
to stay memory-safe and correct (index and length ranges), raising instead of crashing.

Per chunk, the sort is an LSD radix sort on the lengths themselves (descending, stable:
ties keep chunk order), with digits of at most 11 bits sized to the chunk, so its
buffers stay in cache: one random read per sample (its length), everything else
sequential. A global sort of 10M samples thrashes the cache and is 10x slower.
"""
from libc.stdint cimport int64_t, uint64_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef int MAX_DIGIT_BITS = 11


cdef Py_ssize_t _gather(const int64_t[::1] order, const int64_t[::1] lengths,
                        Py_ssize_t s, Py_ssize_t e, int64_t max_length,
                        int64_t* ia, int64_t* ka) noexcept nogil:
    """Copy ``order[s:e]`` to ``ia`` and their lengths to ``ka``; return -1, or the
    first position whose index or length is out of range."""
    cdef Py_ssize_t p, n = lengths.shape[0]
    cdef int64_t i, k
    for p in range(s, e):
        i = order[p]
        if i < 0 or i >= n:
            return p
        k = lengths[i]
        if k < 0 or k > max_length:
            return p
        ia[p - s] = i
        ka[p - s] = k
    return -1


cdef void _radix_desc(Py_ssize_t c, int passes, int bits, int64_t** ia, int64_t** ka,
                      int64_t** ib, int64_t** kb, int64_t* hist) noexcept nogil:
    """Stable LSD radix sort of ``(ka, ia)[:c]`` by key, descending. Swaps the buffer
    pointers so that the result is in ``*ia``/``*ka``."""
    cdef Py_ssize_t q, nb = (<Py_ssize_t> 1) << bits
    cdef uint64_t mask = (<uint64_t> nb) - 1
    cdef int d, shift
    cdef int64_t run, cnt, dg
    cdef int64_t* t
    for d in range(passes):
        shift = d * bits
        for q in range(nb):
            hist[q] = 0
        for q in range(c):
            hist[((<uint64_t> ka[0][q]) >> shift) & mask] += 1
        dg = <int64_t> (((<uint64_t> ka[0][0]) >> shift) & mask)
        if hist[dg] == c:        # every key shares this digit: nothing moves
            continue
        run = 0
        for q in range(nb - 1, -1, -1):
            cnt = hist[q]
            hist[q] = run
            run += cnt
        for q in range(c):
            dg = <int64_t> (((<uint64_t> ka[0][q]) >> shift) & mask)
            kb[0][hist[dg]] = ka[0][q]
            ib[0][hist[dg]] = ia[0][q]
            hist[dg] += 1
        t = ka[0]; ka[0] = kb[0]; kb[0] = t
        t = ia[0]; ia[0] = ib[0]; ib[0] = t


cdef Py_ssize_t _cut(const int64_t* ka, Py_ssize_t s, Py_ssize_t c, int64_t batch_size,
                     int64_t max_tokens, int64_t* off, Py_ssize_t nb) noexcept nogil:
    """Greedy cut of one chunk of ``c`` samples (lengths ``ka``, starting at flat
    position ``s``); appends batch ends to ``off`` after ``off[nb]``, returns new ``nb``.

    A batch is closed before sample ``j`` when adding it would make the batch hold more
    than ``batch_size`` samples (if ``batch_size > 0``) or make ``count * max_len``
    exceed ``max_tokens`` (if ``max_tokens > 0``). A batch never spans two chunks and is
    never empty. The caller guarantees ``count * max_len`` fits in int64."""
    cdef Py_ssize_t j
    cdef int64_t cnt = 0, mx = 0, nm, ln
    for j in range(c):
        ln = ka[j]
        nm = ln if ln > mx else mx
        if cnt > 0 and ((batch_size > 0 and cnt >= batch_size)
                        or (max_tokens > 0 and (cnt + 1) * nm > max_tokens)):
            nb += 1
            off[nb] = s + j
            cnt = 0
            nm = ln
        cnt += 1
        mx = nm
    if c > 0:
        nb += 1
        off[nb] = s + c
    return nb


def build_epoch(order, lengths, int64_t max_length, Py_ssize_t bucket_size,
                int64_t batch_size, int64_t max_tokens, bint sort=True):
    """Sort each chunk of ``order`` by length (descending, stable) and cut batches.

    Parameters
    ----------
    order : int64 ndarray
        Sample indices in epoch order (already permuted by the caller).
    lengths : int64 ndarray
        Per-sample lengths, indexed by the values of ``order``, in ``[0, max_length]``.
    max_length : int
        Upper bound of the lengths (sets the number of radix digits).
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
    >>> idx, off = build_epoch(np.arange(4), L, 5, 4, 2, 0)
    >>> idx.tolist(), off.tolist()
    ([3, 0, 2, 1], [0, 2, 4])
    """
    cdef const int64_t[::1] o = np.ascontiguousarray(order, dtype=np.int64)
    cdef const int64_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef Py_ssize_t m = o.shape[0], s, e, c, q, bad = -1, nb = 0
    cdef int keybits, passes = 0, bits = 1
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    if batch_size < 0 or max_tokens < 0:
        raise ValueError("batch_size and max_tokens must be >= 0 (0: no limit)")
    if bucket_size > m:
        bucket_size = max(m, 1)
    keybits = int(max_length).bit_length()
    if sort and keybits > 0:
        bits = min(MAX_DIGIT_BITS, max(4, int(bucket_size).bit_length()))
        passes = (keybits + bits - 1) // bits
        bits = (keybits + passes - 1) // passes
    idx_arr = np.empty(m, dtype=np.int64)
    off_arr = np.empty(m + 1, dtype=np.int64)
    cdef int64_t[::1] out = idx_arr, off = off_arr
    cdef int64_t[:, ::1] buf = np.empty((4, bucket_size), dtype=np.int64)
    cdef int64_t[::1] hist = np.empty((<Py_ssize_t> 1) << bits, dtype=np.int64)
    cdef int64_t *ia
    cdef int64_t *ka
    cdef int64_t *ib
    cdef int64_t *kb
    with nogil:
        off[0] = 0
        s = 0
        while s < m:
            e = s + bucket_size if m - s > bucket_size else m
            c = e - s
            ia = &buf[0, 0]; ka = &buf[1, 0]; ib = &buf[2, 0]; kb = &buf[3, 0]
            bad = _gather(o, ln, s, e, max_length, ia, ka)
            if bad >= 0:
                break
            if passes > 0:
                _radix_desc(c, passes, bits, &ia, &ka, &ib, &kb, &hist[0])
            for q in range(c):
                out[s + q] = ia[q]
            nb = _cut(ka, s, c, batch_size, max_tokens, &off[0], nb)
            s = e
    if bad >= 0:
        i = o[bad]
        if i < 0 or i >= ln.shape[0]:
            raise IndexError(f"order[{bad}] = {i} is out of range for {ln.shape[0]} samples")
        raise ValueError(f"lengths[{i}] = {ln[i]} is out of range [0, {max_length}]")
    return idx_arr, off_arr[:nb + 1].copy()
