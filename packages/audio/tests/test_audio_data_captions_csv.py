"""AudioCaps / Clotho CSV + WAV loaders on small local files in the official layouts."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import soundfile as sf

from polyprompt.audio.data.captions_csv import (
    export_clotho,
    load_audiocaps,
    load_captions_csv,
    load_clotho,
)
from polyprompt.audio.frontend import ResampleWarning
from polyprompt.core.errors import InputError


def _wav(path, seconds=0.5, sr=16_000, freq=440.0, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * math.pi * freq * t).astype(np.float32)
    if channels == 2:
        x = np.stack([x, 0.5 * x], axis=1)
    sf.write(path, x, sr)
    return path


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def audiocaps(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    _wav(audio / "abc123.wav", freq=300)  # <youtube_id>.wav
    _wav(audio / "Yxyz789.wav", freq=500)  # Y<youtube_id>.wav
    _wav(audio / "qqq_30.wav", freq=700)  # <youtube_id>_<start>.wav
    _wav(audio / "91.wav", freq=900)  # <audiocap_id>.wav
    rows = [
        [11, "abc123", 0, "A dog barks twice"],
        [12, "abc123", 0, "Barking from a dog nearby"],
        [13, "xyz789", 10, "Rain falls on a roof, with thunder"],
        [14, "qqq", 30, "A man speaks, then a car passes"],
        [91, "nothere", 5, "Birds chirp"],
    ]
    csv_path = _write_csv(
        tmp_path / "val.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows
    )
    return csv_path, audio


@pytest.fixture
def clotho(tmp_path):
    audio = tmp_path / "evaluation"
    audio.mkdir()
    _wav(audio / "Forest birds, morning.wav", sr=44_100, freq=600, channels=2)
    _wav(audio / "street_traffic.wav", sr=44_100, freq=200)
    rows = [
        ["Forest birds, morning.wav", *[f"birds sing in a forest {k}" for k in range(5)]],
        ["street_traffic.wav", *[f"cars pass on a busy street {k}" for k in range(5)]],
    ]
    header = ["file_name", *[f"caption_{k}" for k in range(1, 6)]]
    return _write_csv(tmp_path / "clotho_captions_evaluation.csv", header, rows), audio


def test_audiocaps_all_name_patterns(audiocaps):
    csv_path, audio = audiocaps
    exs = load_audiocaps(csv_path, audio)
    assert len(exs) == 5 and all(e.task == "caption" for e in exs)
    assert exs[0].segments[1] == "Describe the audio." and exs[0].response == "A dog barks twice"
    assert exs[0].clips()[0] is exs[1].clips()[0]  # one clip per file, shared by its captions
    assert [e.clips()[0].meta["name"] for e in exs] == [
        "abc123",
        "abc123",
        "Yxyz789",
        "qqq_30",
        "91",
    ]
    assert (
        exs[2].clips()[0].meta["youtube_id"] == "xyz789"
        and exs[2].clips()[0].meta["start_time"] == 10
    )
    assert exs[0].clips()[0].sample_rate == 16_000
    assert len(load_audiocaps(csv_path, audio, limit=2, prompt="Caption:")) == 2


def test_audiocaps_missing_audio(audiocaps, tmp_path):
    csv_path, audio = audiocaps
    (audio / "91.wav").unlink()
    with pytest.raises(
        InputError, match=r"val\.csv row 6: no audio file \(looked for nothere\.wav"
    ):
        load_audiocaps(csv_path, audio)
    with pytest.warns(UserWarning, match="skipped 1 caption row"):
        exs = load_audiocaps(csv_path, audio, missing="skip")
    assert len(exs) == 4
    with pytest.raises(InputError, match="audio folder not found"):
        load_audiocaps(csv_path, tmp_path / "nope")
    with pytest.raises(InputError, match="caption CSV not found"):
        load_audiocaps(tmp_path / "nope.csv", audio)


def test_audiocaps_bad_rows_and_columns(tmp_path):
    audio = tmp_path / "a"
    audio.mkdir()
    _wav(audio / "vid.wav")
    bad_cols = _write_csv(tmp_path / "x.csv", ["id", "youtube_id", "caption"], [[1, "vid", "x"]])
    with pytest.raises(InputError, match=r"lacks column\(s\) \['audiocap_id', 'start_time'\]"):
        load_audiocaps(bad_cols, audio)
    bad_start = _write_csv(
        tmp_path / "y.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [[1, "vid", "ten", "x"]],
    )
    with pytest.raises(InputError, match="row 2: start_time 'ten'"):
        load_audiocaps(bad_start, audio)
    empty_cap = _write_csv(
        tmp_path / "z.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [[1, "vid", 0, " "]],
    )
    with pytest.raises(InputError, match="empty caption"):
        load_audiocaps(empty_cap, audio)
    header_only = _write_csv(
        tmp_path / "h.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], []
    )
    with pytest.raises(InputError, match="no rows"):
        load_audiocaps(header_only, audio)


def test_audiocaps_corrupt_wav_names_path(tmp_path):
    audio = tmp_path / "a"
    audio.mkdir()
    (audio / "vid.wav").write_bytes(b"RIFF....WAVEjunk")
    csv_path = _write_csv(
        tmp_path / "t.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [[1, "vid", 0, "x"]],
    )
    with pytest.raises(InputError, match=r"vid\.wav is not a readable audio file"):
        load_audiocaps(csv_path, audio)


def test_clotho_five_captions_resampled_once(clotho):
    csv_path, audio = clotho
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exs = load_clotho(csv_path, audio, max_seconds=0.25)
    resample = [w for w in caught if issubclass(w.category, ResampleWarning)]
    assert len(resample) == 1 and "resampled 2 file(s) from 44100 Hz" in str(resample[0].message)
    assert len(exs) == 10
    assert [e.response for e in exs[:5]] == [f"birds sing in a forest {k}" for k in range(5)]
    clip = exs[0].clips()[0]
    assert clip.meta["file_name"] == "Forest birds, morning.wav" and clip.meta["orig_channels"] == 2
    assert clip.waveform.dim() == 1 and clip.duration == 0.25 and clip.meta["cropped"]
    assert len({id(e.clips()[0]) for e in exs}) == 2


def test_clotho_errors(clotho, tmp_path):
    csv_path, audio = clotho
    (audio / "street_traffic.wav").unlink()
    with pytest.raises(
        InputError, match=r"row 3 caption_1: no audio file \(looked for street_traffic\.wav"
    ):
        load_clotho(csv_path, audio)
    bad = _write_csv(
        tmp_path / "b.csv", ["file_name", "caption_1", "caption_2"], [["a.wav", "x", "y"]]
    )
    with pytest.raises(InputError, match="caption_3"):
        load_clotho(bad, audio)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nf\xe9.wav,a,b,c,d,e\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(InputError, match="not a readable UTF-8 CSV"):
        load_clotho(latin, audio)


def test_autodetect(audiocaps, clotho, tmp_path):
    assert len(load_captions_csv(*audiocaps)) == 5
    with pytest.warns(ResampleWarning):
        assert len(load_captions_csv(*clotho)) == 10
    other = _write_csv(tmp_path / "o.csv", ["path", "text"], [["a.wav", "x"]])
    with pytest.raises(InputError, match="neither AudioCaps"):
        load_captions_csv(other, tmp_path)


def test_export_clotho_round_trip_real_speech(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    from polyprompt.audio.data.corpus import CorpusConfig, build_clips

    clips = build_clips(CorpusConfig(n_train=3, n_val=0, n_test=0, seed=7), progress=False)["train"]
    csv_path = export_clotho(clips, tmp_path / "clotho")
    exs = load_clotho(csv_path, tmp_path / "clotho" / "audio")
    assert len(exs) == 15
    for k, clip in enumerate(clips):
        loaded = exs[5 * k].clips()[0]
        assert f"'{clip.meta['word']}'" in exs[5 * k].response
        assert abs(loaded.num_samples - clip.num_samples) == 0
        assert float((loaded.waveform - clip.waveform).abs().max()) < 1e-3


def test_load_caption_splits_clotho_layout_from_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    from polyprompt.audio.data.captions_csv import export_clotho_splits, load_caption_splits
    from polyprompt.audio.data.corpus import CorpusConfig, build_clips

    clips = build_clips(CorpusConfig(n_train=2, n_val=0, n_test=1, seed=5), progress=False)
    root = export_clotho_splits(clips, tmp_path / "clotho")
    assert (root / "clotho_captions_development.csv").is_file() and (root / "evaluation").is_dir()
    splits = load_caption_splits(root)
    assert set(splits) == {"train", "test"}  # no validation clips were exported
    assert len(splits["train"]) == 10 and len(splits["test"]) == 5
    assert splits["test"][0].clips()[0].meta["file_name"].endswith(".wav")


def test_load_caption_splits_audiocaps_layout(audiocaps, tmp_path):
    from polyprompt.audio.data.captions_csv import load_caption_splits

    csv_path, audio = audiocaps
    root = csv_path.parent  # val.csv + audio/
    with pytest.warns(UserWarning, match="skipped 1"):
        (audio / "91.wav").unlink()
        splits = load_caption_splits(root)
    assert set(splits) == {"val"} and len(splits["val"]) == 4
    with pytest.raises(InputError, match="neither Clotho"):
        load_caption_splits(audio)
    with pytest.raises(InputError, match="data folder not found"):
        load_caption_splits(tmp_path / "nope")
