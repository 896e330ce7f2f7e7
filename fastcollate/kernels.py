"""The low-level kernels, for callers who lay out packed data themselves.

These are the Cython functions :func:`fastcollate.pack` is built on. They work on NumPy
arrays and raw addresses, never on torch, and release the GIL while copying. Typical
use: allocate the output yourself (pinned, shared memory, part of a larger buffer), then
scatter into it.

>>> import numpy as np, torch
>>> from fastcollate import kernels
>>> samples = [np.array([1, 2]), np.array([3, 4, 5])]
>>> batch_sizes, order, inverse = kernels.sort_lengths([2, 3])
>>> out = torch.empty(5, dtype=torch.int64)
>>> ptrs = [s.ctypes.data for s in samples]
>>> kernels.scatter(ptrs, [2, 3], order, batch_sizes, 8, out.data_ptr())
>>> out.tolist()
[3, 1, 4, 2, 5]

Or, from any batch :func:`fastcollate.pack` accepts, let it plan and write into your
buffer: ``plan = plan_batch(samples); write_plan(plan, out); wrap_packed(out, plan)``,
with ``out`` of ``plan.shape`` and ``plan.dtype`` (checked: ValueError otherwise).
A plan holds every sample alive; a list sample that changes length between
``plan_batch`` and ``write_plan`` makes the write raise ValueError naming it (see
docs/safety.md). ``pad_scatter`` does the same for padded layouts; ``cast_scatter``
converts each element while it copies (uint16 into int64 and other exact widenings).
"""
from ._core import (KIND_BOOL, KIND_COMPLEX, KIND_FLOAT, KIND_INT, KIND_OTHER,
                    advise_huge, array_sources, check_storages, choose_block,
                    choose_stream, choose_tile,
                    chunk_pointers, flatten_nested, leading_lengths, list_kind,
                    list_lengths, offsets_of, pad_scatter, read_ints, read_lists, scatter,
                    sort_lengths, tensor_lengths, tensor_sources)
from .packing import Plan, check_out, plan_batch, wrap_packed, write_plan
from ._cast import cast_scatter
from . import _core


def empty_cache() -> int:
    """Free the large output buffers fastcollate keeps for reuse; returns the bytes freed.

    Outputs of 4 MB or more (packed data, padded batches, collate blocks) are not
    given back to the system when their last tensor is freed: up to
    ``FASTCOLLATE_POOL_MB`` megabytes (environment variable, read at import; default
    256, 0 disables the cache) of them are kept, and a later output that fits reuses
    one instead of paying a page fault and a zeroing per page of fresh memory (64 MB
    outputs: 27 -> 19 ms). A buffer is reused only once nothing references it.
    Like ``torch.cuda.empty_cache``, this only returns idle memory to the system.

    >>> import numpy as np, fastcollate
    >>> from fastcollate import kernels
    >>> p = fastcollate.pack([np.zeros(1 << 20, dtype=np.int64)])   # an 8 MB output
    >>> del p
    >>> kernels.empty_cache() >= 8 << 20
    True
    >>> kernels.empty_cache()
    0
    """
    return int(_core.pool_clear())


__all__ = ["sort_lengths", "offsets_of", "scatter", "pad_scatter", "read_lists",
           "read_ints", "list_kind", "list_lengths", "flatten_nested",
           "array_sources", "leading_lengths", "chunk_pointers", "choose_block",
           "choose_stream", "choose_tile", "advise_huge", "tensor_sources", "tensor_lengths", "check_storages",
           "KIND_BOOL", "KIND_INT", "KIND_FLOAT", "KIND_COMPLEX",
           "KIND_OTHER", "Plan", "plan_batch", "write_plan", "wrap_packed", "check_out",
           "cast_scatter", "empty_cache"]
