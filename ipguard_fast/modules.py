"""What the package needs to know about, or do to, a caller's nn.Module: one copy of each.

Every entry point that runs someone else's model (the search, verification, the
server, export) needs its device and dtype, needs it in eval mode for a while and
exactly as it was afterwards, and sometimes needs to feed an exported graph whose
batch size was fixed at export time. Exported (`torch.export`, .pt2) modules refuse
train()/eval() -- their mode was frozen at export -- so nothing here calls them
blindly.

Process-wide state, on purpose: `module_lock` keeps one re-entrant lock per module
object in a registry of weak references. Two threads sharing a model must take turns
whoever started them, so the lock cannot travel with one call's arguments; keeping it
on the module itself would add an attribute to the caller's object, and nothing the
package is given may be changed. The registry holds no module alive (an entry goes
with its module), starts no thread and has nothing to close. ARCHITECTURE.md lists it.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Iterator

import torch
from torch import nn

__all__ = ["call_in_fixed_batches", "canonical_layout", "channels_last", "device_and_dtype", "eval_mode", "frozen",
           "has_conv_weights", "held_tensors", "kept_unchanged", "module_device", "module_lock", "refuses_train_mode",
           "restore_changed", "set_training", "static_batch_size"]

# One re-entrant lock per module object (see the module doc): what switches a caller's module
# to eval mode (or freezes it) holds its lock until everything is restored, so two threads
# sharing a model take turns instead of restoring each other's half-changed state.
_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_FALLBACK_LOCK = threading.RLock()  # for the rare module that cannot be weakly referenced


def device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the first parameter or buffer, dtype of the first floating one (CPU, float32 if none)."""
    tensors = list(module.parameters()) + list(module.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


def module_device(module: nn.Module) -> torch.device:
    """Where the module's weights live (CPU for a module without any)."""
    return device_and_dtype(module)[0]


def module_lock(module: nn.Module) -> threading.RLock:
    """The lock that eval_mode and frozen hold on `module` (re-entrant: nesting is fine)."""
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(module)
            if lock is None:
                lock = _LOCKS[module] = threading.RLock()
        except TypeError:
            return _FALLBACK_LOCK
        return lock


def set_training(module: nn.Module, mode: bool) -> bool:
    """module.train(mode); False when the module refuses (an exported .pt2 module)."""
    try:
        module.train(mode)
        return True
    except NotImplementedError:
        return False


def refuses_train_mode(module: nn.Module) -> bool:
    """True for modules whose train()/eval() raise (exported .pt2 modules); changes nothing."""
    with eval_mode(module):
        return not set_training(module, False)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; every submodule's own train/eval flag back afterwards.

    Restoring flag by flag (not with module.train(was)) keeps a model that mixes
    modes -- say in training with one frozen batch-norm layer -- exactly as it was.
    Holds the module's lock throughout (see module_lock).
    """
    with module_lock(module):
        flags = [(sub, sub.training) for sub in module.modules()]
        set_training(module, False)
        try:
            yield module
        finally:
            for sub, flag in flags:
                sub.training = flag


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """eval_mode and no parameter gradients for the duration; both restored afterwards."""
    with eval_mode(module):
        flags = [(p, p.requires_grad) for p in module.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield module
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def _conv_weights(module: nn.Module) -> list[torch.Tensor]:
    """The 4-D weights of `module`'s 2-D convolutions: what channels_last lays out. Other 4-D
    tensors (a [1, C, H, W] position table, say) stay as they are: a model may view them."""
    return [m.weight for m in module.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(m.weight, torch.Tensor)
            and m.weight.dim() == 4]


def has_conv_weights(module) -> bool:
    """Whether `module` (an nn.Module) has 2-D convolutions, whose weights channels_last lays out."""
    return isinstance(module, nn.Module) and bool(_conv_weights(module))


@contextlib.contextmanager
def channels_last(modules, enabled: bool = True) -> Iterator[None]:
    """Every nn.Module of `modules` with its 2-D convolutions' weights channels_last for the
    duration, and the very tensors it had put back afterwards (whatever their layout was):
    on CPU, oneDNN runs conv nets faster so (the digits CNN on 2 cores: a forward 1.7-2.5x,
    an input gradient 1.1-1.6x; benchmarks/results/channels-last-cpu-2026-12-05).
    Other callables pass through; each module's lock is held throughout (see module_lock)."""
    if not enabled:
        yield
        return
    with contextlib.ExitStack() as stack:
        saved = []
        for module in dict.fromkeys(m for m in modules if has_conv_weights(m)):
            stack.enter_context(module_lock(module))
            for tensor in {id(t): t for t in _conv_weights(module)}.values():   # clone: canonical strides
                saved.append((tensor, tensor.data))
                tensor.data = tensor.data.clone(memory_format=torch.channels_last)
        try:
            yield
        finally:
            for tensor, data in reversed(saved):   # a tensor two modules share: its first data last
                tensor.data = data


def canonical_layout(module: nn.Module) -> nn.Module:
    """`module` (changed in place, and returned) with every 4-D weight and buffer in the
    canonical contiguous strides. A weight with a channel of size 1 counts as contiguous in
    either layout, so ``.to(memory_format=...)`` leaves its channels_last strides, and
    oneDNN, which picks the kernel by the strides, then rounds differently: a model trained
    channels_last and one loaded from a file would not give the same outputs. Every model
    an attack builds leaves through here."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dim() == 4 and tensor.stride() != torch.empty(tensor.shape, device="meta").stride():
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    return module


def static_batch_size(module) -> int | None:
    """Batch size baked into an exported graph's first input, or None when the batch is dynamic.

    torch.export specialises the batch dimension to the example's size unless it was
    marked dynamic, and the resulting module rejects any other batch size.
    """
    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and isinstance(value.shape[0], int):
                return int(value.shape[0])
            return None
    return None


def call_in_fixed_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """fn on chunks of exactly `size` rows of x, the last chunk padded by repeating its last row.

    For models whose batch size is fixed (exported graphs, some ONNX files); the
    padding rows' outputs are dropped.
    """
    outputs = []
    for start in range(0, x.shape[0], size):
        chunk = x[start:start + size]
        real = chunk.shape[0]
        if real < size:
            chunk = torch.cat([chunk, chunk[-1:].expand(size - real, *chunk.shape[1:])])
        outputs.append(fn(chunk)[:real])
    return torch.cat(outputs)


def held_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every tensor a module holds: parameters, buffers and tensor attributes (a TorchScript
    module's attributes too, which are no buffers), by name, submodules included."""
    if isinstance(module, torch.jit.ScriptModule):
        found = torch._C._jit_debug_module_iterators(module._c)["named_attributes_r"]
        return [(name, value) for name, value in found if isinstance(value, torch.Tensor)]
    held = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        named = {**vars(sub), **sub._parameters, **sub._buffers}
        held += [(f"{prefix}.{name}" if prefix else name, value) for name, value in named.items()
                 if isinstance(value, torch.Tensor)]
    return held


def restore_changed(module: nn.Module, before: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor of `before` (held_tensors' names and copies of their values)
    that `module` no longer holds unchanged, after putting every one of them back; None when
    nothing changed."""
    now = dict(held_tensors(module))
    changed = next((name for name, value in before if now.get(name) is None or now[name].shape != value.shape
                    or not torch.equal(now[name].detach(), value)), None)
    if changed is not None:
        with torch.no_grad():
            for name, value in before:
                if name in now and now[name].shape == value.shape:
                    now[name].copy_(value)
    return changed


@contextlib.contextmanager
def kept_unchanged(module: nn.Module, held: list[tuple[str, torch.Tensor]]) -> Iterator[None]:
    """A block (a suspect answering a batch) that must leave `module`'s tensors as `held` has
    them (held_tensors' names and copies): they are put back afterwards, also when the block
    fails, and a block that changed one raises ValueError naming it. A model that changes its
    own tensors while answering keeps state from one query to the next, so its verdict would
    depend on the batch size (batch norm in training mode updates its running statistics with
    no write its schema declares: a copy counted its calls so, honest on its first batch only)."""
    try:
        yield
    except BaseException:
        restore_changed(module, held)
        raise
    name = restore_changed(module, held)
    if name is not None:
        raise ValueError(f"suspect: changed its own tensor {name!r} while answering, so its answers would "
                         "depend on the queries before them; refused")
