"""polyprompt.audio - Acoustic Prompt Tuning (APT; Liang et al., 2023, arXiv 2312.00249).

Keep this module light: torchaudio, timm and transformers are imported inside the
modules that need them, so `import polyprompt.audio` is fast.
"""

__version__ = "0.1.0"
