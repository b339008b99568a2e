"""Model files and formats in, objects out (and back): TorchScript, torch.export (.pt2),
package.module:factory specs with safetensors weights, and ONNX."""
from .models import load_model, save_exported, save_torchscript
from .suspects import calibrate_threshold, load_suspect, matching_rate, resolve_suspect, verify
from .weights import ModelLoadError, load_weights, read_state_dict

__all__ = ["ModelLoadError", "calibrate_threshold", "load_model", "load_suspect", "load_weights", "matching_rate",
           "read_state_dict", "resolve_suspect", "save_exported", "save_torchscript", "verify"]
