"""LeNet-5 (LeCun et al. 1998) as MNIST owners train it today: ReLU and max pooling
instead of the original's tanh and subsampling. The classic 28x28 owner: about 0.4 M
multiply-adds an image, thirty times fewer than DigitsCNN at 28x28 (whose two 3x3 convs
run at full resolution), so a bed of 60,000 such images trains in minutes on a CPU."""
from __future__ import annotations

from torch import nn

from .._validate import positive_int
from .digits import _PoolTo

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """conv 5x5 (6, padding 2) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> ``fc``.

    On 28x28 inputs the features are 16 x 5 x 5 as in the paper; other sides (at least
    16) are average-pooled to 5x5 (passed through at 28x28), so the head's size never
    depends on them.
    `width` scales the channels (6 and 16 at 1), for independents of another width."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 1):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
            positive_int(name, value)
        c1, c2 = 6 * width, 16 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            _PoolTo(5),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 25, 120), nn.ReLU(inplace=True),
                                    nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x):
        return self.fc(self.hidden(self.features(x)))
