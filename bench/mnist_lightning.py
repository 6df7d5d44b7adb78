"""lit's mnist example (examples/src/bin/mnist.rs, `mnist fit`) as the same job in PyTorch Lightning.

    scripts/with-torch python bench/mnist_lightning.py [--num_workers N] [--max_epochs N] [--root DIR]

The same data (data/mnist, IDX files read with numpy and gzip), normalisation ((x/255 - 0.1307) /
0.3081, flattened to 784), split (55,000/5,000, seeded random_split), model (Linear(784, 256) →
relu → Linear(256, 10)), Adam 1e-3, batches (64 shuffled for training with `num_workers` workers,
1000 for validation and test without workers), seed_everything(42), Trainer (3 epochs, validation
every epoch, 2 sanity validation batches, progress bar, model summary, CSV logger and the default
ModelCheckpoint under --root), then test with the trained weights, then, as the example does,
save a checkpoint to $TMPDIR, reload it and check that its predictions on 100 test images are
identical. Prints the test accuracy and the wall time since the process started, as the example.

bench/end_to_end.sh times it against lit's binary.
"""

import time

START = time.perf_counter()  # before torch and Lightning are imported: the whole process, as lit's

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import lightning as L
from lightning.pytorch.loggers import CSVLogger

MNIST_MEAN_STD = (0.1307, 0.3081)
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or raw, told apart by content) as an array of its type and shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndims = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndims, offset=4)
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndims)
    return data.reshape(tuple(int(d) for d in dims)).astype(np.dtype(dtype).newbyteorder("="))


def find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"neither {stem}.gz nor {stem} is in {directory}")


def load_mnist(directory: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split: images [n, 784] float32, normalised; labels [n] int64 (lit's `Mnist`)."""
    images = torch.from_numpy(read_idx(find(directory, f"{prefix}-images-idx3-ubyte")))
    labels = torch.from_numpy(read_idx(find(directory, f"{prefix}-labels-idx1-ubyte")))
    mean, std = MNIST_MEAN_STD
    images = (images.reshape(images.shape[0], -1).float() / 255.0 - mean) / std
    return images, labels.long()


class LitMnist(L.LightningModule):
    def __init__(self, hidden: int = 256, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.l1 = nn.Linear(784, hidden)
        self.l2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))

    def evaluate(self, batch):
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self.evaluate(batch)
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_acc", acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, acc = self.evaluate(batch)
        self.log("test_loss", loss)
        self.log("test_acc", acc)

    def predict_step(self, batch, batch_idx):
        return self(batch).argmax(-1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class MnistData(L.LightningDataModule):
    """MNIST's training set split into training and validation, and its test set."""

    def __init__(self, dir=str(DATA_DIR), batch_size=64, eval_batch_size=1000, val_size=5000, num_workers=1, seed=42):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage):
        hp = self.hparams
        if stage in ("fit", "validate"):
            full = TensorDataset(*load_mnist(Path(hp.dir), "train"))
            val = min(hp.val_size, len(full))
            generator = torch.Generator().manual_seed(hp.seed)
            self.train, self.val = random_split(full, [len(full) - val, val], generator=generator)
        else:
            self.test = TensorDataset(*load_mnist(Path(hp.dir), "t10k"))

    def train_dataloader(self):
        hp = self.hparams
        return DataLoader(
            self.train,
            batch_size=hp.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(hp.seed),
            num_workers=hp.num_workers,
            # lit's loader keeps its workers from one epoch to the next (its default).
            persistent_workers=hp.num_workers > 0,
        )

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.hparams.eval_batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=self.hparams.eval_batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--max_epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data_dir", default=str(DATA_DIR))
    parser.add_argument("--root", default=".", help="default_root_dir: logs and checkpoints")
    args = parser.parse_args()

    L.seed_everything(42)
    model = LitMnist(hidden=args.hidden, lr=args.lr)
    dm = MnistData(dir=args.data_dir, num_workers=args.num_workers)
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=args.root,
        # lit's default logger; Lightning's default would be TensorBoard (it is installed here).
        logger=CSVLogger(args.root),
        # enable_checkpointing (default True): ModelCheckpoint() under <log dir>/checkpoints, as lit's.
    )
    trainer.fit(model, datamodule=dm)
    metrics = trainer.test(model, datamodule=dm)  # the trained weights (no ckpt_path), as lit
    accuracy = metrics[0]["test_acc"]
    print(f"test accuracy: {accuracy * 100:.2f}%")
    print(f"wall time: {time.perf_counter() - START:.1f} s on {trainer.world_size} process(es)")

    # The checkpoint rebuilds the same model: same hparams, same predictions.
    path = Path(tempfile.gettempdir()) / "lit-mnist-example.ckpt"
    trainer.save_checkpoint(path)
    restored = LitMnist.load_from_checkpoint(path)
    images = load_mnist(Path(args.data_dir), "t10k")[0][:100]
    # One batch of the 100 images (lit's `Batches::new(vec![images])`).
    before = trainer.predict(model, DataLoader(images, batch_size=len(images)))
    after = trainer.predict(restored, DataLoader(images, batch_size=len(images)))
    same = torch.equal(before[0], after[0])
    size_mb = sum(p.numel() * p.element_size() for p in restored.parameters()) / 1e6
    print(f"checkpoint {path}: {size_mb} MB, reloaded predictions identical: {str(same).lower()}")
    if (args.max_epochs >= 3 and accuracy < 0.97) or not same:
        sys.exit(f"test accuracy {accuracy:.4f} is below 0.97, or the reload differs")


if __name__ == "__main__":
    main()
