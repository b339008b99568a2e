"""Landlock (Linux 5.13 and later): after this, the calling process writes only beneath one folder.

Landlock is the kernel's sandbox for unprivileged processes, reached through three system
calls and no library. The worker that runs a suspect's model calls ``restrict_writes``
before it loads the file: every way of changing the file system (writing or truncating a
file, which also covers a writable shared mapping, creating, removing, renaming or linking
anything) is refused outside its temporary folder. Reading stays allowed, so Python and
torch keep importing. Newer kernels also lose the worker TCP connections (ABI 4) and
signals and abstract sockets aimed outside its sandbox (ABI 6), so it cannot signal the
verifier. On a kernel without Landlock, or off Linux, nothing is restricted and 0 is returned.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys

__all__ = ["abi_version", "restrict_writes"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same number on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_*: every right that changes the file system, by the ABI that added it.
_WRITE_RIGHTS = {
    1: (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12),
    2: 1 << 13,  # REFER (link or rename across folders)
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
_NET_TCP = (1 << 0) | (1 << 1)              # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)               # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)


def _syscall():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or this is not Linux)."""
    if not sys.platform.startswith("linux"):  # the system call numbers mean something else elsewhere
        return 0
    try:
        version = _syscall().syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                                     ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def restrict_writes(folder: str) -> int:
    """Allow file-system changes only beneath ``folder``, for this process and its children,
    for good. Returns the Landlock ABI version used (0: not available, nothing restricted)."""
    abi = abi_version()
    if abi < 1:
        return 0
    libc = _syscall()
    rights = sum(bits for version, bits in _WRITE_RIGHTS.items() if version <= abi)
    fields = [rights] + ([_NET_TCP] if abi >= 4 else []) + ([_SCOPES] if abi >= 6 else [])
    attr = struct.pack(f"<{len(fields)}Q", *fields)
    ruleset = libc.syscall(ctypes.c_long(_CREATE_RULESET), attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            rule = struct.pack("<Qi", rights, folder_fd)  # struct landlock_path_beneath_attr, packed
            if libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_long(ruleset), ctypes.c_long(_RULE_PATH_BENEATH),
                            rule, ctypes.c_uint32(0)) < 0:
                raise OSError(ctypes.get_errno(), "landlock_add_rule failed")
        finally:
            os.close(folder_fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi
