"""Hostile suspects run apart: a suspect's model file is loaded and run by a confined worker process.

The trust boundary: a model file from a suspect is hostile (its author is the party accused
of copying), the verifier's own objects are not. So a path given as a suspect goes to a
worker process that confines itself (limits.py: memory, CPU time, open files, no file
written, no file-system change outside its temporary folder, death with the verifier),
then loads the file and answers batches of images over a socket in plain sized bytes
(wire.py); the verifier stops it at a wall-clock deadline. A module the caller already holds
stays in the caller's process: it is the caller's own object.

The same worker extracts fingerprints from a model file (the search needs gradients through
the model, so all of it runs there: worker_extraction.py, extraction.py) and answers a
server's requests (``ipguard serve`` calls an IsolatedSuspect per batch).

``IsolatedSuspect`` (suspect.py) is the verifier's side; ``run_isolated_extraction``
(extraction.py) the extractor's; ``Isolation`` (limits.py) the limits.
"""
from .extraction import run_isolated_extraction
from .limits import GiB, Isolation
from .suspect import IsolatedSuspect, SuspectFailed, SuspectResourceError

__all__ = ["GiB", "IsolatedSuspect", "Isolation", "SuspectFailed", "SuspectResourceError", "run_isolated_extraction"]
