"""Data for polyprompt-audio: espeak-ng speech, sox effects, the APT task corpus, caption CSVs.

Light: nothing heavy is imported until a name is used.
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SpeechSpec": "espeak",
    "synthesize": "espeak",
    "EspeakNotFoundError": "espeak",
    "EffectChain": "effects",
    "SoxNotFoundError": "effects",
    "CorpusConfig": "corpus",
    "build_clips": "corpus",
    "build_corpus": "corpus",
    "build_examples": "corpus",
    "load_audiocaps": "captions_csv",
    "load_clotho": "captions_csv",
    "load_captions_csv": "captions_csv",
    "export_clotho": "captions_csv",
    "export_clotho_splits": "captions_csv",
    "load_caption_splits": "captions_csv",
    "pretraining_clips": "corpus",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
