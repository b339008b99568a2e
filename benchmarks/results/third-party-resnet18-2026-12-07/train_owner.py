import torch, sys, time
sys.path.insert(0, ".")
from mymodels import resnet18_cifar
from ipguard_fast.data_files import load_cifar_binary
from safetensors.torch import save_file
torch.manual_seed(0); torch.set_num_threads(2)
tr = load_cifar_binary("cifar", "train"); te = load_cifar_binary("cifar", "test")
X = tr.images.float() / 255; Y = tr.labels; Xt = te.images.float() / 255; Yt = te.labels
m = resnet18_cifar(); opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
t = time.time()
for ep in range(4):
    m.train(); perm = torch.randperm(len(X))
    for i in range(0, len(X), 128):
        b = perm[i:i + 128]; opt.zero_grad(); torch.nn.functional.cross_entropy(m(X[b]), Y[b]).backward(); opt.step()
    m.eval()
    with torch.no_grad(): acc = (m(Xt).argmax(1) == Yt).float().mean().item()
    print(ep, round(acc, 3), round(time.time() - t), flush=True)
save_file(m.state_dict(), "owner.safetensors")
