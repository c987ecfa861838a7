"""polyprompt.code — Zecoler: zero-shot code representation learning via prompt tuning.

Cui, Chen, Yang, Li, Zhang & Yin, "Zero-shot program representation learning", ICPC 2022
(arXiv:2204.08360), official code ChrisCN97/zecoler (a P-tuning fork on CodeBERT).

Importing this package is light (PEP 562 lazy exports): tree-sitter, transformers and
torch load only when a name that needs them is first used.
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "LANGUAGES": "languages",
    "get_parser": "languages",
    "CodeFunction": "extract",
    "ExtractStats": "extract",
    "OnError": "extract",
    "extract_functions": "extract",
    "load_corpus": "corpus",
    "Corpus": "corpus",
    "Task": "pairs",
    "PairExample": "pairs",
    "build_pairs": "pairs",
    "load_bigclonebench": "formats",
    "load_codesearchnet": "formats",
    "CodeMLMConfig": "backbone",
    "CodeBackbone": "backbone",
    "load_codebert": "backbone",
    "pretrain_code_mlm": "pretrain",
    "load_minilm": "minilm",
    "load_bert_encoder": "minilm",
    "minilm_available": "minilm",
    "MLMHeadConfig": "minilm",
    "Zecoler": "method",
    "ZecolerConfig": "method",
    "ManualTemplate": "method",
    "ManualTemplateConfig": "method",
    "PromptEncoder": "method",
    "CodeClassifier": "finetune",
    "CodeClassifierConfig": "finetune",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
