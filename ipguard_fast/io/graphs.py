"""Every graph a suspect's model would run, checked before it runs: its operators and its writes.

Operators: every call must name an operator on the allowlist (operators.py) -- every node of
every function a TorchScript file compiles to (methods of every submodule and class, free
functions, nested blocks), every call of an exported program's graphs.

Writes: an in-place operator (its schema marks the argument written, ``Tensor(a!)``) may only
write into a tensor the graph made itself, or a view of one. Writing into an input would
change the verifier's own tensors (the fingerprint images); writing into a weight, a buffer,
a constant or a module attribute would give the model a memory from one query to the next.
TorchScript's forward is checked with every call inlined, so a submodule's ``relu_`` on what
its caller computed is a local write; a call that cannot be inlined is refused; the top-level
module's forward hooks, which run outside forward's graph, are checked each on its own graph.
Writes no schema declares -- a norm's running statistics in training mode -- are seen where
the training flag is a constant (RUNNING_STATISTICS); for a flag computed at run time the
verifier checks after every call that a suspect's tensors are unchanged (verdicts.py).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from .operators import refusal
from .weights import ModelLoadError

__all__ = ["RUNNING_STATISTICS", "UNCHECKED_STATISTICS", "check_operator", "check_script_module", "check_writes"]


def _refuse(label: str, operator: str, where: str, reason: str) -> ModelLoadError:
    return ModelLoadError(f"{label}: refused: {where} calls {operator}, which is not a pure tensor operator "
                          f"({reason}); nothing of the model ran")


def check_operator(operator: str, where: str, label: str) -> None:
    """ModelLoadError unless ``namespace::name`` is on the allowlist."""
    reason = refusal(operator)
    if reason is not None:
        raise _refuse(label, operator, where, reason)


# --- TorchScript -------------------------------------------------------------------------------

def _script_nodes(block: Any) -> Iterator[Any]:
    """Every node of a graph or block, each before the nodes of its own blocks (no recursion)."""
    stack = [iter(block.nodes())]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        yield node
        stack.extend(iter(sub.nodes()) for sub in reversed(list(node.blocks())))


def check_script_module(unit: torch._C.CompilationUnit, module: torch.jit.ScriptModule, label: str) -> None:
    """Check every function of the compilation unit ``module`` was loaded into, then its forward's writes."""
    graphs = {function.qualified_name: function.graph for function in unit.get_functions()}
    for submodule in module.modules():
        kind = submodule._c._type().qualified_name()
        for name in submodule._c._method_names():
            graphs.setdefault(f"{kind}.{name}", submodule._c._get_method(name).graph)
    for name, graph in graphs.items():
        for node in _script_nodes(graph):
            check_operator(node.kind(), f"TorchScript function {name}", label)
            if node.kind() in UNCHECKED_STATISTICS:   # TorchScript records no sizes to check them by
                raise _refuse(label, node.kind(), f"TorchScript function {name}",
                              "it reads and writes its statistics at the input's channel count, unchecked; "
                              "aten::batch_norm checks them")
    if not module._c._has_method("forward"):
        raise ModelLoadError(f"{label}: refused: the TorchScript module has no forward method")
    forward = module._c._get_method("forward").graph.copy()
    torch._C._jit_pass_inline(forward)
    _check_script_writes(forward, label, "the TorchScript forward (inlined)")
    # The top-level module's own hooks run on every call, outside forward's graph (a submodule's
    # are called from its caller's graph, so inlined above): their writes are checked on their
    # own graphs, where the module and the call's inputs and outputs are not the hook's to write.
    for hook in module._c._get_forward_pre_hooks() + module._c._get_forward_hooks():
        graph = hook.graph.copy()
        torch._C._jit_pass_inline(graph)
        _check_script_writes(graph, label, f"the TorchScript hook {hook.name!r} (inlined)")


# Operators whose schema declares no alias but which return their input itself or a view of it:
# type_as (the same tensor when the types agree), dropout when not training, _unsafe_view,
# broadcast_tensors and einsum (views of their list). Their output is the graph's own only when
# their first tensor argument is (else `x.type_as(x).mul_(0)` would write into the caller's input).
UNDECLARED_ALIASES = frozenset({"aten::type_as", "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
                                "aten::_unsafe_view", "aten::broadcast_tensors", "aten::einsum"})

