import torch, sys, copy
sys.path.insert(0, ".")
import torch.nn.functional as F
from mymodels import resnet18_cifar, small_cnn
from ipguard_fast.data_files import load_cifar_binary
from safetensors.torch import save_file, load_file
torch.set_num_threads(2)
tr = load_cifar_binary("cifar", "train"); te = load_cifar_binary("cifar", "test")
X = tr.images.float() / 255; Y = tr.labels; Xt = te.images.float() / 255; Yt = te.labels
def acc(m):
    m.eval()
    with torch.no_grad(): return round((m(Xt).argmax(1) == Yt).float().mean().item(), 3)
def train(m, epochs, lr, seed, idx=None, labels=None, adam=False):
    torch.manual_seed(seed); opt = torch.optim.Adam(m.parameters(), lr=lr) if adam else torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    xs = X if idx is None else X[idx]; ys = (Y if idx is None else Y[idx]) if labels is None else labels
    for ep in range(epochs):
        m.train(); perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 128):
            b = perm[i:i + 128]; opt.zero_grad(); F.cross_entropy(m(xs[b]), ys[b]).backward(); opt.step()
    return m
owner = resnet18_cifar(); owner.load_state_dict(load_file("owner.safetensors")); owner.eval()
half = torch.arange(2500)
out = {}
m = train(copy.deepcopy(owner), 1, 0.01, 5, half); out["ftal"] = m
out["rtal"] = train(copy.deepcopy(owner).apply(lambda l: l.reset_parameters() if isinstance(l, torch.nn.Linear) else None), 2, 0.01, 6, half)
m = copy.deepcopy(owner)
with torch.no_grad():
    for p in m.parameters():
        if p.dim() > 1:
            k = int(0.3 * p.numel()); th = p.abs().flatten().kthvalue(k).values; p[p.abs() <= th] = 0
out["prune30"] = m
out["twin"] = train(resnet18_cifar(), 8, 0.05, 1)
out["cnn"] = train(small_cnn(), 10, 2e-3, 2, adam=True)
# label-only extraction on the attacker's half (the other 2500 images), owner's labels
att = torch.arange(2500, 5000)
with torch.no_grad(): owner_labels = owner(X[att]).argmax(1)
out["student_cnn"] = train(small_cnn(), 15, 2e-3, 3, att, owner_labels, adam=True)
for name, m in out.items():
    print(name, acc(m), flush=True)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, f"s_{name}.safetensors")
