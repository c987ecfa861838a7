"""Loaders for the official audio-captioning layouts: AudioCaps and Clotho (CSV + WAV folder).

* **AudioCaps** (Kim et al., NAACL 2019; ``cdjkim/audiocaps`` ``dataset/{train,val,test}.csv``):
  columns ``audiocap_id,youtube_id,start_time,caption``; one row per caption (val/test have
  5 rows per clip). The audio is not distributed; the usual downloads name each 10 s clip
  ``<youtube_id>.wav``, ``Y<youtube_id>.wav``, ``<youtube_id>_<start_time>.wav`` or
  ``<audiocap_id>.wav`` - all four are looked up (first hit wins).
* **Clotho** (Drossos et al., ICASSP 2020; Zenodo ``clotho_captions_{development,evaluation}.csv``):
  columns ``file_name,caption_1,...,caption_5``; audio in a folder of ``<file_name>``
  (44.1 kHz WAVs, resampled to 16 kHz with one summary warning).

Each caption becomes one ``AudioTextExample(task="caption")``: ``(clip, prompt) -> caption``;
clips of the same file are shared. ``missing="error"`` (default) raises on an absent WAV,
``"skip"`` drops those rows with one warning (AudioCaps downloads are usually incomplete).
``max_seconds`` crops long clips (keeps the start) so they fit a short front-end window.

Also :func:`export_clotho` writes clips with captions (e.g. the espeak-ng corpus) in the
Clotho layout, so the ``--data`` path of the example can be exercised offline.

Example::

    >>> exs = load_clotho("clotho_captions_evaluation.csv", "evaluation/")  # doctest: +SKIP
    >>> exs[0].task, exs[0].response                                          # doctest: +SKIP
    ('caption', 'A bird chirps while cars pass by.')
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polyprompt.audio.tasks import SAMPLE_RATE, AudioTextExample, Clip
from polyprompt.core.errors import InputError

__all__ = [
    "AUDIOCAPS_COLUMNS",
    "AUDIOCAPS_SPLITS",
    "CLOTHO_COLUMNS",
    "CLOTHO_SPLITS",
    "export_clotho",
    "export_clotho_splits",
    "load_audiocaps",
    "load_caption_splits",
    "load_captions_csv",
    "load_clotho",
]

AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
CLOTHO_COLUMNS = ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")
DEFAULT_PROMPT = "Describe the audio."
CLOTHO_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}
"""Our split -> Clotho's name (``clotho_captions_<name>.csv`` + audio folder ``<name>/``)."""
AUDIOCAPS_SPLITS = {"train": "train", "val": "val", "test": "test"}
"""Our split -> AudioCaps CSV stem (``<name>.csv``; audio in ``<name>/``, ``audio/`` or the root)."""


def _read_csv(
    path: str | Path, required: Sequence[str], fmt: str
) -> tuple[Path, list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{fmt}: caption CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{fmt}: {path} is not a readable UTF-8 CSV ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{fmt}: {path} lacks column(s) {missing}; found {header}; expected {list(required)}"
        )
    if not rows:
        raise InputError(f"{fmt}: {path} has a header but no rows")
    return path, rows


def _check_dir(audio_dir: str | Path, fmt: str) -> Path:
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise InputError(f"{fmt}: audio folder not found: {audio_dir}")
    return audio_dir


class _ClipLoader:
    """Loads each file once, crops to ``max_seconds``, aggregates resample warnings."""

    def __init__(self, max_seconds: float | None, fmt: str) -> None:
        if max_seconds is not None and max_seconds <= 0:
            raise InputError(f"{fmt}: max_seconds must be > 0, got {max_seconds}")
        self.max_seconds = max_seconds
        self.fmt = fmt
        self.cache: dict[Path, Clip] = {}
        self.resampled: dict[int, int] = {}

    def __call__(self, path: Path, meta: dict[str, Any]) -> Clip:
        if path in self.cache:
            return self.cache[path]
        from polyprompt.audio.frontend import ResampleWarning, load_wav

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResampleWarning)
            clip = load_wav(path)
        for w in caught:
            if issubclass(w.category, ResampleWarning):
                sr = int(clip.meta["orig_sample_rate"])
                self.resampled[sr] = self.resampled.get(sr, 0) + 1
            else:  # pragma: no cover - pass other warnings through
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        wave = clip.waveform
        cropped = False
        if self.max_seconds is not None and clip.duration > self.max_seconds:
            wave = wave[: int(self.max_seconds * clip.sample_rate)]
            cropped = True
        clip = Clip(wave, clip.sample_rate, meta={**clip.meta, **meta, "cropped": cropped})
        self.cache[path] = clip
        return clip

    def report(self) -> None:
        for sr, n in sorted(self.resampled.items()):
            from polyprompt.audio.frontend import ResampleWarning

            warnings.warn(
                f"{self.fmt}: resampled {n} file(s) from {sr} Hz to {SAMPLE_RATE} Hz",
                ResampleWarning,
                stacklevel=3,
            )


