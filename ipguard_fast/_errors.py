"""Which failures are resources running out, so that every layer reports them as such.

A model that allocates without bound fails with MemoryError, torch.OutOfMemoryError (CUDA)
or a plain RuntimeError from torch's CPU allocator ("can't allocate memory") or onnxruntime's
arena ("Failed to allocate memory"); code that
turns a model's failure into bad input ("the model fails on images of shape ...") must let
these through, and the command line reports them as exit 1 with what ran out, never as a
mistake in the arguments.
"""
from __future__ import annotations

__all__ = ["ran_out_of_memory"]

# The last: onnxruntime's arena ("BFCArena::AllocateRawInternal ... Failed to allocate memory"),
# which an ONNX suspect's Expand or ConstantOfShape to petabytes met in the confined worker.
_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
                 "failed to allocate memory")


def ran_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it came from is a failed allocation (MemoryError, torch's
    allocators, CUDA out of memory) -- also under a ValueError that wraps it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, RuntimeError) and any(word in str(exc).lower() for word in _MEMORY_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
