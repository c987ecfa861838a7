"""The examples' shared command-line helpers."""

from __future__ import annotations

import argparse

import pytest

from polyprompt.core.demo.cli import overrides, run_cli
from polyprompt.core.errors import ConfigError


def test_overrides_keeps_only_given_flags_and_tuples_lists():
    args = argparse.Namespace(seeds=[3, 4], epochs=0, methods=[], data=None, quick=False)
    got = overrides(args, {"seeds": "seeds", "epochs": "epochs", "methods": "methods", "data": "d"})
    assert got == {"seeds": (3, 4), "epochs": 0}


def test_run_cli_reports_polyprompt_errors_with_exit_status_2(capsys):
    def bad() -> None:
        raise ConfigError("DemoConfig.epochs: must be an int >= 1 (got 0)")

    assert run_cli("idpt", bad) == 2
    assert capsys.readouterr().err.strip() == (
        "idpt: error: DemoConfig.epochs: must be an int >= 1 (got 0)"
    )


def test_run_cli_lets_bugs_raise():
    def bug() -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_cli("x", bug)