def _examples(
    items: list[tuple[list[Path], str, dict[str, Any], str]],
    loader: _ClipLoader,
    prompt: str,
    missing: str,
    fmt: str,
) -> list[AudioTextExample]:
    """items: (candidate paths, caption, meta, row description)."""
    if missing not in ("error", "skip"):
        raise InputError(f"{fmt}: missing must be 'error' or 'skip', got {missing!r}")
    out: list[AudioTextExample] = []
    skipped: list[str] = []
    for candidates, caption, meta, where in items:
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if missing == "skip":
                skipped.append(candidates[0].name)
                continue
            names = ", ".join(p.name for p in candidates)
            raise InputError(
                f"{fmt}: {where}: no audio file (looked for {names} in {candidates[0].parent}); "
                "pass missing='skip' to drop rows whose audio is absent"
            )
        if not caption.strip():
            raise InputError(f"{fmt}: {where}: empty caption")
        clip = loader(path, meta)
        out.append(AudioTextExample((clip, prompt), caption.strip(), "caption"))
    if skipped:
        warnings.warn(
            f"{fmt}: skipped {len(skipped)} caption row(s) without audio (first: {skipped[0]})",
            UserWarning,
            stacklevel=3,
        )
    if not out:
        raise InputError(f"{fmt}: no caption rows with audio found")
    loader.report()
    return out


def load_audiocaps(
    csv_path: str | Path,
    audio_dir: str | Path,
    *,
    prompt: str = DEFAULT_PROMPT,
    missing: str = "error",
    max_seconds: float | None = None,
    limit: int | None = None,
) -> list[AudioTextExample]:
    """AudioCaps ``audiocap_id,youtube_id,start_time,caption`` CSV + WAV folder -> caption examples.

    ``meta`` of each clip adds ``audiocap_id``, ``youtube_id``, ``start_time``.
    ``limit`` keeps the first ``limit`` CSV rows.
    """
    fmt = "load_audiocaps"
    path, rows = _read_csv(csv_path, AUDIOCAPS_COLUMNS, fmt)
    audio_dir = _check_dir(audio_dir, fmt)
    items = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        where = f"{path.name} row {i + 2}"
        yid, cap_id = row["youtube_id"].strip(), row["audiocap_id"].strip()
        if not yid:
            raise InputError(f"{fmt}: {where}: empty youtube_id")
        try:
            start = float(row["start_time"])
        except ValueError:
            raise InputError(
                f"{fmt}: {where}: start_time {row['start_time']!r} is not a number"
            ) from None
        start_s = f"{int(start)}" if start.is_integer() else f"{start:g}"
        names = [f"{yid}.wav", f"Y{yid}.wav", f"{yid}_{start_s}.wav"]
        if cap_id:
            names.append(f"{cap_id}.wav")
        meta = {"audiocap_id": cap_id, "youtube_id": yid, "start_time": start}
        items.append(([audio_dir / n for n in names], row["caption"], meta, where))
    return _examples(items, _ClipLoader(max_seconds, fmt), prompt, missing, fmt)


def load_clotho(
    csv_path: str | Path,
    audio_dir: str | Path,
    *,
    prompt: str = DEFAULT_PROMPT,
    missing: str = "error",
    max_seconds: float | None = None,
    limit: int | None = None,
) -> list[AudioTextExample]:
    """Clotho ``file_name,caption_1..caption_5`` CSV + audio folder -> 5 caption examples per file.

    ``limit`` keeps the first ``limit`` files.
    """
    fmt = "load_clotho"
    path, rows = _read_csv(csv_path, CLOTHO_COLUMNS, fmt)
    audio_dir = _check_dir(audio_dir, fmt)
    items = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        name = row["file_name"].strip()
        if not name:
            raise InputError(f"{fmt}: {path.name} row {i + 2}: empty file_name")
        for k in range(1, 6):
            where = f"{path.name} row {i + 2} caption_{k}"
            items.append(([audio_dir / name], row[f"caption_{k}"], {"file_name": name}, where))
    return _examples(items, _ClipLoader(max_seconds, fmt), prompt, missing, fmt)


def load_captions_csv(
    csv_path: str | Path, audio_dir: str | Path, **kwargs: Any
) -> list[AudioTextExample]:
    """Detect AudioCaps or Clotho from the CSV header and load it (keyword args passed on)."""
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"load_captions_csv: caption CSV not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = {h.strip() for h in next(csv.reader(fh), [])}
    loaders: dict[tuple[str, ...], Callable[..., list[AudioTextExample]]] = {
        AUDIOCAPS_COLUMNS: load_audiocaps,
        CLOTHO_COLUMNS: load_clotho,
    }
    for cols, loader in loaders.items():
        if set(cols) <= header:
            return loader(path, audio_dir, **kwargs)
    raise InputError(
        f"load_captions_csv: {path} is neither AudioCaps {list(AUDIOCAPS_COLUMNS)} nor Clotho "
        f"{list(CLOTHO_COLUMNS)}; header is {sorted(header)}"
    )


