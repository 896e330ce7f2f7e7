"""fastcollate: ragged batches into PyTorch's PackedSequence in one Cython pass.

Public API
----------
pack(sequences, *, enforce_sorted=False, dtype=None, pin_memory=False) -> PackedSequence
pack_lengths(lengths, *, enforce_sorted=False) -> (batch_sizes, sorted_indices, unsorted_indices)
fastcollate.kernels: the low-level Cython kernels (scatter into a buffer you allocate).
"""
from . import _core  # noqa: F401  (fails loudly if the extension was not built)
from .packing import pack, pack_lengths

__version__ = "0.1.0"
__all__ = ["__version__", "pack", "pack_lengths"]
