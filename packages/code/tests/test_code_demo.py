"""The example's report helpers (the full / quick runs are marked slow)."""

import json

import pytest

from polyprompt.code.demo import grouped_plot, main, results_markdown


def _result():
    rows = []
    for task in ("clone", "name"):
        for lang, setting in (("java", "in-language"), ("go", "zero-shot")):
            for m, acc in (("zecoler", 0.8), ("finetune", 0.6)):
                rows.append({"task": task, "language": lang, "setting": setting, "method": m,
                             "label": m, "accuracy_mean": acc, "accuracy_std": 0.01, "accuracies": [acc],
                             "trainable_params": 10, "trainable_pct": 0.5, "checkpoint_bytes": 2048,
                             "seconds": 1.0})  # fmt: skip
    return {"rows": rows}


def test_markdown_and_plot(tmp_path):
    text = results_markdown(_result())
    assert "| clone | go | zero-shot | 80.0 ± 1.0 | 60.0 ± 1.0 |" in text
    assert "| zecoler | 10 | 0.5 | 2.0 KB | 1.0 |" in text
    path = grouped_plot(_result(), tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_main_reports_bad_data_folder(tmp_path, capsys):
    assert main(["--quick", "--data", str(tmp_path), "--no-progress"]) == 2
    assert "zecoler_zero_shot: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_example_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    assert main(["--quick", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["setting"] for r in result["rows"]} >= {"zero-shot", "in-language"}
    assert (tmp_path / "out" / "zero_shot.png").is_file()
    assert (tmp_path / "out" / "prompts" / "clone" / "prompt_config.json").is_file()
