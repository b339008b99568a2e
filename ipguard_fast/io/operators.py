"""The operators a suspect's graph may call: pure tensor computations, listed in one place.

A suspect's model runs on the verifier's machine. "Any registered operator" is not a safe
rule: ``aten::from_file(shared=True)`` maps a file writably, ``aten::save`` writes one,
others print, profile, or reseed the global random generators. So every call in a ``.pt2``
graph and every node of every TorchScript function must name an operator listed here (by its
name, any overload): ATen operators that compute tensors from tensors, and the TorchScript
primitives that move values around (constants, attributes, lists, tuples, control flow).
Anything else, another namespace included, is refused before the model runs, naming the
operator. Writes into tensors are checked apart (graphs.py): an in-place operator may only
write into a tensor the graph itself made.
"""
from __future__ import annotations

import math
import operator
import re

__all__ = ["ATEN_OPERATORS", "PRIM_OPERATORS", "SYMBOLIC_TARGETS", "exported_operator", "refusal"]

_COMPUTE = """
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution _convolution
    linear addmm mm bmm matmul baddbmm addmv mv dot einsum
    relu relu6 hardtanh leaky_relu elu selu celu gelu silu mish sigmoid tanh hardsigmoid hardswish softplus
    prelu _prelu_kernel glu log_sigmoid threshold
    softmax log_softmax _softmax _log_softmax logsumexp
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices avg_pool1d avg_pool2d avg_pool3d
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d adaptive_max_pool1d
    adaptive_max_pool2d upsample_nearest2d upsample_bilinear2d pixel_shuffle
    batch_norm _native_batch_norm_legit_no_training native_batch_norm layer_norm native_layer_norm group_norm
    native_group_norm instance_norm rms_norm dropout feature_dropout alpha_dropout
    add sub rsub mul div neg abs pow sqrt rsqrt exp log log2 log1p expm1 reciprocal square
    clamp clamp_min clamp_max clip minimum maximum floor ceil round trunc sign sin cos erf remainder fmod
    floor_divide where masked_fill lerp eq ne lt le gt ge logical_and logical_or logical_not
    bitwise_and bitwise_or bitwise_not isnan isfinite
    sum mean amax amin max min argmax argmin prod std var var_mean norm linalg_vector_norm cumsum topk sort
    scaled_dot_product_attention embedding
    zeros ones full zeros_like ones_like full_like arange scalar_tensor tensor fill zero copy clone
    to _to_copy type_as contiguous detach alias lift_fresh_copy
"""
_SHAPES = """
    view reshape _unsafe_view permute transpose t flatten unflatten squeeze unsqueeze expand
    expand_as view_as reshape_as movedim cat concat stack split split_with_sizes chunk unbind narrow slice
    select index_select gather index flip roll repeat tile pad constant_pad_nd reflection_pad1d
    reflection_pad2d replication_pad1d replication_pad2d broadcast_tensors
    size sym_size sym_numel sym_stride numel dim _assert_tensor_metadata _assert_scalar
    sym_constrain_range_for_size
"""
# TorchScript spells Python's own builtins on ints, floats, lists and dicts as aten operators.
_SCRIPT_BUILTINS = """
    __getitem__ __is__ __isnot__ __not__ __and__ __or__ __contains__ __derive_index __range_length
    len append list dict keys values items _set_item Int Float Bool ScalarImplicit IntImplicit FloatImplicit
    floordiv format str is_floating_point
"""
# In-place variants, allowed as local writes (graphs.py refuses a write into an input or a weight).
_IN_PLACE = """
    relu_ relu6_ hardtanh_ leaky_relu_ elu_ selu_ celu_ silu_ mish_ sigmoid_ tanh_ hardsigmoid_ hardswish_
    add_ sub_ mul_ div_ neg_ clamp_ clamp_min_ clamp_max_ masked_fill_ fill_ zero_ copy_
    dropout_ feature_dropout_ alpha_dropout_
"""
ATEN_OPERATORS = frozenset((_COMPUTE + _SHAPES + _SCRIPT_BUILTINS + _IN_PLACE).split())

PRIM_OPERATORS = frozenset("""
    Constant GetAttr SetAttr CallMethod CallFunction CreateObject ListConstruct ListUnpack TupleConstruct
    TupleUnpack TupleIndex TupleSlice DictConstruct If Loop RaiseException Uninitialized unchecked_cast
    unchecked_unwrap_optional isinstance NumToTensor dtype device layout min max abs requires_grad is_cuda
""".split())

# .pt2 call targets besides ATen operators: the symbolic-integer helpers torch serialises by
# module path (torch._export.serde.serialize._SYM_OPS).
SYMBOLIC_TARGETS = frozenset(
    [f"{op.__module__}.{op.__name__}" for op in (
        operator.eq, operator.ne, operator.le, operator.ge, operator.lt, operator.gt, operator.neg, operator.pos,
        math.trunc, operator.mul, operator.add, operator.sub, operator.floordiv, operator.mod, operator.pow,
        operator.truediv, operator.and_, operator.or_, operator.lshift, operator.rshift)]
    + [f"torch.{name}" for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")])

_EXPORTED = re.compile(r"torch\.ops\.(?P<space>[A-Za-z_][A-Za-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(?:\.[A-Za-z_][A-Za-z0-9_]*)?")

# Why the best-known unsafe operators are refused, for the message (the allowlist decides).
_REASONS = (
    (re.compile(r"from_file|save|load|file|pipe|socket|pickle|mmap", re.I), "it reads or writes files or streams"),
    (re.compile(r"seed|rng|generator", re.I), "it sets the global random state"),
    (re.compile(r"print|warn|log_api", re.I), "it prints"),
    (re.compile(r"profil|record|trace|enter|exit", re.I), "it drives the profiler or a global mode"),
    (re.compile(r"^set_|resize|storage|as_strided|_reshape_alias|^empty", re.I), "it re-points or exposes raw tensor memory"),
    (re.compile(r"python|interpreter|fusion|differentiable", re.I), "it calls out of the graph"),
)


def exported_operator(target: str) -> str | None:
    """``namespace::name`` of a ``.pt2`` call target ``torch.ops.<namespace>.<name>[.<overload>]``, else None."""
    match = _EXPORTED.fullmatch(target)
    return f"{match['space']}::{match['name']}" if match else None


def refusal(operator: str) -> str | None:
    """None when ``namespace::name`` is allowed, else why it is refused (for the message)."""
    space, _, name = operator.partition("::")
    allowed = ATEN_OPERATORS if space == "aten" else PRIM_OPERATORS if space == "prim" else None
    if allowed is not None and name in allowed:
        return None
    for pattern, reason in _REASONS:
        if pattern.search(name):
            return reason
    if allowed is None:
        return f"the {space!r} namespace is not torch's own"
    return "it is not on the list of pure tensor operators"
