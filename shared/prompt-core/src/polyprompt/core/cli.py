"""The ``polyprompt`` command: ``list``, ``demo``, ``run <example>``, ``bench``.

::

    polyprompt list                       # installed polyprompt packages and methods
    polyprompt demo [--quick] [--out DIR] [--core-only]
    polyprompt run --list                 # examples: the core's "digits" + installed packages'
    polyprompt run digits --quick         # arguments after the name go to the example
    polyprompt bench --list               # scripts in ./benchmarks (or $POLYPROMPT_BENCHMARKS)
    polyprompt bench [NAME] [--quick] [--out DIR]

Installed packages plug in through entry points (nothing is imported until used):

* ``polyprompt.demos``: ``name = "module:function"``, called as
  ``function(quick=True, out_dir=Path)`` by ``polyprompt demo``;
* ``polyprompt.examples``: ``name = "module:main"``, called as ``main(argv) -> int | None``
  by ``polyprompt run name ...``.

Exit codes: 0 success, 1 a demo / example / benchmark failed, 2 usage error (unknown
example or benchmark, bad arguments). Errors print a message, not a traceback, unless
``POLYPROMPT_DEBUG=1``.

Example::

    >>> from polyprompt.core.cli import examples, main
    >>> main(["run", "no-such-example"])  # message on stderr, exit code 2
    2
    >>> "digits" in examples()
    True
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEMO_GROUP = "polyprompt.demos"
EXAMPLE_GROUP = "polyprompt.examples"
BENCH_ENV = "POLYPROMPT_BENCHMARKS"
DEFAULT_DEMO_OUT = Path("out") / "demo"

_CORE_DEMO = "polyprompt.core.demo.digits:run_demo"
# the core's own examples (name -> "module:main"); installed packages add theirs by entry point
CORE_EXAMPLES: dict[str, str] = {"digits": "polyprompt.core.demo.digits:main"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line use: printed as ``polyprompt: error: ...``, exit code 2."""


# ------------------------------------------------------------------------ plumbing
@dataclass(frozen=True)
class Target:
    """Something runnable found by name: an entry point or a core function."""

    name: str
    value: str  # "module:attr"
    source: str  # distribution name or "polyprompt-core"

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.value.partition(":")
        if not module or not attr:
            raise UsageError(f"{self.name!r}: entry point {self.value!r} is not 'module:function'")
        import importlib

        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise UsageError(f"{self.name!r}: {self.value} is not callable")
        return obj


def _entry_points(group: str) -> dict[str, Target]:
    out: dict[str, Target] = {}
    for ep in metadata.entry_points(group=group):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
        out.setdefault(ep.name, Target(ep.name, ep.value, dist))
    return out


def examples() -> dict[str, Target]:
    """Every runnable example: the core's, then installed packages' (``polyprompt.examples``)."""
    found = {n: Target(n, v, "polyprompt-core") for n, v in CORE_EXAMPLES.items()}
    for name, target in _entry_points(EXAMPLE_GROUP).items():
        found.setdefault(name, target)
    return dict(sorted(found.items()))


def package_demos() -> dict[str, Target]:
    """Quick demos of installed packages (``polyprompt.demos``), the core's own excluded."""
    return {n: t for n, t in sorted(_entry_points(DEMO_GROUP).items()) if t.value != _CORE_DEMO}