# Batch norms that index weight, bias and running statistics by the input's channel count
# without checking their sizes (a 1-element bias read past its storage, a 1-element running
# mean written past it): on the allowlist because core-ATen exports use the second, and
# accepted only where the exported graph shows every size (check_exported_program).
UNCHECKED_STATISTICS = frozenset({"aten::native_batch_norm", "aten::_native_batch_norm_legit_no_training"})

# Norms that update their running statistics (arguments 3 and 4) in place when the flag at
# `index` is true -- a write no schema declares: such a flag given as a constant true makes
# them writes (a copy counted its calls in a buffer so); a flag computed at run time is left
# to the verifier's check that a suspect's tensors are unchanged after each call.
RUNNING_STATISTICS = {"aten::batch_norm": 5, "aten::instance_norm": 5, "aten::native_batch_norm": 5}

_PASS_THROUGH = {"prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
                 "prim::TupleIndex", "prim::TupleSlice", "prim::DictConstruct", "prim::unchecked_cast",
                 "prim::unchecked_unwrap_optional", "aten::__getitem__", "aten::list"}
_FRESH = {"prim::CreateObject", "prim::NumToTensor"}


def _check_script_writes(graph: Any, label: str, where: str) -> None:
    """Refuse writes into what the forward did not make. A list or dict the graph made may be
    written, but once one receives a tensor the graph did not make (``l.append(self.buffer)``,
    ``d[k] = x``, ``l += [w]``), nothing taken out of a container counts as the graph's own: the
    check runs again so (a loop may read an element before the node that puts it there)."""
    if _script_write_pass(graph, label, where, trusted_containers=True):
        _script_write_pass(graph, label, where, trusted_containers=False)


def _script_write_pass(graph: Any, label: str, where: str, trusted_containers: bool) -> bool:
    """One pass of the write check; whether a container received a tensor the graph did not make."""
    local: set[int] = set()  # unique() of the values the graph made
    fresh: set[int] = set()  # unique() of the lists and dicts the graph made, whatever they hold
    foreign = False
    for node in _script_nodes(graph):
        kind, inputs = node.kind(), list(node.inputs())
        if kind in ("prim::CallMethod", "prim::CallFunction"):
            raise ModelLoadError(f"{label}: refused: {where} makes a call TorchScript cannot inline ({kind}), "
                                 "so what it writes cannot be checked")
        if kind == "prim::SetAttr" and inputs[0].unique() not in local:
            raise ModelLoadError(f"{label}: refused: {where} sets the model's attribute "
                                 f"{node.s('name')!r}, which would keep state from one query to the next")
        schema = _script_schema(node)
        made = check_writes(kind, schema, inputs, lambda value: value.unique() in local, where, label,
                            writable=lambda value: value.unique() in fresh)
        foreign = foreign or _puts_foreign_into_container(schema, inputs, local)
        if made is None and kind in _PASS_THROUGH:   # a container of (or taken out of) the graph's own tensors
            made = all(value.unique() in local for value in inputs if _may_hold_tensors(value.type()))
        made = (made or kind in _FRESH) and (trusted_containers or not _takes_out(kind, schema, node))
        if made:
            local.update(value.unique() for value in node.outputs())
        if kind in ("prim::ListConstruct", "prim::DictConstruct"):
            fresh.update(value.unique() for value in node.outputs())
    return foreign


_CONSTRUCTS = {"prim::ListConstruct", "prim::TupleConstruct", "prim::DictConstruct"}
# Types whose values neither are nor hold a tensor (anything else may: a type variable, an object).
_TENSOR_FREE = frozenset({"IntType", "FloatType", "BoolType", "StringType", "NoneType", "NumberType", "ComplexType",
                          "DeviceObjType", "SymIntType", "SymFloatType", "SymBoolType", "LayoutType",
                          "ScalarTypeType", "MemoryFormatType"})


def _may_hold_tensors(kind: Any) -> bool:
    """Whether a value of this (schema or graph) type can be a tensor or hold one by reference."""
    contained = kind.containedTypes()
    if contained:
        return any(_may_hold_tensors(part) for part in contained)
    return kind.kind() not in _TENSOR_FREE


def _is_container(kind: Any) -> bool:
    return bool(kind.containedTypes()) and _may_hold_tensors(kind)


def _puts_foreign_into_container(schema: torch._C.FunctionSchema | None, inputs: list[Any], local: set[int]) -> bool:
    """Whether the node writes into a list or dict (append, item assignment, +=) a tensor the graph did not make."""
    if schema is None or not any(argument.alias_info is not None and argument.alias_info.is_write
                                 and _is_container(value.type()) for argument, value in zip(schema.arguments, inputs)):
        return False
    return any(value.unique() not in local and _may_hold_tensors(value.type()) for value in inputs)


