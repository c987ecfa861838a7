"""Results tables shared by every demo: summaries, method rows, formatting, JSON."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from polyprompt.core.demo.report import (
    Column,
    format_bytes,
    format_table,
    method_row,
    summarize,
    write_json,
)
from polyprompt.core.errors import InputError


def test_summarize_gives_mean_and_sample_std():
    mean, std = summarize([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    assert summarize([0.3]) == (0.3, 0.0)


@pytest.mark.parametrize("values", [[], [0.1, math.nan], [math.inf]])
def test_summarize_rejects_empty_and_non_finite(values):
    with pytest.raises(InputError, match="summarize"):
        summarize(values)


def _run(acc: float, sec: float) -> dict:
    return {
        "test_accuracy": acc,
        "seconds": sec,
        "trainable_params": 10,
        "trainable_percent": 0.5,
        "checkpoint_bytes": 40,
    }


def test_method_row_aggregates_the_seeds():
    spec = SimpleNamespace(name="vpt_deep", title="VPT-deep", method="vpt")
    row = method_row(spec, [_run(0.8, 2.0), _run(0.6, 4.0)])
    assert (row["method"], row["title"], row["registered_method"]) == (
        "vpt_deep",
        "VPT-deep",
        "vpt",
    )
    assert row["accuracy_mean"] == pytest.approx(0.7)
    assert row["accuracy_std"] == pytest.approx(math.sqrt(0.02))
    assert (row["seconds_mean"], row["seconds_total"]) == (3.0, 6.0)
    assert row["trainable_params"] == 10 and len(row["runs"]) == 2
    with pytest.raises(InputError, match="no runs for 'vpt_deep'"):
        method_row(spec, [])


def test_format_bytes_uses_binary_units():
    assert [format_bytes(n) for n in (512, 1536, 3 * 2**20)] == ["512 B", "1.5 KB", "3.0 MB"]


def test_format_table_markdown_and_plain():
    rows = [{"m": "a", "acc": 0.91234, "sd": 0.01}, {"m": "bb", "acc": 0.5, "sd": None}]
    cols = [Column("method", "m", align="left"), Column("acc (%)", "acc", "{:.1f}", "sd", 100)]
    md = format_table(rows, cols).splitlines()
    assert md[0] == "| method | acc (%)    |"
    assert md[1] == "|:-------|-----------:|"
    assert md[2] == "| a      | 91.2 ± 1.0 |" and md[3] == "| bb     |       50.0 |"
    plain = format_table(rows, cols, style="plain").splitlines()
    assert plain[0].split() == ["method", "acc", "(%)"] and set(plain[1]) == {"-", " "}
    with pytest.raises(InputError, match="style"):
        format_table(rows, cols, style="html")
    with pytest.raises(InputError, match="no rows"):
        format_table([], cols)


def test_write_json_turns_non_finite_floats_into_null(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": math.nan, "b": [1.5, tmp_path]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, str(tmp_path)]}
