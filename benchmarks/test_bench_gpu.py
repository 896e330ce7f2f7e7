"""End to end on a GPU: a cuDNN LSTM training step fed by a DataLoader, with the
fastcollate collate (PackedCollate + pinned memory + to_device(non_blocking=True))
against the usual pad + pack_padded_sequence collate. Skipped without CUDA.

    pytest benchmarks/test_bench_gpu.py --benchmark-only -s

Each test reports, besides pytest-benchmark's time per training step, the share of
the step spent waiting for the batch (collate + host-to-device copy): the time from
asking the loader for a batch to having it on the device, over the whole step.
"""
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fastcollate import PackedCollate, to_device
from fastcollate._torch_collate import torch_collate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

FEATURES, HIDDEN, BATCH, STEPS = 80, 512, 64, 30


class Speech(Dataset):
    """Speech-like samples: (frames x 80 float32 features, label)."""

    def __init__(self, n=BATCH * STEPS * 2):
        rng = np.random.default_rng(0)
        self.x = [rng.standard_normal((int(L), FEATURES)).astype(np.float32)
                  for L in rng.integers(100, 1500, size=n)]
        self.y = rng.integers(0, 10, size=n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _model():
    lstm = torch.nn.LSTM(FEATURES, HIDDEN, num_layers=2).cuda()
    head = torch.nn.Linear(HIDDEN, 10).cuda()
    opt = torch.optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
    return lstm, head, opt


def _run(loader, lstm, head, opt, steps):
    """Train ``steps`` steps; return (seconds per step, share of it waiting for data)."""
    waits, t_start = 0.0, None
    it = iter(loader)
    for step in range(steps + 3):
        if step == 3:               # after warm-up (cuDNN plans, worker start)
            torch.cuda.synchronize()
            t_start, waits = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        packed, labels = to_device(next(it), "cuda")
        torch.cuda.current_stream().synchronize()
        waits += time.perf_counter() - t0
        _, (h, _) = lstm(packed)
        loss = torch.nn.functional.cross_entropy(head(h[-1]), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    total = time.perf_counter() - t_start
    return total / steps, waits / total


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("collate", ["fastcollate", "torch_pad_pack"])
def test_gpu_lstm_step(benchmark, collate, workers):
    fn = PackedCollate() if collate == "fastcollate" else torch_collate
    loader = DataLoader(Speech(), batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=fn, pin_memory=True, persistent_workers=workers > 0)
    lstm, head, opt = _model()
    benchmark.group = f"gpu-lstm-step-workers{workers}"
    per_step, share = benchmark.pedantic(_run, args=(loader, lstm, head, opt, STEPS),
                                         rounds=1, iterations=1)
    benchmark.extra_info["seconds_per_step"] = per_step
    benchmark.extra_info["data_wait_share"] = share
    print(f"\n{collate} workers={workers}: {per_step * 1e3:.1f} ms/step, "
          f"{share * 100:.1f}% of the step waiting for collate + host-to-device")
    assert 0.0 <= share <= 1.0
