"""``python -m fastcollate``: the demo.

``python -m fastcollate`` trains a small character-level LSTM on the lines of the
Python standard library through ``DataLoader(collate_fn=PackedCollate(...))`` and
compares the collate with the usual pad-then-pack one.

``python -m fastcollate bench`` prints, for each benchmark workload (docs/benchmarks.md)
and input kind, the median time of ``fastcollate.pack``,
``torch.nn.utils.rnn.pack_sequence`` (after ``torch.tensor`` per sample for lists) and
the copy floor (``np.concatenate`` / ``torch.cat``), with torch single-threaded as in
DataLoader workers.
``python -m fastcollate bench --grid`` prints the scaling grid instead (batch size x
mean length x row size x input kind, ratios to the copy floor and to a memcpy, and a
fitted fixed / per-sample / per-byte cost line).

``python -m fastcollate build-store TEXT OUT [--tokenizer bytes|whitespace]`` writes a
memory-mapped store (``fastcollate.open_store(OUT)``) with one sample per non-empty
line of TEXT: its UTF-8 bytes, or its whitespace-separated words (ids in
``OUT/vocab.txt``).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable, List, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import pack_sequence

from . import pack
from ._workloads import WORKLOADS, Workload


Case = Tuple[str, list, Callable[[], Any], Callable[[], Any]]


def median_seconds(fn: Callable[[], Any], *, budget: float = 0.25, min_runs: int = 5) -> float:
    """Median wall time of fn() over repeated runs within a time budget."""
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cases(w: Workload) -> List[Case]:
    """(input kind, batch, torch reference, copy floor) for one workload."""
    arrays, tensors = w.arrays(), w.tensors()
    out: List[Case] = [
        ("numpy", arrays,
         lambda: pack_sequence([torch.from_numpy(a) for a in arrays], enforce_sorted=False),
         lambda: np.concatenate(arrays)),
        ("tensor", tensors, lambda: pack_sequence(tensors, enforce_sorted=False),
         lambda: torch.cat(tensors)),
    ]
    if w.is_flat:
        lists = w.lists()
        out.append(("list", lists,
                    lambda: pack_sequence([torch.tensor(s) for s in lists],
                                          enforce_sorted=False),
                    lambda: np.array([x for s in lists for x in s])))
    return out


def pack_table(budget: float = 0.25) -> List[str]:
    rows = [f"{'workload':<11} {'input':<7} {'fastcollate':>12} {'torch':>11} "
            f"{'floor':>10} {'speedup':>8} {'vs floor':>9}"]
    for name, w in WORKLOADS.items():
        for kind, batch, ref, floor in cases(w):
            t_ours = median_seconds(lambda: pack(batch), budget=budget)
            t_torch = median_seconds(ref, budget=budget)
            t_floor = median_seconds(floor, budget=budget)
            rows.append(f"{name:<11} {kind:<7} {t_ours * 1e6:10.0f}us {t_torch * 1e6:9.0f}us "
                        f"{t_floor * 1e6:8.0f}us {t_torch / t_ours:7.1f}x "
                        f"{t_ours / t_floor:8.2f}x")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastcollate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=["demo", "bench", "build-store"],
                        default="demo", help="demo (default): train an LSTM; bench: the "
                        "pack() table; build-store TEXT OUT: a store from a text file")
    parser.add_argument("paths", nargs="*", help="build-store: the text file and the "
                        "store directory to write")
    parser.add_argument("--tokenizer", choices=["bytes", "whitespace"], default="bytes",
                        help="build-store: UTF-8 bytes (default) or whitespace words")
    parser.add_argument("--steps", type=int, default=300, help="demo training steps")
    parser.add_argument("--batch-size", type=int, default=64, help="demo batch size")
    parser.add_argument("--budget", type=float, default=0.25,
                        help="bench: seconds of timing per measurement (default 0.25)")
    parser.add_argument("--grid", action="store_true",
                        help="bench: the scaling grid (B x length x row x input kind)")
    parser.add_argument("--max-mb", type=float, default=128.0,
                        help="bench --grid: skip cells whose output exceeds this (MB)")
    args = parser.parse_args(argv)
    if args.what == "build-store":
        if len(args.paths) != 2:
            parser.error("build-store needs two paths: TEXT OUT")
        from .store import build_store
        build_store(args.paths[0], args.paths[1], tokenizer=args.tokenizer)
        return
    if args.paths:
        parser.error(f"unexpected arguments {args.paths}")
    if args.what == "demo":
        from ._demo import run
        run(steps=args.steps, batch_size=args.batch_size)
        return
    torch.set_num_threads(1)
    if args.grid:
        from ._grid import grid
        print("pack() scaling grid: min time per batch, torch single-threaded; /floor = "
              "pack / (np.concatenate or torch.cat), /memcpy = pack / memcpy of the same "
              "bytes, torch x = pack_sequence / pack")
        for row in grid(min(args.budget, 0.1), args.max_mb):
            print(row)
        return
    print("pack(): median time per batch, torch single-threaded "
          "(speedup = torch / fastcollate, vs floor = fastcollate / copy floor)")
    for row in pack_table(args.budget):
        print(row)


if __name__ == "__main__":
    main()