def _takes_out(kind: str, schema: torch._C.FunctionSchema | None, node: Any) -> bool:
    """Whether the node's outputs may be (or hold) what it takes out of a container argument
    (``l[i]``, unpacking, ``d.values()``), as opposed to a tensor it computes (``torch.cat(l)``)."""
    if kind in _CONSTRUCTS or not any(_is_container(value.type()) for value in node.inputs()):
        return False
    if schema is not None and kind not in UNDECLARED_ALIASES and all(
            isinstance(ret.type, torch._C.TensorType) and ret.alias_info is None for ret in schema.returns):
        return False
    return any(_may_hold_tensors(value.type()) for value in node.outputs())


def _script_schema(node: Any) -> torch._C.FunctionSchema | None:
    if not node.kind().startswith("aten::"):
        return None
    try:
        return torch._C.parse_schema(node.schema())
    except RuntimeError:  # "(no schema)": refused by the caller's rules for unknown nodes
        return None


def check_writes(operator: str, schema: torch._C.FunctionSchema | None, args: list[Any],
                 is_local: Callable[[Any], bool], where: str, label: str,
                 writable: Callable[[Any], bool] | None = None) -> bool | None:
    """Refuse a write into a value the graph did not make; whether the outputs are the graph's own
    (None: no schema, the caller decides). `writable`: containers the graph made (``[x]``), which a
    generic list or dict operator (append, insert, item assignment: it never writes an element's
    data) may change although they hold what the graph did not make."""
    if schema is None:
        return None
    aliased = []
    for argument, value in zip(schema.arguments, args):
        info = argument.alias_info
        if info is None or value is None:
            continue
        if info.is_write and not is_local(value) and not (writable is not None and _generic_container(argument.type)
                                                          and writable(value)):
            raise ModelLoadError(f"{label}: refused: {where} calls {operator}, which writes into "
                                 f"{argument.name!r}: an input, a weight or a constant, not a tensor the graph made")
        aliased.append(value)
    flag = RUNNING_STATISTICS.get(operator)
    if flag is not None and len(args) > flag and _constant_true(args[flag]):
        for index in (3, 4):
            if args[index] is not None and not _constant_none(args[index]) and not is_local(args[index]):
                raise ModelLoadError(f"{label}: refused: {where} calls {operator} in training mode, which writes "
                                     f"its running statistics into {schema.arguments[index].name!r}: an input, a "
                                     "weight or a constant, not a tensor the graph made")
    if operator in UNDECLARED_ALIASES:   # the result may be its first tensor argument, or views of it
        source = next((value for argument, value in zip(schema.arguments, args) if _holds_tensors(argument.type)),
                      None)
        return source is None or is_local(source)
    holding = [value for argument, value in zip(schema.arguments, args) if _may_hold_tensors(argument.type)]
    returns = [ret.alias_info for ret in schema.returns if ret.alias_info is not None]
    if any("*" in info.before_set for info in returns):  # l[i], d[k], d.values(): what any argument holds
        return all(is_local(value) for value in holding)
    if returns:  # a view of (or the same as) an argument
        return all(is_local(value) for value in aliased)
    if not all(isinstance(ret.type, torch._C.TensorType) for ret in schema.returns):  # list(l): its elements
        return all(is_local(value) for value in holding)
    return True


def _constant_true(value: Any) -> bool:
    """Whether a graph argument is the constant true (an exported graph's literal, a TorchScript constant)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, torch._C.Value) and value.node().kind() == "prim::Constant":
        return value.toIValue() is True
    return False


def _constant_none(value: Any) -> bool:
    return isinstance(value, torch._C.Value) and value.node().kind() == "prim::Constant" and value.toIValue() is None


def _generic_container(kind: Any) -> bool:
    """Whether a schema argument of this type is a list or dict of a type variable (``t[]``,
    ``Dict(str, t)``): its operator restructures the container, never its elements' data."""
    contained = kind.containedTypes() if isinstance(kind, (torch._C.ListType, torch._C.DictType)) else []
    return bool(contained) and contained[-1].kind() == "VarType"


def _holds_tensors(kind: Any) -> bool:
    """Whether a schema argument of this type is a tensor or a list of tensors."""
    if isinstance(kind, torch._C.ListType):
        kind = kind.getElementType()
    return isinstance(kind, torch._C.TensorType)
