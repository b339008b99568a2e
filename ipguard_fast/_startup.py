"""Ctrl-C while the `ipguard` command is still starting (importing torch takes seconds): exit
130 with one line, as the command does later, not Python's traceback of the import.

`quiet_interrupts_while_starting()` runs first thing in the package's `__init__`; it changes
nothing unless this process is the command starting (`python -m ipguard_fast`, or the
`ipguard` console script), and then only a default SIGINT handler (a caller's own handler or
SIG_IGN stays). `cli.main` gives the default back (`resume_interrupts`) before any work, where
its own Ctrl-C handling takes over. Cheap: no import beyond os, re, signal and sys.
"""
from __future__ import annotations

import os
import re
import signal
import sys

__all__ = ["quiet_interrupts_while_starting", "resume_interrupts"]

_CLUSTER = re.compile(r"-[bBdEhiIOPqsSuvx]*m(.*)")   # -m, -mNAME, -Im NAME ...


def _module_being_run() -> str | None:
    """The module `python -m` is locating while it imports it (sys.argv[0] is "-m" then)."""
    if sys.argv[:1] != ["-m"]:
        return None
    args = list(getattr(sys, "orig_argv", ()))[1:]
    skip = False
    for index, arg in enumerate(args):
        if skip or arg in ("-W", "-X"):   # these take a value
            skip = not skip
            continue
        found = _CLUSTER.fullmatch(arg)
        if found:
            return found.group(1) or (args[index + 1] if index + 1 < len(args) else None)
        if not arg.startswith("-") or arg == "-c":
            return None
    return None


def _is_command_starting() -> bool:
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) if main is not None and main.__spec__ is None else None
    return _module_being_run() == __package__ or os.path.basename(script or "") == "ipguard"


def _interrupted(signum, frame):
    print("ipguard: interrupted", file=sys.stderr)
    raise SystemExit(130)


def quiet_interrupts_while_starting() -> None:
    """Ctrl-C exits 130 with one line until `resume_interrupts`, if this is the command starting."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler and _is_command_starting():
        try:
            signal.signal(signal.SIGINT, _interrupted)
        except ValueError:   # not the main thread: nothing to do
            pass


def resume_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt again (only our own start-up handler is replaced)."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
