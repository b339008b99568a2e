"""A bad option of protect, evaluate or demo is refused before any work: exit 2, the
option named in the one-line error, nothing written."""
from __future__ import annotations

COMMANDS = {"protect": ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--data", "digits", "--out", "f"],
            "evaluate": ["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--data", "digits", "--out", "e"],
            "demo": ["demo", "--out", "d"]}


def assert_refused_before_any_work(command: str, extra: list[str], message: str, tmp_path, capsys, monkeypatch):
    from ipguard_fast.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(COMMANDS[command] + extra) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
