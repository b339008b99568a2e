"""The owner of make_idx.py's files: LeNet-5, 8 epochs of SGD with momentum, weight decay and
shifts: python owner.py IDX_FOLDER OWNER.safetensors"""
import sys
import time

import torch
from safetensors.torch import save_file

from ipguard_fast.data import load_data
from ipguard_fast.models.lenet import LeNet5
from ipguard_fast.selection.inputs import training_data
from ipguard_fast.train import TrainRecipe, accuracy, train_model

folder, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
train = training_data(load_data(f"mnist:{folder}", "train"))
test = training_data(load_data(f"mnist:{folder}", "test"))
start = time.time()
owner = train_model(LeNet5(), train, TrainRecipe(epochs=8, lr=0.03, batch_size=128, optimizer="sgd", weight_decay=1e-3,
                                                 augment=True), seed=0)
print(f"owner trained in {time.time() - start:.0f} s, test accuracy {accuracy(owner, test):.3f}")
save_file({k: v.contiguous() for k, v in owner.state_dict().items()}, out)
