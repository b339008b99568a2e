"""What a suspect's worker may use (``Isolation``) and how the worker confines itself to it.

The worker calls ``confine`` before it opens the suspect's file, so whatever the file does
-- a parser bug, an operator that touches files, a loop, an allocation without end -- runs
under these limits: an address-space cap (``memory_limit`` bytes more than the worker has
when confined: after fork that is a copy of the verifier, torch included), CPU seconds,
a few open files, no file written (RLIMIT_FSIZE 0: a write or a growing file fails), no
file-system change outside its own temporary folder (Landlock, where the kernel has it),
no core file, and death with the verifier (PR_SET_PDEATHSIG). The wall-clock deadline
(``timeout``) is the verifier's to enforce: it stops a worker that is late.

On CUDA devices the address-space cap is left out: the CUDA driver reserves far more
address space than any such cap, so the worker could not start; the device's memory is
its own bound there (an out-of-memory error is reported as the resource failure it is).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile
from dataclasses import dataclass

from ..._validate import ArgumentError, finite_number, positive_int
from . import landlock

__all__ = ["MAX_RLIMIT", "MAX_TIMEOUT", "START_METHODS", "GiB", "Isolation", "confine", "memory_bytes"]

GiB = 1 << 30
START_METHODS = ("auto", "fork", "exec")
_MIN_OPEN_FILES = 16  # the interpreter, torch and the loader need a few at once
# Above these a limit means "none", but cannot be kept: a socket timeout or wait overflows past
# about 9.2e9 s, and an rlimit (what the worker has, plus memory_limit) is a signed 64-bit count.
MAX_TIMEOUT = 1e9
MAX_RLIMIT = 2**62
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Isolation:
    """Limits of the worker process that loads and runs a suspect's model file.

    memory_limit: bytes of address space the worker may add to what it has when confined.
    timeout: wall-clock seconds for loading the model, and again for each batch.
    cpu_time: CPU seconds for the worker's whole life (a backstop to ``timeout``).
    open_files: the most file descriptors the worker may hold.
    start: "fork" (fast: the verifier's interpreter is copied, torch already imported),
        "exec" (a fresh interpreter: the one way when CUDA is already initialised here),
        or "auto" (fork unless CUDA is initialised in this process).
    """

    memory_limit: int = 4 * GiB
    timeout: float = 60.0
    cpu_time: int = 3600
    open_files: int = 64
    start: str = "auto"

    def __post_init__(self):
        for name in ("memory_limit", "cpu_time"):
            if positive_int(name, getattr(self, name)) > MAX_RLIMIT:
                raise ArgumentError(name, f"must be at most 2**62, got {getattr(self, name)!r}")
        if finite_number("timeout", self.timeout, positive=True) > MAX_TIMEOUT:
            raise ArgumentError("timeout", f"must be at most {MAX_TIMEOUT:g} seconds, got {self.timeout!r}")
        if positive_int("open_files", self.open_files) < _MIN_OPEN_FILES:
            raise ArgumentError("open_files", f"must be at least {_MIN_OPEN_FILES}, got {self.open_files}")
        if self.start not in START_METHODS:
            raise ArgumentError("start", f"must be one of {START_METHODS}, got {self.start!r}")


def memory_bytes(name: str, gib) -> int:
    """``gib`` GiB as a ``memory_limit`` in bytes (at least 1), refused beyond what an rlimit can keep."""
    gib = finite_number(name, gib, positive=True)
    if gib > MAX_RLIMIT / GiB:
        raise ArgumentError(name, f"must be at most {MAX_RLIMIT // GiB} GiB, got {gib:g}")
    return max(1, round(gib * GiB))


def confine(isolation: Isolation, workdir: str, keep_fd: int, parent: int, address_space: bool = True) -> None:
    """Confine the calling (worker) process; ``keep_fd`` is its channel to the verifier."""
    _quiet_standard_streams()
    for stop in (signal.SIGINT, signal.SIGTERM):   # Ctrl-C and kill's signal are the verifier's (sent to a whole
        signal.signal(stop, signal.SIG_IGN)         # process group, a service's cgroup): it stops the worker itself
    _close_inherited_files(keep_fd)
    _die_with_parent(parent)
    os.chdir(workdir)
    for name in ("TMPDIR", "TMP", "TEMP", "HOME"):
        os.environ[name] = workdir
    tempfile.tempdir = workdir
    sys.dont_write_bytecode = True
    landlock.restrict_writes(workdir)  # before the open-file limit: it opens two descriptors
    import resource

    limits = [(resource.RLIMIT_CPU, isolation.cpu_time, isolation.cpu_time + 2),  # SIGXCPU, then SIGKILL
              (resource.RLIMIT_NOFILE, isolation.open_files, isolation.open_files),
              (resource.RLIMIT_FSIZE, 0, 0), (resource.RLIMIT_CORE, 0, 0)]
    current = _address_space()
    if address_space and current is not None:
        cap = current + isolation.memory_limit
        limits.append((resource.RLIMIT_AS, cap, cap))
    for which, soft, hard in limits:
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # a process may only lower its hard limit
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def _quiet_standard_streams() -> None:
    """Standard input, output and error on /dev/null: the model does not print to the verifier's terminal."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker


def _close_inherited_files(keep_fd: int) -> None:
    """Close every descriptor but the standard three and the channel (a forked worker has all the
    verifier's: sockets, the fingerprint file, a server's listening socket)."""
    highest = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, max(highest, keep_fd + 1))


def _die_with_parent(parent: int) -> None:
    """The kernel kills the worker when the verifier dies (Linux); a worker already orphaned exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _address_space() -> int | None:
    """This process's address space in bytes (Linux), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
