"""Which tensors of an ONNX model read their bytes from another file ("external data").

A suspect's ONNX file comes from the accused party. onnxruntime refuses absolute and
escaping external-data paths, but reads any file beside the model: a suspect whose weights
are `fingerprints.safetensors` read the verifier's own fingerprints while it was judged.
OnnxSuspect therefore parses the file's bytes, refuses it when any tensor anywhere in it
(initializers, sparse ones, node attributes, subgraphs of If/Loop/Scan, local functions and
their default attribute values, training graphs) is external, and hands onnxruntime those same bytes, never the path.
"""
from __future__ import annotations

from typing import Iterator

__all__ = ["external_tensors"]


def external_tensors(model) -> Iterator[tuple[str, str]]:
    """(tensor name, the file it names) for every tensor of `model` (an onnx.ModelProto)
    whose data lives outside it. Walks with a stack: a hostile file may nest subgraphs deep."""
    from onnx import TensorProto

    pending: list = [("graph", model.graph)] + [("node", node) for f in model.functions for node in f.node]
    # A local function's default attribute values are tensors and graphs too (a Constant node in
    # the function takes its value from one): onnxruntime read one naming a file beside the model.
    pending += [("attribute", attr) for f in model.functions for attr in f.attribute_proto]
    pending += [("graph", g) for info in model.training_info for g in (info.initialization, info.algorithm)]
    while pending:
        kind, item = pending.pop()
        if kind == "tensor":
            if item.data_location == TensorProto.EXTERNAL or len(item.external_data) > 0:
                where = {entry.key: entry.value for entry in item.external_data}.get("location", "?")
                yield item.name, where
        elif kind == "graph":
            pending += [("tensor", t) for t in item.initializer]
            pending += [("tensor", t) for sparse in item.sparse_initializer for t in (sparse.values, sparse.indices)]
            pending += [("node", node) for node in item.node]
        elif kind == "node":   # its attributes hold tensors and subgraphs
            pending += [("attribute", attr) for attr in item.attribute]
        else:
            attr = item
            pending += [("tensor", attr.t)] if attr.HasField("t") else []
            pending += [("tensor", t) for t in attr.tensors]
            sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors)
            pending += [("tensor", t) for s in sparse for t in (s.values, s.indices)]
            pending += [("graph", attr.g)] if attr.HasField("g") else []
            pending += [("graph", g) for g in attr.graphs]
