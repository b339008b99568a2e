"""Model architectures and a registry by name: digits networks (the demo), LeNet-5 (the
classic 28x28 owner), CIFAR ResNet / Wide ResNet, and torchvision / timm builders with
local weights only."""
from .cifar import CifarResNet, WideResNet, cifar_resnet, resnet20, wide_resnet, wide_resnet28_10
from .digits import (DIGITS_ARCHITECTURES, DIGITS_EPOCHS, DIGITS_HARD_ARCHITECTURES, DIGITS_LR, DigitsCNN, DigitsMLP,
                     train_digits_model)
from .generic import GenericCNN, GenericMLP
from .hub import timm_model, torchvision_model
from .lenet import LeNet5
from .registry import BUILDERS, MODEL_NAMES, build_model, check_model_name

__all__ = ["BUILDERS", "CifarResNet", "DIGITS_ARCHITECTURES", "DIGITS_EPOCHS", "DIGITS_HARD_ARCHITECTURES",
           "DIGITS_LR", "DigitsCNN", "DigitsMLP", "GenericCNN", "GenericMLP", "LeNet5", "MODEL_NAMES", "WideResNet",
           "build_model", "check_model_name", "cifar_resnet", "resnet20", "timm_model", "torchvision_model",
           "train_digits_model", "wide_resnet", "wide_resnet28_10"]
