"""A tiny Lightning training run on fastcollate batches, run as a script by
tests/test_lightning.py (Lightning's "ddp" strategy starts the other ranks by running
this script again).

    python tests/lightning_app.py OUT_DIR DEVICES EPOCHS [stateful] [resume=CKPT]

Every rank writes OUT_DIR/rank<r>.json: the sample indices of every batch it trained
on, as ``[epoch, [indices...]]``, in order. ``stateful`` uses torchdata's
StatefulDataLoader with 2 workers and saves a checkpoint every 3 steps;
``resume=CKPT`` continues from that checkpoint.
"""
import json
import os
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import DataLoader, Dataset

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from fastcollate import BucketBatchSampler, PackedCollate

N = 40
LENGTHS = [1 + (i * 7) % 13 for i in range(N)]


class Tokens(Dataset):
    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.full((LENGTHS[i],), i), i


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(N, 4)
        self.lstm = nn.LSTM(4, 4)
        self.head = nn.Linear(4, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        packed, labels = batch
        assert isinstance(packed, PackedSequence), type(packed)
        out, _ = self.lstm(packed._replace(data=self.emb(packed.data)))
        self.seen.append([self.current_epoch, labels.tolist()])
        return self.head(out.data).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_end(self):
        path = os.path.join(sys.argv[1], f"rank{self.global_rank}.json")
        with open(path, "w") as f:
            json.dump(self.seen, f)


def main():
    out, devices, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = sys.argv[4:]
    resume = next((o[len("resume="):] for o in opts if o.startswith("resume=")), None)
    # Built before Lightning sets up DDP: torch.distributed is not initialized yet.
    sampler = BucketBatchSampler(LENGTHS, batch_size=4, seed=3)
    collate = PackedCollate(ragged=0)
    callbacks = []
    if "stateful" in opts:
        from torchdata.stateful_dataloader import StatefulDataLoader
        loader = StatefulDataLoader(Tokens(), batch_sampler=sampler, collate_fn=collate,
                                    num_workers=2)
        callbacks.append(ModelCheckpoint(dirpath=os.path.join(out, "ckpt"),
                                         every_n_train_steps=3, save_top_k=-1))
    else:
        loader = DataLoader(Tokens(), batch_sampler=sampler, collate_fn=collate)
    trainer = L.Trainer(accelerator="cpu", devices=devices,
                        strategy="ddp" if devices > 1 else "auto", max_epochs=epochs,
                        default_root_dir=out, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=bool(callbacks),
                        callbacks=callbacks, logger=False)
    trainer.fit(Tiny(), loader, ckpt_path=resume)


if __name__ == "__main__":
    main()
