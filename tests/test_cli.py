"""The CLI: help lists commands and fields; errors are one message, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_top_level_help_lists_commands(cli):
    with pytest.raises(SystemExit) as e:
        cli("--help")
    assert e.value.code == 0


def test_help_texts(capsys):
    from workbench.cli import main

    for args, expected in ((["--help"], ["prepare", "demo-data", "report"]),
                           (["prepare", "--help"], ["clean.repost_chains = keep_text", "read.text_field = text",
                                                    "dedup.threshold = 0.8", "Weibo `//@user:` repost chains"])):
        with pytest.raises(SystemExit):
            main(args)
        out = capsys.readouterr().out
        for text in expected:
            assert text in out, (args, text)


def test_console_script_runs():
    """The installed entry point, in a fresh process, as users call it."""
    script = Path(sys.executable).parent / "workbench"
    assert script.exists(), "the `workbench` console script is not installed in this environment"
    out = subprocess.run([str(script), "prepare", "--print-config", "input=x.txt", "clean.urls=false"],
                         capture_output=True, text=True, check=True)
    assert "urls: false" in out.stdout and "- x.txt" in out.stdout


def test_config_error_exit_code_and_message(cli):
    code, out, err = cli("prepare", "input=x.txt", "clean.urlz=1", "dedup.bands=x")
    assert code == 2
    assert "2 config problem(s)" in err and "did you mean 'urls'" in err and "Traceback" not in err


def test_missing_input_path_is_clear(cli, tmp_path):
    code, _, err = cli("prepare", f"input={tmp_path / 'nope.txt'}", f"output={tmp_path / 'out'}")
    assert code == 2
    assert "nope.txt: no such file or folder" in err and "fix:" in err
    assert not (tmp_path / "out").exists()


def test_no_command_prints_help(cli):
    code, out, _ = cli()
    assert code == 2 and "commands:" in out
