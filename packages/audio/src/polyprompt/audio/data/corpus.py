"""A labelled speech corpus synthesised with espeak-ng + sox, and the five APT tasks on it.

Every clip is one real espeak-ng utterance of a word, drawn from a seeded plan over

* **word** (:attr:`CorpusConfig.words`), **accent** (espeak-ng English accent rules),
* **speaker** = espeak-ng voice variant (``m1..m7`` male, ``f1..f5`` female) and so **gender**,
* **speed** category -> rate in words per minute (slow 100-125, normal 160-190, fast 250-300),
* pitch (espeak ``-p`` 30..70, a nuisance factor), and
* background: clean, or white / pink / brown sox noise at 5..15 dB SNR; optional sox reverb.

Labels and captions come from these parameters only (no human annotation). From each clip
the builder makes one example per task (APT paper Sec. 4; :mod:`polyprompt.audio.tasks`):

* ``caption``: "Describe the audio." -> e.g. "a woman with a scottish accent says 'river'
  slowly over hissing white noise." (several templates, same facts);
* ``classify``: "Which word is spoken? Options: ..." -> the word (``choices``/``label``;
  attribute set by :attr:`CorpusConfig.classify_attribute`);
* ``qa``: one question about gender, speed, background noise, the word or the accent;
* ``fewshot``: ``[support_1, "Word: yes.", support_2, "Word: river.", query, "Word:"]``
  (``fewshot_shots`` support clips with distinct labels, one of them the query's);
* ``nlar``: the clip and a partner clip from the same split, with a comparison question
  ("Do both clips say the same word?", "Is the second speaker faster than the first?",
  "Are the two speakers the same gender?", "Which clip is noisier, the first or the second?"),
  partners drawn so that the answers are balanced.

**Split** (documented, by speaker): the voice variants are disjoint across splits, so test
speakers are never heard in training - train ``m1-m4, f1-f3``, val ``m5, f4``, test
``m6, m7, f5``. Words, accents, speeds and noises are shared (they are the label sets).

**Cache**: each synthesised (and effected) clip is stored as 16-bit WAV under
``polyprompt_home()/audio/clips/<key>.wav``, keyed by a hash of its generation parameters,
written atomically; later builds read the cache and never call espeak-ng/sox again. Every
clip is returned as read back from its WAV, so cold and warm builds are identical.

Example::

    >>> corpus = build_corpus(CorpusConfig(n_train=12, n_val=4, n_test=6))  # doctest: +SKIP
    >>> {k: len(v) for k, v in corpus.items()}                                # doctest: +SKIP
    {'train': 60, 'val': 20, 'test': 30}
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polyprompt.audio.data.effects import NOISES, EffectChain
from polyprompt.audio.data.espeak import ACCENTS, VARIANTS, SpeechSpec, synthesize
from polyprompt.audio.tasks import SAMPLE_RATE, TASKS, AudioTextExample, Clip
from polyprompt.core.config import PromptConfig

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_WORDS",
    "SPEEDS",
    "SPLIT_VARIANTS",
    "ClipPlan",
    "CorpusConfig",
    "build_clips",
    "build_corpus",
    "build_examples",
    "caption_for",
    "clip_cache_dir",
    "plan_clips",
    "pretraining_clips",
]

DEFAULT_WORDS = ("yes", "river", "banana", "seven", "morning", "thunder")
"""Default vocabulary: short, phonetically distinct English words (<= 2 s even when slow)."""

PRETRAIN_WORDS = (
    "water",
    "house",
    "morning",
    "garden",
    "yellow",
    "window",
    "seven",
    "river",
    "table",
    "music",
    "paper",
    "winter",
    "summer",
    "doctor",
    "market",
    "little",
    "orange",
    "purple",
    "tiger",
    "rabbit",
    "kitchen",
    "silver",
    "bottle",
    "candle",
    "engine",
    "forest",
    "island",
    "ladder",
    "mirror",
    "pocket",
    "rocket",
    "shadow",
    "thunder",
    "velvet",
    "wagon",
    "zebra",
    "yes",
    "no",
    "hello",
    "banana",
    "good night",
    "thank you",
    "left",
    "right",
    "stop",
    "go",
)
"""Vocabulary of the unlabelled pre-training speech (:func:`pretraining_clips`)."""

SPEEDS: dict[str, tuple[int, int]] = {"slow": (100, 125), "normal": (160, 190), "fast": (250, 300)}
"""Speed category -> espeak-ng rate range in words per minute."""

SPLIT_VARIANTS: dict[str, tuple[str, ...]] = {
    "train": ("m1", "m2", "m3", "m4", "f1", "f2", "f3"),
    "val": ("m5", "f4"),
    "test": ("m6", "m7", "f5"),
}
"""Speaker hold-out: voice variants of each split (disjoint)."""

ATTRIBUTES = ("word", "accent", "gender", "speed", "noise")
"""Clip attributes usable as class labels (``meta`` keys)."""

_VERSION = "corpus-v1"
_SPEED_ADVERB = {"slow": "slowly", "normal": "at a normal pace", "fast": "quickly"}
_NOISE_PHRASE = {
    "white": "over hissing white noise",
    "pink": "over rushing pink noise",
    "brown": "over rumbling brown noise",
}
_GENDER_NOUN = {"male": "man", "female": "woman"}


@dataclass
class CorpusConfig(PromptConfig):
    """What to synthesise and which examples to make.

    Attributes:
        n_train / n_val / n_test: number of clips per split (each gives one example per task).
        words / accents: label vocabularies (accents are keys of ``espeak.ACCENTS``).
        speeds: speed categories used (keys of :data:`SPEEDS`).
        noise_prob: fraction of clips with background noise; ``noises`` its colours.
        snr_db: (low, high) SNR range of the noise in dB.
        reverb_prob: fraction of clips passed through sox reverb.
        tasks: which task families to build.
        classify_attribute: the attribute answered by ``classify`` (one of :data:`ATTRIBUTES`).
        fewshot_attribute / fewshot_shots: attribute and number of labelled support clips.
        seed: everything (plan, effects, example wording, pairing) is deterministic in it.
        workers: parallel espeak-ng/sox processes on a cache miss.
    """

    n_train: int = 480
    n_val: int = 96
    n_test: int = 192
    words: tuple[str, ...] = DEFAULT_WORDS
    accents: tuple[str, ...] = ("american", "scottish", "caribbean", "received pronunciation")
    speeds: tuple[str, ...] = ("slow", "normal", "fast")
    noise_prob: float = 0.5
    noises: tuple[str, ...] = NOISES
    snr_db: tuple[float, float] = (5.0, 15.0)
    reverb_prob: float = 0.0
    tasks: tuple[str, ...] = TASKS
    classify_attribute: str = "word"
    fewshot_attribute: str = "word"
    fewshot_shots: int = 2
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_train", "n_val", "n_test"):
            self.require(getattr(self, name) >= 0, name, "must be >= 0")
        self.require(self.n_train + self.n_val + self.n_test > 0, "n_train", "corpus is empty")
        self.require(
            len(set(self.words)) == len(self.words) >= 2, "words", "needs >= 2 distinct words"
        )
        self.require(
            all(isinstance(w, str) and w.strip() for w in self.words), "words", "empty word"
        )
        self.require(
            len(set(self.accents)) >= 1 and all(a in ACCENTS for a in self.accents),
            "accents",
            f"must be keys of espeak.ACCENTS {sorted(ACCENTS)}",
        )
        self.require(
            len(self.speeds) >= 1 and all(s in SPEEDS for s in self.speeds),
            "speeds",
            f"must be in {sorted(SPEEDS)}",
        )
        self.require(0.0 <= self.noise_prob <= 1.0, "noise_prob", "must be in [0, 1]")
        self.require(0.0 <= self.reverb_prob <= 1.0, "reverb_prob", "must be in [0, 1]")
        self.require(all(n in NOISES for n in self.noises), "noises", f"must be in {NOISES}")
        self.require(
            bool(self.noises) or self.noise_prob == 0, "noises", "empty while noise_prob > 0"
        )
        self.require(
            len(self.snr_db) == 2 and self.snr_db[0] <= self.snr_db[1], "snr_db", "(low, high)"
        )
        self.require(
            len(self.tasks) >= 1 and all(t in TASKS for t in self.tasks),
            "tasks",
            f"must be in {TASKS}",
        )
        for name in ("classify_attribute", "fewshot_attribute"):
            self.require(getattr(self, name) in ATTRIBUTES, name, f"must be one of {ATTRIBUTES}")
        n_labels = len(self.label_set(self.fewshot_attribute))
        self.require(
            2 <= self.fewshot_shots <= n_labels,
            "fewshot_shots",
            f"must be in 2..{n_labels} (distinct labels of {self.fewshot_attribute!r})",
        )
        self.require(self.workers >= 1, "workers", "must be >= 1")

    def label_set(self, attribute: str) -> tuple[str, ...]:
        """The possible values of ``attribute`` in this corpus (the ``choices`` order)."""
        if attribute == "word":
            return tuple(self.words)
        if attribute == "accent":
            return tuple(self.accents)
        if attribute == "gender":
            return ("man", "woman")
        if attribute == "speed":
            return tuple(self.speeds)
        if attribute == "noise":
            return ("none", *self.noises) if self.noise_prob > 0 else ("none",)
        raise KeyError(attribute)

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


@dataclass(frozen=True)
class ClipPlan:
    """Generation parameters of one clip (its cache key)."""

    speech: SpeechSpec
    effects: EffectChain = field(default_factory=EffectChain)
    speed: str = "normal"
    effect_seed: int = 0
    split: str = "train"

    def key(self) -> str:
        blob = json.dumps(
            {
                "v": _VERSION,
                "sr": SAMPLE_RATE,
                "speech": asdict(self.speech),
                "effects": asdict(self.effects),
                "effect_seed": self.effect_seed,
            },
            sort_keys=True,
        ).encode()
        return hashlib.sha1(blob).hexdigest()[:20]

    def labels(self) -> dict[str, Any]:
        """Attribute labels of this clip (``meta`` of the built clip)."""
        return {
            "word": self.speech.text,
            "accent": self.speech.accent,
            "gender": _GENDER_NOUN[self.speech.gender],
            "speaker": self.speech.variant,
            "speed": self.speed,
            "rate": self.speech.rate,
            "pitch": self.speech.pitch,
            "noise": self.effects.noise or "none",
            "snr_db": self.effects.snr_db if self.effects.noise else None,
            "reverb": self.effects.reverb is not None,
            "split": self.split,
        }


# --------------------------------------------------------------------------- planning
def plan_clips(cfg: CorpusConfig) -> dict[str, list[ClipPlan]]:
    """Deterministic clip plans per split (no synthesis). Words are balanced within a split."""
    plans: dict[str, list[ClipPlan]] = {}
    for split_index, (split, n) in enumerate(cfg.split_sizes().items()):
        rng = random.Random(f"{cfg.seed}-{split}")
        variants = SPLIT_VARIANTS[split]
        by_gender = {g: [v for v in variants if VARIANTS[v] == g] for g in ("male", "female")}
        words = [cfg.words[i % len(cfg.words)] for i in range(n)]
        rng.shuffle(words)
        out = []
        for i, word in enumerate(words):
            gender = rng.choice(("male", "female"))
            variant = rng.choice(by_gender[gender])
            speed = rng.choice(cfg.speeds)
            lo, hi = SPEEDS[speed]
            noisy = rng.random() < cfg.noise_prob and cfg.noises
            chain = EffectChain(
                noise=rng.choice(cfg.noises) if noisy else None,
                snr_db=round(rng.uniform(*cfg.snr_db), 1) if noisy else 10.0,
                reverb=round(rng.uniform(30, 70)) if rng.random() < cfg.reverb_prob else None,
            )
            spec = SpeechSpec(
                word,
                accent=rng.choice(cfg.accents),
                variant=variant,
                rate=rng.randint(lo, hi),
                pitch=rng.randint(30, 70),
            )
            seed = cfg.seed * 1_000_003 + split_index * 100_003 + i
            out.append(ClipPlan(spec, chain, speed, seed, split))
        plans[split] = out
    return plans


# --------------------------------------------------------------------------- synthesis + cache
def clip_cache_dir() -> Path:
    """``polyprompt_home()/audio/clips``."""
    from polyprompt.core.io import polyprompt_home

    return polyprompt_home() / "audio" / "clips"


def _read_cached(path: Path, meta: dict[str, Any]) -> Clip:
    import soundfile as sf
    import torch

    data, sr = sf.read(str(path), dtype="float32")
    return Clip(torch.from_numpy(data), int(sr), meta=meta)


def _make_clip(plan: ClipPlan, cache: Path) -> Clip:
    """Synthesise (or read from cache) one planned clip."""
    from polyprompt.audio.frontend import save_wav

    key = plan.key()
    path = cache / key[:2] / f"{key}.wav"
    meta = {**plan.labels(), "name": f"{plan.speech.text}-{key[:8]}", "path": str(path), "key": key}
    if not path.is_file():
        clip = synthesize(plan.speech, resampler="sox")
        if not plan.effects.is_identity:
            clip = plan.effects.apply(clip, seed=plan.effect_seed)
        save_wav(path, clip)
    return _read_cached(path, meta)


def build_clips(cfg: CorpusConfig | None = None, *, progress: bool = True) -> dict[str, list[Clip]]:
    """Synthesise (or load from the cache) every planned clip: ``{split: [Clip, ...]}``.

    ``meta`` of each clip: word, accent, gender ("man"/"woman"), speaker, speed, rate, pitch,
    noise ("none"/colour), snr_db, reverb, split, name, path (cached WAV), key.
    Raises :class:`~polyprompt.audio.data.espeak.EspeakNotFoundError` /
    :class:`~polyprompt.audio.data.effects.SoxNotFoundError` on a cache miss without the tools.
    """
    from polyprompt.core.progress import progress_bar

    cfg = cfg or CorpusConfig()
    plans = plan_clips(cfg)
    cache = clip_cache_dir()
    flat = [p for split in plans.values() for p in split]
    bar = progress_bar(
        total=len(flat), desc="speech corpus (espeak-ng)", enabled=progress, unit="clip"
    )
    try:
        if cfg.workers > 1 and len(flat) > 1:
            with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
                clips = []
                for clip in pool.map(lambda p: _make_clip(p, cache), flat):
                    clips.append(clip)
                    bar.update(1)
        else:
            clips = []
            for p in flat:
                clips.append(_make_clip(p, cache))
                bar.update(1)
    finally:
        bar.close()
    out: dict[str, list[Clip]] = {}
    i = 0
    for split, split_plans in plans.items():
        out[split] = clips[i : i + len(split_plans)]
        i += len(split_plans)
    return out


# --------------------------------------------------------------------------- captions
def caption_for(meta: dict[str, Any] | Any, template: int = 0) -> str:
    """A caption stating every synthesis fact of a clip; ``template`` picks the wording (0..4)."""
    noun = meta["gender"]
    accent = meta["accent"]
    word = meta["word"]
    adverb = _SPEED_ADVERB[meta["speed"]]
    extras = []
    if meta.get("noise", "none") != "none":
        extras.append(_NOISE_PHRASE[meta["noise"]])
    if meta.get("reverb"):
        extras.append("in a reverberant room")
    tail = (" " + " ".join(extras)) if extras else ""
    an = "an" if accent[0] in "aeiou" else "a"
    templates = (
        f"a {noun} with {an} {accent} accent says '{word}' {adverb}{tail}.",
        f"the word '{word}' is spoken {adverb} by a {noun} with {an} {accent} accent{tail}.",
        f"a {noun} speaking with {an} {accent} accent says '{word}' {adverb}{tail}.",
        f"a {noun}'s voice with {an} {accent} accent says '{word}' {adverb}{tail}.",
        f"someone, a {noun} with {an} {accent} accent, says '{word}' {adverb}{tail}.",
    )
    return templates[template % len(templates)]


_CAPTION_PROMPTS = (
    "Describe the audio.",
    "Write a caption for this clip.",
    "What do you hear?",
    "Describe this recording in one sentence.",
)
_CLASSIFY_QUESTIONS = {
    "word": "Which word is spoken?",
    "accent": "Which accent does the speaker have?",
    "gender": "Is the speaker a man or a woman?",
    "speed": "Is the speech slow, normal or fast?",
    "noise": "What background noise is there?",
}
_QA = {
    "gender": ("Is the speaker a man or a woman?", "Who is speaking, a man or a woman?"),
    "speed": ("How fast does the speaker talk?", "Is the speech slow, normal or fast?"),
    "noise": ("Is there background noise?", "Is the recording clean or noisy?"),
    "word": ("What word does the speaker say?", "Which word is spoken?"),
    "accent": ("What accent does the speaker have?", "Which accent is this?"),
}
_FEWSHOT_NAMES = {
    "word": "Word",
    "accent": "Accent",
    "gender": "Speaker",
    "speed": "Speed",
    "noise": "Noise",
}


def _qa_example(clip: Clip, cfg: CorpusConfig, rng: random.Random) -> AudioTextExample:
    meta = clip.meta
    kind = rng.choice(tuple(_QA))
    question = rng.choice(_QA[kind])
    if kind == "noise" and question.startswith("Is there"):
        choices: tuple[str, ...] = ("no", "yes")
        answer = "yes" if meta["noise"] != "none" else "no"
    elif kind == "noise":
        choices = ("clean", "noisy")
        answer = "noisy" if meta["noise"] != "none" else "clean"
    else:
        choices = cfg.label_set(kind)
        answer = meta[kind]
    return AudioTextExample(
        (clip, question), answer, "qa", label=choices.index(answer), choices=choices
    )


def _fewshot_example(
    clip: Clip, pool: dict[str, list[Clip]], cfg: CorpusConfig, rng: random.Random
) -> AudioTextExample:
    attr = cfg.fewshot_attribute
    name = _FEWSHOT_NAMES[attr]
    target = clip.meta[attr]
    others = [v for v in pool if v != target and pool[v]]
    picked = [target, *rng.sample(others, min(cfg.fewshot_shots - 1, len(others)))]
    rng.shuffle(picked)
    segments: list[Any] = []
    for value in picked:
        candidates = [c for c in pool[value] if c is not clip] or pool[value]
        segments += [rng.choice(candidates), f"{name}: {value}."]
    segments += [clip, f"{name}:"]
    choices = tuple(picked)
    return AudioTextExample(
        tuple(segments), target, "fewshot", label=choices.index(target), choices=choices
    )


def _nlar_example(
    clip: Clip, clips: Sequence[Clip], cfg: CorpusConfig, rng: random.Random
) -> AudioTextExample | None:
    """A comparison question about ``clip`` and a partner; partners are drawn for balance."""
    meta = clip.meta
    speed_rank = {s: i for i, s in enumerate(SPEEDS)}
    kinds = ["same_word", "same_gender"]
    if len(cfg.speeds) > 1:
        kinds.append("faster")
    if 0 < cfg.noise_prob < 1:
        kinds.append("noisier")
    rng.shuffle(kinds)
    for kind in kinds:
        want_yes = rng.random() < 0.5
        if kind == "same_word":
            cands = [
                c for c in clips if c is not clip and (c.meta["word"] == meta["word"]) == want_yes
            ]
            q, ans = "Do both clips say the same word?", "yes" if want_yes else "no"
        elif kind == "same_gender":
            cands = [
                c
                for c in clips
                if c is not clip and (c.meta["gender"] == meta["gender"]) == want_yes
            ]
            q, ans = "Are the two speakers the same gender?", "yes" if want_yes else "no"
        elif kind == "faster":  # different speed categories, the faster one second iff want_yes
            cands = [c for c in clips if c.meta["speed"] != meta["speed"]]
            q, ans = "Is the second speaker faster than the first?", "yes" if want_yes else "no"
        else:  # noisier: one clean and one noisy clip, the noisy one first iff want_yes
            first_noisy = meta["noise"] != "none"
            cands = [c for c in clips if (c.meta["noise"] != "none") != first_noisy]
            q = "Which clip is noisier, the first or the second?"
            ans = "the first" if want_yes else "the second"
        if not cands:
            continue
        partner = rng.choice(cands)
        pair = (clip, partner)
        if kind == "faster":
            second_faster = speed_rank[partner.meta["speed"]] > speed_rank[meta["speed"]]
            if second_faster != want_yes:
                pair = (partner, clip)
        elif kind == "noisier" and (meta["noise"] != "none") != want_yes:
            pair = (partner, clip)
        choices = ("the first", "the second") if kind == "noisier" else ("no", "yes")
        return AudioTextExample((*pair, q), ans, "nlar", label=choices.index(ans), choices=choices)
    return None


def build_examples(
    clips: Sequence[Clip], cfg: CorpusConfig, *, split: str = "train"
) -> list[AudioTextExample]:
    """One example per clip and task in ``cfg.tasks`` (order: clip-major, task order of cfg.tasks).

    Few-shot supports and NLAR partners are drawn from ``clips`` (the same split only).
    """
    rng = random.Random(f"{cfg.seed}-{split}-examples")
    pool: dict[str, list[Clip]] = {v: [] for v in cfg.label_set(cfg.fewshot_attribute)}
    for c in clips:
        pool.setdefault(c.meta[cfg.fewshot_attribute], []).append(c)
    cls_choices = cfg.label_set(cfg.classify_attribute)
    cls_q = _CLASSIFY_QUESTIONS[cfg.classify_attribute]
    makers: dict[str, Callable[[Clip], AudioTextExample | None]] = {
        "caption": lambda c: AudioTextExample(
            (c, rng.choice(_CAPTION_PROMPTS)), caption_for(c.meta, rng.randrange(5)), "caption"
        ),
        "classify": lambda c: AudioTextExample(
            (c, f"{cls_q} Options: {', '.join(cls_choices)}."),
            c.meta[cfg.classify_attribute],
            "classify",
            label=cls_choices.index(c.meta[cfg.classify_attribute]),
            choices=cls_choices,
        ),
        "qa": lambda c: _qa_example(c, cfg, rng),
        "fewshot": lambda c: _fewshot_example(c, pool, cfg, rng) if len(clips) > 1 else None,
        "nlar": lambda c: _nlar_example(c, clips, cfg, rng) if len(clips) > 1 else None,
    }
    out = []
    for clip in clips:
        for task in cfg.tasks:
            ex = makers[task](clip)
            if ex is not None:
                out.append(ex)
    return out


def build_corpus(
    cfg: CorpusConfig | None = None, *, progress: bool = True
) -> dict[str, list[AudioTextExample]]:
    """``{"train"|"val"|"test": [AudioTextExample, ...]}`` for the APT tasks (see module doc)."""
    cfg = cfg or CorpusConfig()
    clips = build_clips(cfg, progress=progress)
    return {
        split: build_examples(split_clips, cfg, split=split) for split, split_clips in clips.items()
    }


def pretraining_clips(
    n: int = 600, *, seed: int = 0, progress: bool = True, workers: int = 2
) -> list[Clip]:
    """Unlabelled real speech for in-situ encoder pre-training (e.g. AudioMAE's masked autoencoding).

    ``n`` clips of :data:`PRETRAIN_WORDS` in every espeak-ng accent, speed and the *training*
    speakers only (``SPLIT_VARIANTS["train"]``), half with sox noise, 20% with reverb - so
    pre-training never hears a val/test speaker. Cached like :func:`build_clips`.
    """
    cfg = CorpusConfig(
        n_train=n,
        n_val=0,
        n_test=0,
        words=PRETRAIN_WORDS,
        accents=tuple(ACCENTS),
        reverb_prob=0.2,
        seed=seed + 7919,
        workers=workers,
    )
    return build_clips(cfg, progress=progress)["train"]
