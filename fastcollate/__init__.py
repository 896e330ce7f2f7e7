"""fastcollate: ragged batches into PyTorch's PackedSequence in one Cython pass.

Public API
----------
pack(sequences, *, enforce_sorted=False, dtype=None, pin_memory=False) -> PackedSequence
pack_lengths(lengths, *, enforce_sorted=False) -> (batch_sizes, sorted_indices, unsorted_indices)
pad(sequences, *, batch_first=True, padding_value=0, padding_side="right", ...) -> Tensor
PackedCollate(...), packed_collate, padded_collate: DataLoader collate_fn objects
to_device(batch, device, non_blocking=True): move nested batches (PackedSequence aware)
BucketBatchSampler(lengths, *, max_tokens=None, batch_size=None, ...): length-bucketing
    batch_sampler (deterministic, resumable, distributed); padding_efficiency(lengths, batches)
BucketStream(source, *, max_tokens=None, batch_size=None, length=None, ...): length bucketing
    for streaming datasets (an IterableDataset of batches); bucket_lengths, stop_together
fastcollate.kernels: the low-level Cython kernels (scatter into a buffer you allocate).
"""
try:
    from . import _core  # noqa: F401
except ImportError as e:  # no silent pure-Python fallback: say how to build it
    raise ImportError(
        "fastcollate's compiled extension (fastcollate._core) is missing or broken: "
        "install the package with `pip install .` or `pip install -e .`, which build it "
        f"(a source checkout is not importable as is). Original error: {e}") from e
from .packing import pack, pack_lengths
from .padding import pad
from .collate import PackedCollate, packed_collate, padded_collate, to_device
from .sampler import BucketBatchSampler, PaddingStats, padding_efficiency
from .stream import BucketStream, bucket_lengths, stop_together

__version__ = "0.1.0"
__all__ = ["__version__", "pack", "pack_lengths", "pad", "PackedCollate", "packed_collate",
           "padded_collate", "to_device", "BucketBatchSampler", "PaddingStats",
           "padding_efficiency", "BucketStream", "bucket_lengths", "stop_together"]
