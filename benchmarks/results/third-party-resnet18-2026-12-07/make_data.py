"""CIFAR-10 binary files from sklearn digits upsampled to 32x32 RGB with jitter (a stand-in for a real 32x32 set)."""
import numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from sklearn.datasets import load_digits
d = load_digits(); x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16; y = torch.tensor(d.target)
g = torch.Generator().manual_seed(0)
def render(n):
    idx = torch.randint(len(x), (n,), generator=g)
    img = F.interpolate(x[idx], size=24, mode="bilinear", align_corners=False)
    img = F.pad(img, (4, 4, 4, 4))
    shifts = torch.randint(-3, 4, (n, 2), generator=g)
    img = torch.stack([torch.roll(im, tuple(s.tolist()), dims=(1, 2)) for im, s in zip(img, shifts)])
    color = torch.rand(n, 3, 1, 1, generator=g) * 0.7 + 0.3
    bg = torch.rand(n, 3, 1, 1, generator=g) * 0.3
    rgb = (bg + img * color + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8), y[idx]
root = Path("cifar/cifar-10-batches-bin"); root.mkdir(parents=True, exist_ok=True)
def write(path, n):
    imgs, labels = render(n)
    rows = np.concatenate([labels.numpy().astype(np.uint8)[:, None], imgs.reshape(n, -1).numpy()], axis=1)
    rows.tofile(path)
for i in range(1, 6): write(root / f"data_batch_{i}.bin", 1000)
write(root / "test_batch.bin", 1000)
