"""Model files and formats in, objects out (and back): TorchScript, torch.export (.pt2),
package.module:factory specs with safetensors weights, and ONNX -- one module per format
in formats/, picked by formats.format_of. A suspect's file is run apart, in a confined worker
process (sandbox/)."""
from .formats import (EXPORT_FORMATS, FORMATS, OnnxSuspect, export_model, export_onnx, format_of, load_model,
                      load_suspect, load_trainable_model, require_trainable, save_exported, save_torchscript)
from .sandbox import IsolatedSuspect, Isolation, SuspectFailed, SuspectResourceError, run_isolated_extraction
from .suspects import calibrate_threshold, matching_rate, resolve_suspect, verify, verify_parts
from .weights import ModelLoadError, load_weights, read_state_dict

__all__ = ["EXPORT_FORMATS", "FORMATS", "IsolatedSuspect", "Isolation", "ModelLoadError", "OnnxSuspect",
           "SuspectFailed", "SuspectResourceError", "calibrate_threshold", "export_model", "export_onnx", "format_of",
           "load_model", "load_suspect", "load_trainable_model", "load_weights", "matching_rate", "read_state_dict",
           "require_trainable", "resolve_suspect", "run_isolated_extraction", "save_exported", "save_torchscript",
           "verify", "verify_parts"]
