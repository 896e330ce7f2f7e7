"""BucketBatchSampler under PyTorch Lightning's Trainer: DDP on gloo with 2 CPU
processes, one process, epochs and mid-epoch resumption (tests/lightning_app.py is the
training script; each run is a subprocess, about 10-25 s)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

import fastcollate
from fastcollate import BucketBatchSampler, PackedCollate

L = pytest.importorskip("lightning")

APP = Path(__file__).with_name("lightning_app.py")
ROOT = Path(fastcollate.__file__).resolve().parent.parent
sys.path.insert(0, str(APP.parent))
import lightning_app  # noqa: E402


def start_app(out: Path, devices: int, epochs: int, *opts: str):
    """Start the training script (a subprocess); ``finish`` waits for it."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("MASTER_PORT", None)
    proc = subprocess.Popen([sys.executable, str(APP), str(out), str(devices), str(epochs),
                             *opts], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, out, devices


def finish(started) -> list:
    """Each rank's ``[[epoch, indices], ...]`` of a finished run."""
    proc, out, devices = started
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The DDP run and the one-process run, started together (they take 10-25 s)."""
    tmp = tmp_path_factory.mktemp("lightning")
    ddp = start_app(tmp / "ddp", 2, 2)
    full = start_app(tmp / "full", 1, 2, "stateful")
    yield {"tmp": tmp, "ddp": ddp, "full": full}
    for proc, _, _ in (ddp, full):     # a run no selected test waited for
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def results(runs):
    done = {}

    def get(name):
        if name not in done:
            done[name] = finish(runs[name])
        return done[name]
    return get


def expected(epoch: int, num_replicas: int = 1, rank: int = 0) -> list:
    s = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4, seed=3,
                           num_replicas=num_replicas, rank=rank)
    s.set_epoch(epoch)
    return list(s)


def per_epoch(seen: list, epoch: int) -> list:
    return [b for e, b in seen if e == epoch]


def test_ddp_two_processes_each_rank_trains_on_its_own_batches_and_epochs_differ(results):
    ranks = results("ddp")
    for epoch in (0, 1):
        mine = [per_epoch(seen, epoch) for seen in ranks]
        for rank in (0, 1):
            assert mine[rank] == expected(epoch, 2, rank)
        flat = [i for batches in mine for b in batches for i in b]
        assert sorted(flat) == list(range(lightning_app.N))     # 10 batches, no repeat
    assert per_epoch(ranks[0], 0) != per_epoch(ranks[0], 1)


def test_one_process_then_resuming_mid_epoch_continues_with_the_remaining_batches(
        runs, results):
    # StatefulDataLoader with 2 workers (batches drawn ahead), a checkpoint every 3 steps
    (full,) = results("full")
    assert [b for _, b in full] == expected(0) + expected(1)
    assert expected(0) != expected(1)
    ckpt = runs["tmp"] / "full" / "ckpt" / "epoch=1-step=12.ckpt"  # 2 batches into epoch 1
    (resumed,) = finish(start_app(runs["tmp"] / "resumed", 1, 2, "stateful",
                                  f"resume={ckpt}"))
    assert resumed == full[12:]


# In-process checks of the two hooks Lightning uses (fast; the runs above use them).

def test_lightning_recreates_the_batch_sampler_with_its_distributed_sampler():
    from lightning.pytorch.utilities.data import _update_dataloader
    ds = lightning_app.Tokens()
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(lightning_app.LENGTHS,
                                                              max_tokens=24, seed=5),
                        collate_fn=PackedCollate(ragged=0))
    new = _update_dataloader(loader, DistributedSampler(ds, num_replicas=2, rank=1))
    s = new.batch_sampler
    assert isinstance(s, BucketBatchSampler) and (s.num_replicas, s.rank) == (2, 1)
    assert (s.max_tokens, s.seed) == (24, 5)
    assert list(s) == list(BucketBatchSampler(lightning_app.LENGTHS, max_tokens=24, seed=5,
                                              num_replicas=2, rank=1))


def test_lightning_sets_the_epoch_through_batch_sampler_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    sampler = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4)
    loader = DataLoader(lightning_app.Tokens(), batch_sampler=sampler)
    _set_sampler_epoch(loader, 3)
    assert sampler.epoch == 3
    assert list(sampler) == expected_epoch(sampler, 3)


def expected_epoch(sampler, epoch):
    t = BucketBatchSampler(sampler.lengths, batch_size=4)
    t.set_epoch(epoch)
    return list(t)


def test_sampler_attribute_is_this_ranks_indices_and_leaves_the_position_alone():
    s = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4, num_replicas=2, rank=1)
    batches = list(s)
    assert list(s.sampler) == [i for b in batches for i in b]
    assert len(s.sampler) == sum(map(len, batches))
    t = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4, num_replicas=2, rank=1)
    t.load_state_dict(s.state_dict(batches_consumed=2))
    assert list(t.sampler) == [i for b in batches[2:] for i in b]
    assert list(t) == batches[2:]                  # the resumption is still pending


def test_a_batch_sampler_style_call_says_what_to_set():
    with pytest.raises(TypeError, match=r"use_distributed_sampler=False"):
        BucketBatchSampler(SequentialSampler(range(3)), batch_size=None, drop_last=False)


def test_sampler_argument_gives_the_rank_and_conflicts_are_refused():
    ds = range(len(lightning_app.LENGTHS))
    s = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4,
                           sampler=DistributedSampler(ds, num_replicas=3, rank=2))
    assert (s.num_replicas, s.rank) == (3, 2)
    with pytest.raises(ValueError, match=r"num_replicas=2 but the sampler has num_replicas=3"):
        BucketBatchSampler(lightning_app.LENGTHS, batch_size=4, num_replicas=2,
                           sampler=DistributedSampler(ds, num_replicas=3, rank=0))
    with pytest.raises(TypeError, match=r"DistributedSampler"):
        BucketBatchSampler(lightning_app.LENGTHS, batch_size=4, sampler=object())


def test_world_size_is_read_when_the_epoch_is_built(monkeypatch):
    # a sampler made before init_process_group (Trainer(use_distributed_sampler=False))
    s = BucketBatchSampler(lightning_app.LENGTHS, batch_size=4)
    assert s.num_replicas == 1
    everything = list(s)
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    assert (s.num_replicas, s.rank) == (2, 1)
    assert list(s) == everything[1::2]