def benchmarks_dir() -> Path | None:
    """``$POLYPROMPT_BENCHMARKS``, else ``benchmarks/`` in the current folder or a parent."""
    env = os.environ.get(BENCH_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / "benchmarks"
        if candidate.is_dir():
            return candidate
    return None


def benchmark_scripts(folder: Path | None = None) -> dict[str, Path]:
    """``name -> path`` of ``benchmarks/*.py``, private ``_*.py`` modules left out."""
    folder = benchmarks_dir() if folder is None else folder
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _report_failure(what: str, exc: BaseException) -> None:
    print(f"polyprompt: {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    if os.environ.get("POLYPROMPT_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    else:
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            last = tb[-1]
            print(
                f"  at {last.filename}:{last.lineno} ({last.name}); set POLYPROMPT_DEBUG=1 for "
                "the full traceback",
                file=sys.stderr,
            )


def _exit_code(value: Any) -> int:
    """``main()``'s return / ``SystemExit.code`` -> an int exit code."""
    if value is None or value is True:
        return EXIT_OK
    if isinstance(value, bool):
        return EXIT_FAILED
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # SystemExit("message")
    return EXIT_FAILED


# ------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    from polyprompt.core import __version__
    from polyprompt.core.registry import available_methods, installed_packages

    packages = installed_packages()
    if not any(name.lower() == "polyprompt-core" for name, _ in packages):
        packages = [("polyprompt-core", f"{__version__} (not installed: source tree)"), *packages]
    print("Installed polyprompt packages:")
    print(_table([(n, v) for n, v in packages], ("distribution", "version")))
    print()
    methods = available_methods()
    print(f"Methods ({len(methods)}):")
    rows = [(m.name, m.target, m.distribution, "yes" if m.loaded else "no") for m in methods]
    print(_table(rows, ("name", "target", "distribution", "loaded")))
    demos = package_demos()
    print()
    print(f"Package demos ({len(demos)}): " + (", ".join(demos) if demos else "none installed"))
    print(f"Examples: {', '.join(examples())}  (polyprompt run --list)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else DEFAULT_DEMO_OUT
    failures: list[str] = []
    start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    print(f"== polyprompt demo ({mode}): core — MNIST-pre-trained ViT -> optdigits ==", flush=True)
    try:
        from polyprompt.core.demo.digits import run_demo

        run_demo(quick=args.quick, out_dir=out / "core")
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _report_failure("core demo", exc)
        failures.append("core")
    if not args.core_only:
        demos = package_demos()
        if not demos:
            print("\nNo modality package demos installed (entry-point group polyprompt.demos).")
        for name, target in demos.items():
            print(f"\n== polyprompt demo (quick): {name} [{target.source}] ==", flush=True)
            try:
                target.load()(quick=True, out_dir=out / name)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                _report_failure(f"demo {name!r} ({target.value})", exc)
                failures.append(name)
    took = time.perf_counter() - start
    if failures:
        print(
            f"\npolyprompt demo: {len(failures)} failed: {', '.join(failures)} ({took:.0f} s)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"\npolyprompt demo: all done in {took:.0f} s; results in {out}/")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    found = examples()
    if args.list or not args.example:
        if not args.list:
            print("polyprompt run: name an example to run:", file=sys.stderr)
        print(
            _table(
                [(t.name, t.source, t.value) for t in found.values()],
                ("example", "package", "entry point"),
            )
        )
        return EXIT_OK if args.list else EXIT_USAGE
    target = found.get(args.example)
    if target is None:
        raise UsageError(
            f"unknown example {args.example!r}; available: {', '.join(found) or 'none'} "
            "(polyprompt run --list)"
        )
    try:
        return _exit_code(target.load()(list(args.args)))
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        raise
    except UsageError:
        raise
    except Exception as exc:
        _report_failure(f"example {args.example!r}", exc)
        return EXIT_FAILED


def cmd_bench(args: argparse.Namespace) -> int:
    folder = benchmarks_dir()
    scripts = benchmark_scripts(folder)
    if args.list:
        if not scripts:
            where = folder if folder is not None else f"./benchmarks (or ${BENCH_ENV})"
            print(f"no benchmarks found in {where}")
        else:
            print(_table([(n, str(p)) for n, p in scripts.items()], ("benchmark", "script")))
        return EXIT_OK
    if not scripts:
        raise UsageError(
            f"no benchmark scripts found: looked in {folder or './benchmarks and its parents'}; "
            f"run from the repository root or set {BENCH_ENV}"
        )
    if args.name:
        if args.name not in scripts:
            raise UsageError(
                f"unknown benchmark {args.name!r}; available: {', '.join(scripts)} "
                "(polyprompt bench --list)"
            )
        chosen = {args.name: scripts[args.name]}
    else:
        chosen = scripts
    failed: list[str] = []
    for name, path in chosen.items():
        cmd = [sys.executable, str(path)]
        if args.quick:
            cmd.append("--quick")
        if args.out:
            cmd += ["--out", str(args.out)]
        print(f"== benchmark {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call(cmd)
        took = time.perf_counter() - start
        if rc != 0:
            print(
                f"polyprompt bench: {name} failed with exit code {rc} ({took:.0f} s)",
                file=sys.stderr,
            )
            failed.append(name)
        else:
            print(f"== benchmark {name}: done in {took:.0f} s", flush=True)
    if failed:
        print(f"polyprompt bench: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting, so ``main`` returns 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    from polyprompt.core import __version__

    parser = _Parser(
        prog="polyprompt",
        description="One frozen pre-trained model, many small prompts.",
    )
    parser.add_argument("--version", action="version", version=f"polyprompt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="installed polyprompt packages and methods")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "demo",
        help="the core demo (MNIST -> optdigits), then every installed package's quick demo",
    )
    p.add_argument("--quick", action="store_true", help="smoke-test size (about a minute)")
    p.add_argument("--out", metavar="DIR", help=f"results folder (default: {DEFAULT_DEMO_OUT})")
    p.add_argument("--core-only", action="store_true", help="skip the modality packages' demos")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run an example by name (arguments after it go to it)")
    p.add_argument("--list", action="store_true", help="list the examples")
    p.add_argument("example", nargs="?", help="example name (see --list)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the example")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/")
    p.add_argument("name", nargs="?", help="one benchmark (default: all)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--quick", action="store_true", help="pass --quick to the scripts")
    p.add_argument("--out", metavar="DIR", help="pass --out DIR to the scripts")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polyprompt`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except UsageError as exc:
        msg = str(exc)
        print(msg if msg.startswith("polyprompt") else f"polyprompt: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("polyprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
