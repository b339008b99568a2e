"""ipguard export: a model as ONNX, TorchScript or torch.export (.pt2), batch axis dynamic."""
from __future__ import annotations

import sys

from ..io.formats import DEFAULT_OPSET, EXPORT_FORMATS
from .common import add_model_arguments, named_as_options, shape_arg


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--input-shape", type=shape_arg, required=True,
                        help="shape of one image without the batch axis, e.g. 1,8,8")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                        help="output format (default onnx)")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")


def run(args) -> int:
    """Exit 0 on success, 1 when the exporter failed on this model, 2 on bad input."""
    from .._files import check_writable_output
    from .._validate import ArgumentError
    from ..io import export_model, load_model
    from ..io.formats.onnx import check_opset
    from ..search.api import probe_classifier

    if args.format == "onnx":   # before any work, as every other option
        with named_as_options(_OPTIONS):
            check_opset(args.opset)
    check_writable_output("--out", args.out, [args.model, args.weights])
    model = load_model(args.model, args.weights)
    with named_as_options(_OPTIONS):
        probe_classifier(model, args.input_shape, "cpu")   # a wrong --input-shape is bad input, not an export failure
    try:
        with named_as_options(_OPTIONS):
            path = export_model(model, args.input_shape, args.out, format=args.format, opset=args.opset)
    except (ImportError, ArgumentError):
        raise
    except Exception as exc:  # exporters raise many types; report them in one line
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__  # TorchScript errors end with the real message
        print(f"ipguard export: error: cannot export {args.model} as {args.format}: {reason}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


# the exporters' argument names -> the options that set them
_OPTIONS = {"input_shape": "--input-shape", "opset": "--opset", "path": "--out", "format": "--format",
            "model": "--model"}
