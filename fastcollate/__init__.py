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
RaggedArray(values, offsets, dtype=None): a flat ragged store (np.memmap ok); pack(store[idx])
    and pad(store[idx]) read a batch by indices in one pass; StoreDataset(fields) for the
    DataLoader (batched fetch, no per-sample objects); write_store/open_store: on-disk format;
    fastcollate.formats: Arrow columns and fairseq/Megatron indexed datasets.
flatten(sequences, *, position_ids=False, labels=None, nested=False, ...) -> FlatSequence:
    concatenation + cu_seqlens/max_seqlen for attention models (varlen, torch.nested)
pack_rows(sequences, max_length, ...) -> PackedRows: whole samples into fixed-length rows
FlatteningCollator(...): drop-in for transformers.DataCollatorWithFlattening
BucketStream(source, *, max_tokens=None, batch_size=None, length=None, ...): length bucketing
    for streaming datasets (an IterableDataset of batches); bucket_lengths, stop_together
fastcollate.kernels: the low-level Cython kernels (scatter into a buffer you allocate).
fastcollate.rnn: drop-ins for torch.nn.utils.rnn (pack_sequence, pad_sequence, ...).
UnsortedError: unsorted input with enforce_sorted=True (a ValueError and a RuntimeError).
"""
from ._version import __version__

try:
    from . import _core  # noqa: F401
except ImportError as e:  # no silent pure-Python fallback: say how to build it
    from ._shadow import missing_extension_message
    raise ImportError(missing_extension_message(__file__, e)) from e
from .packing import pack, pack_lengths
from .padding import pad
from .collate import PackedCollate, packed_collate, padded_collate, to_device
from .sampler import BucketBatchSampler, PaddingStats, padding_efficiency
from ._core import UnsortedError
from . import kernels, rnn  # noqa: F401  (fastcollate.kernels, fastcollate.rnn)
from .store import (ChunkedRaggedArray, RaggedArray, RaggedBatch, StoreBatch, StoreDataset,
                    open_store, write_store)
from .flat import FlatSequence, FlatteningCollator, PackedRows, flatten, pack_rows
from .stream import BucketStream, bucket_lengths, stop_together

__all__ = ["__version__", "pack", "pack_lengths", "pad", "PackedCollate", "packed_collate",
           "padded_collate", "to_device", "BucketBatchSampler", "PaddingStats",
           "padding_efficiency", "UnsortedError",
           "RaggedArray", "RaggedBatch", "ChunkedRaggedArray",
           "StoreDataset", "StoreBatch", "write_store", "open_store",
           "flatten", "pack_rows", "FlatSequence", "PackedRows",
           "FlatteningCollator",
           "BucketStream", "bucket_lengths", "stop_together"]
