"""The `dfine` entry point: help without a subcommand, -v on either side of the subcommand."""

from __future__ import annotations

import pytest

from dfine.cli.main import build_parser, main


def test_plain_dfine_prints_help(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: dfine" in out and "predict" in out and "train" in out


@pytest.mark.parametrize("argv", [["-v", "info", "dfine-n-coco"], ["info", "dfine-n-coco", "-v"],
                                  ["info", "-v", "dfine-n-coco"]])
def test_verbose_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verbose is True and args.command == "info"


def test_verbose_defaults_off() -> None:
    assert build_parser().parse_args(["info", "dfine-n-coco"]).verbose is False
