"""The collate functions fastcollate is compared against (benchmarks and demo).

``torch_collate`` is the usual hand-written collate from the torch docs and tutorials:
``pad_sequence`` then ``pack_padded_sequence``. ``nothing_collate`` returns one cached
tensor, doing no work: the DataLoader's own floor. ``concat_collate`` returns the
batch's sequences concatenated into one fresh tensor: the floor of any collate that
hands the data over (one copy, one storage). Module-level so DataLoader workers can
pickle them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

__all__ = ["torch_collate", "torch_pad_collate", "nothing_collate", "concat_collate"]

_NOTHING = torch.zeros(1)


def torch_collate(batch):
    """(seq, label) samples -> (PackedSequence, labels), the pad-then-pack way."""
    seqs, labels = zip(*batch)
    seqs = [torch.as_tensor(s) for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs])
    padded = pad_sequence(seqs, batch_first=True)
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    return packed, torch.tensor(labels)


def torch_pad_collate(batch):
    """(seq, label) samples -> (padded, lengths, labels) with pad_sequence."""
    seqs, labels = zip(*batch)
    seqs = [torch.as_tensor(s) for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs])
    return pad_sequence(seqs, batch_first=True), lengths, torch.tensor(labels)


def nothing_collate(batch):
    """Returns one tensor and does nothing else."""
    return _NOTHING


def concat_collate(batch):
    """(seq, label) samples -> one tensor: the sequences concatenated."""
    return torch.from_numpy(np.concatenate([s for s, _ in batch]))
