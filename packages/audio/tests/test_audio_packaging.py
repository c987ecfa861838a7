"""polyprompt-audio installs only its own field's libraries and imports lazily."""

from __future__ import annotations

from polyprompt.core.packaging import assert_isolated, dependency_closure, modules_imported_by

HEAVY = {"transformers", "timm", "torchaudio", "soundfile", "torchmetrics", "matplotlib"}


def test_dependency_closure_is_isolated():
    closure = assert_isolated("polyprompt-audio", "audio")
    assert {"torchaudio", "soundfile", "polyprompt-core"} <= closure
    assert {"transformers", "timm"} <= dependency_closure("polyprompt-audio")


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.audio")
    assert HEAVY.isdisjoint(mods), HEAVY & mods
    # the data side's modules import nothing heavy (not even torch) until used
    mods = modules_imported_by(
        "import polyprompt.audio.tasks, polyprompt.audio.frontend, polyprompt.audio.metrics, "
        "polyprompt.audio.data, polyprompt.audio.data.espeak, polyprompt.audio.data.effects, "
        "polyprompt.audio.data.corpus, polyprompt.audio.data.captions_csv"
    )
    assert (HEAVY | {"torch", "numpy"}).isdisjoint(mods), (HEAVY | {"torch", "numpy"}) & mods
