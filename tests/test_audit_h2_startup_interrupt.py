"""Ctrl-C while the `ipguard` command still imports torch: one line and exit 130, as Ctrl-C
later, not Python's traceback of the import. A sitecustomize (this test's only) holds the
import of torch until the test has sent SIGINT, so the timing is not a guess."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''
import os, sys, time

class HoldTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            open(os.environ["HOLD_MARKER"], "w").close()
            time.sleep(60)
        return None

sys.meta_path.insert(0, HoldTorch())
'''

# what pip writes for the console script ipguard=ipguard_fast.cli:main
CONSOLE_SCRIPT = '''import re
import sys
from ipguard_fast.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
'''


def interrupted_while_importing(tmp_path, command):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "importing-torch"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), HOLD_MARKER=str(marker))
    proc = subprocess.Popen(command + ["verify", "--help"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_ctrl_c_while_python_m_imports_torch_is_one_line_exit_130(tmp_path):
    code, err = interrupted_while_importing(tmp_path, [sys.executable, "-m", "ipguard_fast"])
    assert code == 130 and err.strip() == "ipguard: interrupted", (code, err)


def test_ctrl_c_while_the_console_script_imports_torch_is_one_line_exit_130(tmp_path):
    script = tmp_path / "bin" / "ipguard"
    script.parent.mkdir()
    script.write_text(CONSOLE_SCRIPT)
    code, err = interrupted_while_importing(tmp_path, [sys.executable, str(script)])
    assert code == 130 and err.strip() == "ipguard: interrupted", (code, err)


@pytest.mark.parametrize("code", ["import ipguard_fast", "from ipguard_fast.cli import main"])
def test_a_program_importing_the_package_keeps_its_ctrl_c(code, tmp_path):
    # only the command changes the handler, and the command gives it back before any work
    program = (f"import signal, sys\n{code}\n"
               "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
               "from ipguard_fast.cli import main\n"
               "main(['--help'])\n")
    run = subprocess.run([sys.executable, "-c", program], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_the_command_gives_ctrl_c_back_before_it_works(tmp_path, monkeypatch):
    import ipguard_fast._startup as startup
    from ipguard_fast.cli import main

    signal.signal(signal.SIGINT, startup._interrupted)
    try:
        assert main(["export", "--help"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
