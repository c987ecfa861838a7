"""The ``polyprompt`` command: list, demo, run, bench; usage errors exit with 2, not a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polyprompt.core import cli
from polyprompt.core.cli import main


def test_module_entry_point_lists_core_methods() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "polyprompt.core.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for name in ("polyprompt-core", "linear_probe", "full_finetune", "vpt", "distribution"):
        assert name in out.stdout


def test_list_does_not_import_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Methods" in out and "vpt" in out and "polyprompt.core.methods.classify:VPT" in out
    examples_line = next(line for line in out.splitlines() if line.startswith("Examples:"))
    assert "digits" in examples_line


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "list" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


# ------------------------------------------------------------------ run
def test_run_list_shows_the_core_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "polyprompt.core.demo.digits:main" in out


def test_run_unknown_example_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-example", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown example 'no-such-example'" in err and "digits" in err
    assert "Traceback" not in err


def test_run_unknown_example_subprocess_exit_code() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "polyprompt.core.cli", "run", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "unknown example" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def fake_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module with example / demo functions that record their calls."""
    (tmp_path / "pp_fake_mod.py").write_text(
        textwrap.dedent(
            """
            CALLS = []

            def example(argv):
                CALLS.append(("example", list(argv)))
                return 3 if "--fail" in argv else None

            def exiting(argv):
                raise SystemExit(4)

            def crashing(argv):
                raise RuntimeError("boom")

            def demo_ok(quick, out_dir):
                CALLS.append(("demo_ok", quick, str(out_dir)))

            def demo_bad(quick, out_dir):
                raise ValueError("broken demo")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("pp_fake_mod", None)
    return "pp_fake_mod"


def test_run_passes_arguments_and_exit_codes(
    fake_module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.CORE_EXAMPLES, "fake", f"{fake_module}:example")
    monkeypatch.setitem(cli.CORE_EXAMPLES, "exits", f"{fake_module}:exiting")
    monkeypatch.setitem(cli.CORE_EXAMPLES, "crashes", f"{fake_module}:crashing")
    assert main(["run", "fake", "--quick", "--seeds", "1", "2"]) == 0
    import pp_fake_mod

    assert pp_fake_mod.CALLS[-1] == ("example", ["--quick", "--seeds", "1", "2"])
    assert main(["run", "fake", "--fail"]) == 3
    assert main(["run", "exits"]) == 4
    assert main(["run", "crashes"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "Traceback" not in err


# ------------------------------------------------------------------ demo
def test_demo_runs_core_then_package_demos_and_reports_failures(
    fake_module: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import polyprompt.core.demo.digits as digits

    core_calls = []
    monkeypatch.setattr(
        digits, "run_demo", lambda quick, out_dir: core_calls.append((quick, Path(out_dir)))
    )
    demos = {
        "bad": cli.Target("bad", f"{fake_module}:demo_bad", "polyprompt-bad"),
        "good": cli.Target("good", f"{fake_module}:demo_ok", "polyprompt-good"),
    }
    monkeypatch.setattr(cli, "package_demos", lambda: demos)
    out = tmp_path / "out"
    assert main(["demo", "--quick", "--out", str(out)]) == 1  # one package failed
    import pp_fake_mod

    assert core_calls == [(True, out / "core")]
    assert ("demo_ok", True, str(out / "good")) in pp_fake_mod.CALLS  # ran after the failure
    err = capsys.readouterr().err
    assert "broken demo" in err and "1 failed: bad" in err

    monkeypatch.setattr(cli, "package_demos", lambda: {"good": demos["good"]})
    assert main(["demo", "--out", str(out)]) == 0
    assert core_calls[-1] == (False, out / "core")
    n_calls = len(pp_fake_mod.CALLS)
    assert main(["demo", "--core-only", "--out", str(out)]) == 0
    assert len(pp_fake_mod.CALLS) == n_calls  # package demos skipped


def test_demo_core_failure_is_reported(monkeypatch, tmp_path, capsys) -> None:
    import polyprompt.core.demo.digits as digits

    def broken(quick, out_dir):
        raise RuntimeError("core broke")

    monkeypatch.setattr(digits, "run_demo", broken)
    assert main(["demo", "--core-only", "--out", str(tmp_path)]) == 1
    assert "core broke" in capsys.readouterr().err


def test_package_demos_skip_the_core_demo(monkeypatch) -> None:
    eps = {
        "core": cli.Target("core", "polyprompt.core.demo.digits:run_demo", "polyprompt-core"),
        "graph": cli.Target("graph", "polyprompt.graph.demo:run_demo", "polyprompt-graph"),
    }
    monkeypatch.setattr(cli, "_entry_points", lambda group: eps)
    assert list(cli.package_demos()) == ["graph"]


# ------------------------------------------------------------------ bench
@pytest.fixture
def bench_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    record = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        Path(__file__).with_suffix(".args").write_text(" ".join(sys.argv[1:]))
        """
    )
    (folder / "alpha.py").write_text(record)
    (folder / "beta.py").write_text(record + "\nsys.exit(5)\n")
    (folder / "_helpers.py").write_text("raise SystemExit('must not run')\n")
    monkeypatch.setenv(cli.BENCH_ENV, str(folder))
    return folder


def test_bench_list(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "_helpers" not in out


def test_bench_runs_one_with_quick_and_out(bench_dir: Path, tmp_path: Path) -> None:
    assert main(["bench", "alpha", "--quick", "--out", str(tmp_path / "o")]) == 0
    assert (bench_dir / "alpha.args").read_text() == f"--quick --out {tmp_path / 'o'}"
    assert not (bench_dir / "beta.args").exists()


def test_bench_all_runs_every_script_and_fails_at_the_end(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench"]) == 1  # beta exits 5
    assert (bench_dir / "alpha.args").read_text() == ""
    assert (bench_dir / "beta.args").exists()
    assert "beta failed with exit code 5" in capsys.readouterr().err


def test_bench_unknown_name_exits_2(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'gamma'" in err and "alpha" in err


def test_bench_found_from_a_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.BENCH_ENV, raising=False)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "speed.py").write_text("")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "deeper")
    assert list(cli.benchmark_scripts()) == ["speed"]


def test_bench_without_folder_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(cli.BENCH_ENV, str(tmp_path / "none"))
    assert main(["bench", "--list"]) == 0
    assert "no benchmarks found" in capsys.readouterr().out
    assert main(["bench"]) == 2
