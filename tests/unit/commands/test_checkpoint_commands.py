"""`llada info` and its help."""

from __future__ import annotations


def test_cli_info_and_help(llada_dir, capsys):
    from llada.cli import main

    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["info", str(llada_dir[0])]) == 0
    out = capsys.readouterr().out
    assert "d_model=32" in out and "head_dim=8" in out and "attention       bidirectional; RoPE base" in out
    assert main(["info", "/definitely/not/here"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_convert_onto_a_file_is_one_line_before_loading(tmp_path, capsys):
    from support.cli import _one_error_line

    from llada.cli import main

    (tmp_path / "afile").write_text("mine")
    assert main(["convert", str(tmp_path / "absent-model"), str(tmp_path / "afile")]) == 2
    assert _one_error_line(capsys.readouterr().err, "convert").endswith("is a file; give a directory (it is created "
                                                                        "if missing)")
    assert (tmp_path / "afile").read_text() == "mine"
