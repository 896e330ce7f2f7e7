"""The demo behind ``python -m fastcollate``: a character-level LSTM language model on
the lines of the Python standard library's own source, fed by DataLoader +
BucketBatchSampler + PackedCollate, then side-by-side tables: random vs bucketed batches,
fastcollate vs the usual pad-then-pack collate.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import time
from typing import Any, Callable, Iterable, List, Tuple, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .collate import PackedCollate, to_device
from .sampler import BucketBatchSampler, padding_efficiency
from ._torch_collate import torch_collate

VOCAB = 128   # ASCII


def stdlib_lines(limit: int = 20000, min_len: int = 16, max_len: int = 120) -> List[bytes]:
    """ASCII source lines of the standard library, in a fixed order (every machine has them)."""
    root = sysconfig.get_paths()["stdlib"]
    lines: List[bytes] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "site-packages",
                                                              "__pycache__", "idlelib"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    for raw in f:
                        line = raw.strip()
                        if min_len <= len(line) <= max_len and line.isascii():
                            lines.append(line)
            except OSError:
                continue
            if len(lines) >= limit:
                return lines
    return lines


class CharLines(Dataset):
    """(input ids, target ids): each line predicts itself shifted by one character."""

    def __init__(self, lines: List[bytes]):
        self.ids = [np.frombuffer(line, dtype=np.uint8).astype(np.int64) for line in lines]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        """Length of every sample (for the bucketing sampler)."""
        return np.array([len(x) - 1 for x in self.ids], dtype=np.int64)

    def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        ids = self.ids[i]
        return ids[:-1], ids[1:]


class CharLSTM(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, hidden)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, packed):
        x = packed._replace(data=self.embed(packed.data))
        out, _ = self.lstm(x)
        return self.head(out.data)          # logits for every real step, packed order


def progress(step: int, total: int, loss: float, width: int = 30) -> str:
    done = int(width * step / total)
    return f"\r[{'#' * done}{'.' * (width - done)}] step {step:4d}/{total} loss {loss:.3f}"


def make_loader(dataset: CharLines, batch_size: int, device: torch.device, bucketed: bool,
                seed: int = 0) -> DataLoader:
    """Random batches (shuffle) or length-bucketed ones (BucketBatchSampler)."""
    # inputs and targets share lengths, hence one permutation: logits[i] <-> targets.data[i]
    collate = PackedCollate(groups=[(0, 1)])
    pin = device.type == "cuda"
    if bucketed:
        sampler = BucketBatchSampler(dataset.lengths(), batch_size=batch_size, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, pin_memory=pin)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin)


def train(steps: int, batch_size: int, device: torch.device, dataset: CharLines) -> List[float]:
    torch.manual_seed(0)
    model = CharLSTM().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = make_loader(dataset, batch_size, device, bucketed=True)
    losses: List[float] = []
    step = 0
    while step < steps:
        for inputs, targets in loader:
            inputs, targets = to_device((inputs, targets), device)
            loss = nn.functional.cross_entropy(model(inputs), targets.data)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0 or step == steps:
                print(progress(step, steps, float(np.mean(losses[-10:]))), end="", flush=True)
            if step == steps:
                break
    print()
    return losses


def compare_batching(dataset: CharLines, batch_size: int, device: torch.device,
                     steps: int = 20) -> List[str]:
    """Padding efficiency of an epoch and LSTM time per training step, random vs bucketed."""
    lengths = dataset.lengths()
    rows = [f"{'batching':<28} {'batches':>8} {'real/padded tokens':>19} {'LSTM step':>10}"]
    for name, bucketed in [("random (shuffle=True)", False), ("BucketBatchSampler", True)]:
        loader = make_loader(dataset, batch_size, device, bucketed, seed=1)
        sampler = loader.batch_sampler
        batches = (sampler.epoch_batches() if isinstance(sampler, BucketBatchSampler)
                   else [list(b) for b in cast(Iterable, sampler)])
        stats = padding_efficiency(lengths, batches)
        torch.manual_seed(0)
        model = CharLSTM().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        it = iter(loader)
        t0 = 0.0
        for i in range(steps + 2):
            if i == 2:                                   # two warm-up steps
                t0 = time.perf_counter()
            inputs, targets = to_device(next(it), device)
            loss = nn.functional.cross_entropy(model(inputs), targets.data)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - t0) / steps
        rows.append(f"{name:<28} {stats.batches:8d} {stats.efficiency:19.2f} "
                    f"{per_step * 1e3:8.1f}ms")
    return rows


def torch_pairs_collate(batch):
    """The usual way for (input, target) pairs: pad both, pack both."""
    inputs, targets = zip(*batch)
    a, _ = torch_collate(list(zip(inputs, range(len(inputs)))))
    b, _ = torch_collate(list(zip(targets, range(len(targets)))))
    return a, b


def compare_collates(dataset: CharLines, batch_size: int, batches: int = 60) -> List[str]:
    samples = [dataset[i] for i in range(batch_size)]
    rows = [f"{'collate':<38} {'collate/batch':>14} {'DataLoader batches/s':>21}"]
    collates: List[Tuple[str, Callable[[Any], Any]]] = [
        ("fastcollate.PackedCollate", PackedCollate(groups=[(0, 1)])),
        ("pad_sequence + pack_padded_sequence", torch_pairs_collate)]
    for name, fn in collates:
        fn(samples)
        t0 = time.perf_counter()
        for _ in range(50):
            fn(samples)
        per_batch = (time.perf_counter() - t0) / 50
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=fn, shuffle=False)
        t0 = time.perf_counter()
        for i, _ in enumerate(loader):
            if i + 1 == batches:
                break
        rate = batches / (time.perf_counter() - t0)
        rows.append(f"{name:<38} {per_batch * 1e6:12.0f}us {rate:21.0f}")
    return rows


def run(steps: int = 300, batch_size: int = 64) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    lines = stdlib_lines()
    dataset = CharLines(lines)
    n_chars = sum(len(x) for x in dataset.ids)
    print(f"fastcollate demo: character-level LSTM on {len(dataset)} lines "
          f"({n_chars} characters) of the Python {sys.version.split()[0]} standard library, "
          f"device {device}")
    t0 = time.perf_counter()
    losses = train(steps, batch_size, device, dataset)
    elapsed = time.perf_counter() - t0
    print(f"loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f} "
          f"in {steps} steps ({elapsed:.1f}s)")
    print()
    print(f"batches of {batch_size} lines: padding, and time per LSTM training step")
    for row in compare_batching(dataset, batch_size, device):
        print(row)
    print()
    print(f"collate of {batch_size} (input, target) lines, main process:")
    for row in compare_collates(dataset, batch_size):
        print(row)
