"""DDP: two gloo ranks memory-map the same store, BucketBatchSampler splits the batches,
each rank packs its own; together they cover the epoch once and agree with one process."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fastcollate import BucketBatchSampler, open_store, pack, write_store

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from fastcollate import BucketBatchSampler, open_store, pack
    rank, store_dir, rdv, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method="file://" + rdv, rank=rank, world_size=2)
    store = open_store(store_dir, dtype=torch.int64)       # each rank maps the file
    sampler = BucketBatchSampler(store.lengths, max_tokens=200, seed=3, drop_last=True)
    sampler.set_epoch(1)
    seen, sums = [], []
    for batch in sampler:
        p = pack(store[batch])
        seen.append([int(i) for i in batch])
        sums.append(int(p.data.sum()))
    everyone = [None, None]
    dist.all_gather_object(everyone, seen)
    dist.barrier()
    if rank == 0:
        json.dump({"batches": everyone, "sums": sums, "mapped": type(store.values).__name__},
                  open(out, "w"))
    dist.destroy_process_group()
""")


def test_two_gloo_ranks_share_one_memory_mapped_store(tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50000, rng.integers(1, 40)) for _ in range(400)]
    write_store(tmp_path / "store", seqs, dtype=np.uint16)
    out = tmp_path / "out.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(r), str(tmp_path / "store"),
                               str(tmp_path / "rdv"), str(out)], env=env)
             for r in range(2)]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    result = json.loads(out.read_text())
    assert result["mapped"] == "memmap"
    rank0, rank1 = result["batches"]
    flat0 = [i for b in rank0 for i in b]
    flat1 = [i for b in rank1 for i in b]
    assert len(rank0) == len(rank1) > 0                # every rank steps the same count
    assert not set(flat0) & set(flat1)                 # no sample on both ranks
    # the same split as the sampler gives in one process, and the same packed data
    store = open_store(tmp_path / "store", dtype=torch.int64)
    for rank, got in enumerate((rank0, rank1)):
        s = BucketBatchSampler(store.lengths, max_tokens=200, seed=3, drop_last=True,
                               num_replicas=2, rank=rank)
        s.set_epoch(1)
        assert [list(map(int, b)) for b in s] == got
    assert result["sums"] == [int(pack(store[b]).data.sum()) for b in rank0]
