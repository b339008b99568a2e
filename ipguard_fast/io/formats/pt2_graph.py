"""The checks of an exported program's JSON (``models/<name>.json`` of a ``.pt2``), before torch parses it.

What ``torch.export.load`` would execute from this JSON, and what is accepted:

- call targets, looked up by name on ``torch``, ``operator`` and ``math`` (``torch.os.system``
  resolves): only operators on the allowlist (io/operators.py) and the symbolic-integer
  helpers torch itself serialises;
- symbolic-shape expressions, parsed with ``sympy.sympify`` (``eval``): only symbols,
  numbers and sympy / torch shape functions;
- ``guards_code``, compiled into Python: none;
- the signature: inputs are user inputs, parameters, buffers and constants, outputs are user
  outputs only (no input or buffer mutation, which the loaded module would copy back into
  the caller's tensors or its own state, no effect tokens, custom objects or gradients).
"""
from __future__ import annotations

import re
from typing import Any, Iterator

from ..graphs import check_operator
from ..operators import SYMBOLIC_TARGETS, exported_operator
from ..weights import ModelLoadError

__all__ = ["check_program"]

_MAX_DEPTH = 200
_INPUT_KINDS = {"user_input", "parameter", "buffer", "tensor_constant", "constant_input"}
_OUTPUT_KINDS = {"user_output"}

# Shape expressions: sympy's printed forms of symbols, numbers and shape functions.
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And",
    "Or", "Not", "Piecewise", "ITE", "floor", "ceiling", "sqrt", "oo", "zoo", "nan", "true", "false", "True", "False",
    "None", "S", "Half", "One", "Zero", "NegativeOne", "Infinity", "NegativeInfinity",
    # keyword arguments of Symbol(...)
    "positive", "negative", "integer", "real", "nonnegative", "nonpositive", "finite", "infinite", "commutative",
    "zero", "nonzero", "even", "odd", "rational", "prime",
    # torch.utils._sympy.functions, as ExportedProgramDeserializer registers them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "OpaqueUnaryFn_sqrt", "Identity",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "Max", "Min",
}
_SYMBOL_NAME = re.compile(r"[a-z]{1,8}\d+")
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'[A-Za-z_][A-Za-z0-9_]*')|(?P<op>\*\*|//|[<>!=]=|[-+*/%(),=<>~&|]))")


def check_program(program: Any, where: str, label: str) -> None:
    """ModelLoadError (naming ``label`` and ``where``) unless the program passes every check of the module doc."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ModelLoadError(f"{label}: refused: {where} is not an exported program")
    if program.get("guards_code"):
        raise ModelLoadError(f"{label}: refused: {where} carries guards code, which torch compiles into Python")
    for key in (program.get("range_constraints") or {}):
        if not _SYMBOL_NAME.fullmatch(str(key)):
            raise ModelLoadError(f"{label}: refused: {where} has the symbol name {str(key)[:40]!r}")
    _check_signature(program["graph_module"].get("signature"), where, label)
    for kind, value in _strings_to_check(program, 0, where, label):
        if kind == "target":
            _check_target(value, where, label)
        else:
            _check_expression(value, where, label)


def _check_signature(signature: Any, where: str, label: str) -> None:
    if not isinstance(signature, dict):
        raise ModelLoadError(f"{label}: refused: {where} has no graph signature")
    for specs, allowed in (("input_specs", _INPUT_KINDS), ("output_specs", _OUTPUT_KINDS)):
        for spec in signature.get(specs) or []:
            kinds = list(spec) if isinstance(spec, dict) else [repr(spec)[:40]]
            if len(kinds) != 1 or kinds[0] not in allowed:
                raise ModelLoadError(f"{label}: refused: {where} declares {', '.join(kinds)} among its {specs} "
                                     f"(only {', '.join(sorted(allowed))}): the loaded model would write into "
                                     "the caller's tensors or keep state, or carry objects")


def _strings_to_check(node: Any, depth: int, where: str, label: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of every call target and every symbolic expression in the program."""
    if depth > _MAX_DEPTH:
        raise ModelLoadError(f"{label}: refused: {where} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("target", "as_operator") and isinstance(value, str):
                yield "target", value
            elif key == "expr_str" and isinstance(value, str):
                yield "expr", value
            else:
                yield from _strings_to_check(value, depth + 1, where, label)
    elif isinstance(node, list):
        for value in node:
            yield from _strings_to_check(value, depth + 1, where, label)


def _check_target(target: str, where: str, label: str) -> None:
    if target in SYMBOLIC_TARGETS:
        return
    operator = exported_operator(target)
    if operator is None:
        raise ModelLoadError(f"{label}: refused: {where} calls {target[:80]!r}, which is not a registered operator")
    check_operator(operator, where, label)


def _check_expression(text: str, where: str, label: str) -> None:
    """sympy.sympify evaluates the text as Python: allow only symbols, numbers and shape functions."""
    position = 0
    while position < len(text):
        match = _EXPR_TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                return
            raise ModelLoadError(f"{label}: refused: {where} has the shape expression {text[:60]!r}, which is not "
                                 "a plain sympy expression")
        token = match["name"]
        if token is not None and token not in _SYMPY_NAMES and not _SYMBOL_NAME.fullmatch(token):
            raise ModelLoadError(f"{label}: refused: {where} has the shape expression {text[:60]!r}, which uses "
                                 f"{token!r}")
        position = match.end()
