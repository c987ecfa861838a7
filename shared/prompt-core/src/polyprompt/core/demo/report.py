"""Results tables, JSON and bar plots for demos and benchmarks (every modality reuses them).

A result is a list of *rows*, one per method, each a plain ``dict``. A :class:`Column`
says how one cell is shown: a value (``"{:.1f}"``), a mean ± std pair read from two
keys, a percentage or a byte size. The same rows go to a markdown table, a plain-text
table, an atomic JSON file and a bar plot with error bars.

Example::

    >>> from polyprompt.core.demo.report import Column, format_table, summarize
    >>> mean, std = summarize([0.90, 0.92, 0.94])
    >>> rows = [{"method": "vpt", "acc_mean": mean, "acc_std": std, "seconds": 12.3}]
    >>> cols = [Column("method", "method", align="left"),
    ...         Column("accuracy (%)", "acc_mean", std_key="acc_std", scale=100, fmt="{:.1f}"),
    ...         Column("time (s)", "seconds", fmt="{:.0f}")]
    >>> print(format_table(rows, cols, style="markdown"))
    | method | accuracy (%) | time (s) |
    |:-------|-------------:|---------:|
    | vpt    |   92.0 ± 2.0 |       12 |
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyprompt.core.errors import InputError
from polyprompt.core.io import atomic_write, atomic_write_text

__all__ = [
    "Column",
    "bar_plot",
    "format_bytes",
    "format_table",
    "method_row",
    "summarize",
    "write_json",
    "write_markdown",
]


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, std)`` of ``values``; ``std`` is the sample standard deviation (0 for one value).

    Raises:
        InputError: no values, or a value that is not a finite number.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise InputError("summarize: no values")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"summarize: values must be finite numbers, got {vals}")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def method_row(spec: Any, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One results-table row for a method over its seeds.

    ``spec`` has ``name`` / ``title`` / ``method`` (a demo's ``MethodSpec``); each run has
    ``test_accuracy``, ``seconds``, ``trainable_params``, ``trainable_percent`` and
    ``checkpoint_bytes`` (the last three are the same for every seed). The row holds the
    accuracy mean ± std, the mean and total seconds, and the runs themselves.
    """
    if not runs:
        raise InputError(f"method_row: no runs for {getattr(spec, 'name', spec)!r}")
    acc_mean, acc_std = summarize([r["test_accuracy"] for r in runs])
    sec_mean, _ = summarize([r["seconds"] for r in runs])
    first = runs[0]
    return {
        "method": spec.name,
        "title": spec.title,
        "registered_method": spec.method,
        "accuracy_mean": acc_mean,
        "accuracy_std": acc_std,
        "trainable_params": first["trainable_params"],
        "trainable_percent": first["trainable_percent"],
        "checkpoint_bytes": first["checkpoint_bytes"],
        "seconds_mean": sec_mean,
        "seconds_total": sum(r["seconds"] for r in runs),
        "runs": list(runs),
    }


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (binary units, as :class:`~polyprompt.core.freezing.TrainableReport`)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class Column:
    """How one table column is shown.

    Args:
        title: header text.
        key: row key of the value (for mean ± std: the mean's key).
        fmt: ``str.format`` pattern for numbers, or a callable ``value -> str``.
        std_key: row key of the standard deviation; the cell becomes ``"mean ± std"``.
        scale: multiply numbers by this before formatting (e.g. 100 for percentages).
        align: ``"right"`` (numbers) or ``"left"``.
    """

    title: str
    key: str
    fmt: str | Callable[[Any], str] = "{}"
    std_key: str | None = None
    scale: float = 1.0
    align: str = "right"

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return "–"
        text = self._one(value)
        if self.std_key is not None and row.get(self.std_key) is not None:
            text = f"{text} ± {self._one(row[self.std_key])}"
        return text

    def _one(self, value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = value * self.scale if self.scale != 1.0 else value
        if callable(self.fmt):
            return self.fmt(value)
        try:
            return self.fmt.format(value)
        except (ValueError, TypeError):
            return str(value)


def _columns_for(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return [
        Column(k, k, fmt=lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)) for k in keys
    ]


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column] | None = None,
    *,
    style: str = "markdown",
) -> str:
    """Rows as a ``"markdown"`` (GitHub pipe table) or ``"plain"`` (aligned text) table.

    ``columns=None`` shows every key of the rows as it is.
    """
    if style not in ("markdown", "plain"):
        raise InputError(f"format_table: style must be 'markdown' or 'plain', got {style!r}")
    if not rows:
        raise InputError("format_table: no rows")
    cols = list(columns) if columns is not None else _columns_for(rows)
    cells = [[c.cell(r) for c in cols] for r in rows]
    widths = [max(len(c.title), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]

    def fit(text: str, i: int) -> str:
        return text.ljust(widths[i]) if cols[i].align == "left" else text.rjust(widths[i])

    if style == "markdown":
        head = "| " + " | ".join(c.title.ljust(widths[i]) for i, c in enumerate(cols)) + " |"
        rule = (
            "|"
            + "|".join(
                (":" + "-" * (w + 1)) if c.align == "left" else ("-" * (w + 1) + ":")
                for c, w in zip(cols, widths)
            )
            + "|"
        )
        body = ["| " + " | ".join(fit(t, i) for i, t in enumerate(line)) + " |" for line in cells]
        return "\n".join([head, rule, *body])
    head = "  ".join(fit(c.title, i) for i, c in enumerate(cols))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(fit(t, i) for i, t in enumerate(line)) for line in cells]
    return "\n".join([head, rule, *body])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _jsonable(obj.item())
        except (ValueError, RuntimeError):
            pass
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _jsonable(obj.to_dict())
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NaN/inf -> ``null``, Paths -> strings)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(Path(path), text + "\n")


def write_markdown(path: str | Path, text: str) -> Path:
    """Write ``text`` (a markdown document) atomically."""
    return atomic_write_text(Path(path), text if text.endswith("\n") else text + "\n")


def bar_plot(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    label_key: str = "method",
    mean_key: str = "accuracy_mean",
    std_key: str | None = "accuracy_std",
    scale: float = 1.0,
    ylabel: str = "",
    title: str = "",
    reference: float | None = None,
    reference_label: str = "",
) -> Path:
    """Bar chart of ``row[mean_key]`` with ``row[std_key]`` error bars, saved as PNG atomically.

    Uses matplotlib's object API with the Agg canvas: no display is needed and the global
    pyplot backend is left alone. ``reference`` draws a dashed horizontal line (e.g. chance).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError("bar_plot needs matplotlib: pip install 'polyprompt-core[demo]'") from exc
    if not rows:
        raise InputError("bar_plot: no rows")
    labels = [str(r[label_key]) for r in rows]
    means = [float(r[mean_key]) * scale for r in rows]
    stds = [float(r.get(std_key) or 0.0) * scale if std_key else 0.0 for r in rows]
    fig = Figure(figsize=(max(4.0, 1.3 * len(rows) + 1.5), 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(rows)))
    colors = [f"C{i % 10}" for i in xs]
    bars = ax.bar(xs, means, yerr=stds, capsize=5, color=colors, edgecolor="black", linewidth=0.6)
    for bar, m, s in zip(bars, means, stds):
        ax.annotate(
            f"{m:.1f}" + (f"±{s:.1f}" if s else ""),
            (bar.get_x() + bar.get_width() / 2, m + s),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    if reference is not None:
        ax.axhline(reference * scale, ls="--", color="gray", lw=1, label=reference_label or None)
        if reference_label:
            ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(
        labels, rotation=15 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center"
    )
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    top = max(m + s for m, s in zip(means, stds))
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
