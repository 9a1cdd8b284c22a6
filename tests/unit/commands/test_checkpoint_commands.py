"""`llada info` and its help."""

from __future__ import annotations


def test_cli_info_and_help(llada_dir, capsys):
    from llada.cli import main

    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["info", str(llada_dir[0])]) == 0
    assert "d_model=32" in capsys.readouterr().out
    assert main(["info", "/definitely/not/here"]) == 2
    assert "no such directory" in capsys.readouterr().err
