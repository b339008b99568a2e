"""MNIST-format IDX files (gzip) from the embedded digits at 28x28, grown by shifted copies
to 60,000 training images (benchmarks/foreign_bed_28.grown_halves, owner's half, seed 0),
and the digits' test split as t10k: python make_idx.py OUT_FOLDER."""
import gzip
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # benchmarks/
from foreign_bed_28 import grown_halves  # noqa: E402

from ipguard_fast.data import load_digits  # noqa: E402


def write(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    lo, hi = images.min(), images.max()
    u8 = ((images - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in u8.shape) + u8.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + len(labels).to_bytes(4, "big") + labels.numpy().astype(np.uint8).tobytes())


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    train, _ = grown_halves(60000, 0)
    test = load_digits("test", size=28)
    write(out, "train", *train.tensors)
    write(out, "t10k", *test.tensors)