def export_clotho(
    clips: Sequence[Clip],
    out_dir: str | Path,
    *,
    captions: Callable[[Clip], Sequence[str]] | None = None,
    csv_name: str = "clotho_captions.csv",
    audio_subdir: str = "audio",
) -> Path:
    """Write ``clips`` as a Clotho-layout folder (WAVs + ``file_name,caption_1..5`` CSV); returns the CSV path.

    ``captions(clip)`` gives 5 captions; by default the five templates of
    :func:`polyprompt.audio.data.corpus.caption_for` on the clip's synthesis ``meta``.
    """
    from polyprompt.audio.frontend import save_wav
    from polyprompt.core.io import atomic_write

    if captions is None:
        from polyprompt.audio.data.corpus import caption_for

        def captions(clip: Clip) -> list[str]:
            return [caption_for(clip.meta, t) for t in range(5)]

    out_dir = Path(out_dir)
    audio = out_dir / audio_subdir
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, clip in enumerate(clips):
        name = f"{i:05d}_{clip.meta.get('name', 'clip')}.wav".replace("/", "_").replace(" ", "_")
        save_wav(audio / name, clip)
        caps = list(captions(clip))
        if len(caps) != 5:
            raise InputError(f"export_clotho: captions() must give 5 captions, got {len(caps)}")
        rows.append([name, *caps])

    def write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CLOTHO_COLUMNS)
            w.writerows(rows)

    return atomic_write(out_dir / csv_name, write)


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def load_caption_splits(
    root: str | Path,
    *,
    prompt: str = DEFAULT_PROMPT,
    missing: str = "skip",
    max_seconds: float | None = None,
    limit: int | None = None,
) -> dict[str, list[AudioTextExample]]:
    """Load a whole AudioCaps or Clotho folder in its official layout: ``{split: examples}``.

    Layouts recognised under ``root``:

    * Clotho (v2 Zenodo archives, unpacked): ``clotho_captions_{development,validation,evaluation}.csv``
      with audio in ``{development,validation,evaluation}/`` (also ``clotho_audio_<name>/`` or
      ``clotho_audio_<name>/<name>/``) -> train / val / test;
    * AudioCaps (``cdjkim/audiocaps`` ``dataset/``): ``{train,val,test}.csv`` with audio in
      ``<split>/``, ``audio/<split>/``, ``audio/`` or ``root`` itself.

    Splits whose CSV is absent are left out; ``missing="skip"`` (default here, since AudioCaps
    downloads always lack some YouTube clips) drops rows without audio with one warning.
    Raises :class:`InputError` if ``root`` holds neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"load_caption_splits: data folder not found: {root}")
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "missing": missing,
        "max_seconds": max_seconds,
        "limit": limit,
    }
    out: dict[str, list[AudioTextExample]] = {}
    for split, name in CLOTHO_SPLITS.items():
        csv_path = root / f"clotho_captions_{name}.csv"
        if not csv_path.is_file():
            continue
        audio = _first_dir(
            root / name, root / f"clotho_audio_{name}" / name, root / f"clotho_audio_{name}"
        )
        if audio is None:
            raise InputError(
                f"load_caption_splits: {csv_path.name} found but no audio folder {root / name}"
            )
        out[split] = load_clotho(csv_path, audio, **kwargs)
    if out:
        return out
    for split, name in AUDIOCAPS_SPLITS.items():
        csv_path = root / f"{name}.csv"
        if not csv_path.is_file():
            continue
        audio = _first_dir(root / name, root / "audio" / name, root / "audio") or root
        out[split] = load_audiocaps(csv_path, audio, **kwargs)
    if not out:
        raise InputError(
            f"load_caption_splits: {root} holds neither Clotho "
            f"(clotho_captions_{{development,validation,evaluation}}.csv) nor AudioCaps "
            "({train,val,test}.csv) caption files"
        )
    return out


def export_clotho_splits(
    clips: dict[str, Sequence[Clip]],
    out_dir: str | Path,
    *,
    captions: Callable[[Clip], Sequence[str]] | None = None,
) -> Path:
    """Write ``{split: clips}`` in Clotho's official layout (readable by :func:`load_caption_splits`)."""
    out_dir = Path(out_dir)
    for split, split_clips in clips.items():
        if split not in CLOTHO_SPLITS:
            raise InputError(
                f"export_clotho_splits: unknown split {split!r}; use {list(CLOTHO_SPLITS)}"
            )
        name = CLOTHO_SPLITS[split]
        if split_clips:
            export_clotho(
                split_clips,
                out_dir,
                captions=captions,
                csv_name=f"clotho_captions_{name}.csv",
                audio_subdir=name,
            )
    return out_dir
