"""An exported program's graph checked before it runs (graphs.py's rules, applied to the
deserialised torch.export program): every call on the operator allowlist, no write into an
input, a weight or a constant, and the batch norms that take their statistics' sizes on
trust only where the graph shows every size."""
from __future__ import annotations

import operator as _operator
from typing import Any

import torch

from .graphs import UNCHECKED_STATISTICS, check_writes, check_operator
from .operators import SYMBOLIC_TARGETS
from .weights import ModelLoadError

__all__ = ["check_exported_program"]


def _exported_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', repr(target))}"


def check_exported_program(program: torch.export.ExportedProgram, label: str) -> None:
    """Check every call of every graph of a deserialised program, then the writes of its graph."""
    for graph_module in program.graph_module.modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        for node in graph_module.graph.nodes:
            if node.op in ("call_module", "call_method"):
                raise ModelLoadError(f"{label}: refused: the exported graph has a {node.op} node ({node.target})")
            if node.op != "call_function" or node.target is _operator.getitem:
                continue
            name = _exported_name(node.target)
            if name not in SYMBOLIC_TARGETS:
                check_operator(name, "the exported graph", label)
    local: set[torch.fx.Node] = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is _operator.getitem:
            made = node.args[0] in local
        else:
            schema = getattr(node.target, "_schema", None)
            args = [node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
                    for i, argument in enumerate(schema.arguments)] if schema is not None else []
            name = _exported_name(node.target)
            if name in UNCHECKED_STATISTICS:
                _check_statistics_sizes(name, args, label)
            made = check_writes(name, schema, args, lambda value: _exported_local(value, local),
                                "the exported graph", label)
        if made is not False:
            local.add(node)


def _exported_local(value: Any, local: set) -> bool:
    """Whether an exported call's argument is the graph's own: a node it made, a literal, or a
    list or tuple of those (a list of its inputs or buffers, given to broadcast_tensors, made
    their views writable)."""
    if isinstance(value, (list, tuple)):
        return all(_exported_local(item, local) for item in value)
    return not isinstance(value, torch.fx.Node) or value in local


def _check_statistics_sizes(operator: str, args: list[Any], label: str) -> None:
    """An unchecked batch norm (UNCHECKED_STATISTICS) only where the graph records its input's
    channel count and every statistic (weight, bias, running mean and variance) is that long."""
    def shape(value: Any) -> tuple | None:
        fake = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
        return tuple(fake.shape) if isinstance(fake, torch.Tensor) else None

    given = shape(args[0]) if args else None
    if given is None or len(given) < 2 or not all(isinstance(size, int) for size in given[:2]):
        raise ModelLoadError(f"{label}: refused: the exported graph calls {operator} on an input whose channel "
                             "count it does not record, so the sizes of its statistics cannot be checked")
    for value in args[1:5]:
        if value is not None and shape(value) != (given[1],):
            raise ModelLoadError(f"{label}: refused: the exported graph calls {operator} with a statistic of "
                                 f"shape {shape(value)} for {given[1]} channels: it would read or write past it")
