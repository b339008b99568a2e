"""Augmented training (train_model with augment=True, Adam, batch 64) per image with
random_shift's slice path and its gather path, beside training without augmentation: the
28x28 LeNet-5 owner's architecture and the generic MLP on 5,000 upsampled digits, the
digits CNN on the 1,437 digits. Writes JSON to stdout; interleaved, median of 3.

    python benchmarks/results/random-shift-2026-12-05/augmented_training.py > augmented-training.json
"""
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from foreign_bed_28 import grown_halves  # noqa: E402

from ipguard_fast import augment  # noqa: E402
from ipguard_fast.attacks import AttackContext  # noqa: E402
from ipguard_fast.attacks.architectures import factory_for  # noqa: E402
from ipguard_fast.data import load_digits  # noqa: E402
from ipguard_fast.models import build_model  # noqa: E402
from ipguard_fast.nn import seeded  # noqa: E402
from ipguard_fast.train import TrainRecipe, train_model  # noqa: E402


def per_image(make, data, augment_on: bool, gather_max: int) -> float:
    augment._GATHER_MAX = gather_max
    recipe = TrainRecipe(epochs=1, lr=1e-3, batch_size=64, optimizer="adam", augment=augment_on)
    start = time.perf_counter()
    train_model(make(), data, recipe, seed=0)
    return (time.perf_counter() - start) / len(data)


saved = augment._GATHER_MAX
rows = []
for label, data, shape, owner_arch in (("28x28, 5,000 images", grown_halves(5000, 0)[0], (1, 28, 28), "lenet5"),
                                       ("8x8, 1,437 digits", load_digits("train"), (1, 8, 8), "digits_cnn")):
    owner = build_model(owner_arch, 10, shape)
    context = AttackContext(owner, None, 0, input_shape=shape, num_classes=10, device=torch.device("cpu"))
    for arch, make in ((owner_arch, lambda: seeded(lambda: build_model(owner_arch, 10, shape), 0)),
                       ("generic", lambda: seeded(factory_for("generic", context), 0))):
        runs = {"plain": [], "augment, slices": [], "augment, gather": []}
        for _ in range(3):
            runs["plain"].append(per_image(make, data, False, saved))
            runs["augment, slices"].append(per_image(make, data, True, -1))
            runs["augment, gather"].append(per_image(make, data, True, saved))
        medians = {k: statistics.median(v) * 1e6 for k, v in runs.items()}
        rows.append({"data": label, "arch": arch, "us_per_image": medians,
                     "augmented_speedup": medians["augment, slices"] / medians["augment, gather"]})
augment._GATHER_MAX = saved
print(json.dumps({"command": "python benchmarks/results/random-shift-2026-12-05/augmented_training.py",
                  "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                              "threads": torch.get_num_threads(), "torch": torch.__version__}, "rows": rows}, indent=1))
