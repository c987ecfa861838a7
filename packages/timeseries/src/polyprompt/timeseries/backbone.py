"""tsai ``TSTPlus`` (a transformer over patched multivariate series) as a PromptableBackbone.

POND prepends prompt tokens to the tokens of a pre-trained transformer over the series
(arXiv:2312.12276, abstract and Fig. 1: "prompt tuning ... for time series"). tsai's
``TSTPlus`` (``tsai/models/TSTPlus.py``, ``_TSTBackbone``) is that transformer: with
``kernel_size=stride=patch_len`` its input encoding ``W_P`` is a strided ``Conv1d`` that
turns a series ``(B, C, T)`` into ``ceil(T / patch_len)`` patch tokens (PatchTST-style
patching, Nie et al. 2023), followed by a learned positional encoding ``W_pos`` and
``n_layers`` encoder layers. :class:`TSTAdapter` calls those very modules, in the order
``_TSTBackbone.forward`` does, split in the three protocol steps::

    tokens = adapter.embed(x)                       # (B, C, T) -> (B, N, D), N = T / patch_len
    tokens = torch.cat([prompts, tokens], 1)        # POND / VPT: prompts first (no CLS token)
    tokens = adapter.forward_blocks(tokens)         # encoder layers (residual attention kept)
    feats = adapter.pool(adapter.norm(tokens), num_prompt_tokens=prompts.shape[1])  # (B, D)

``TSTPlus``'s own head (flatten + linear over ``N * D``) depends on the token count and is
not used: every method puts a linear head on the mean of the data tokens.

Example::

    >>> import torch
    >>> adapter = TSTConfig(c_in=6, seq_len=128, patch_len=16, d_model=32).build()
    >>> tokens = adapter.embed(torch.randn(2, 6, 128))
    >>> tuple(tokens.shape)
    (2, 8, 32)
    >>> tokens = torch.cat([torch.zeros(2, 5, 32), tokens], 1)
    >>> tuple(adapter.pool(adapter.norm(adapter.forward_blocks(tokens)), 5).shape)
    (2, 32)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError, ConfigError, InputError, ShapeError
from polyprompt.core.validation import check_tensor

__all__ = ["TSTAdapter", "TSTConfig", "load_tsai_state_dict"]


def _import_tstplus() -> type:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tsai/fastai import-time deprecation noise
        from tsai.models.TSTPlus import TSTPlus
    return TSTPlus


@dataclass
class TSTConfig(PromptConfig):
    """Architecture of the tsai ``TSTPlus`` backbone (part of every cache key).

    Args:
        c_in: channels of the series.
        seq_len: time steps per window.
        patch_len: patch length = ``kernel_size = stride`` of ``W_P`` (1 = one token per step).
        d_model, n_layers, n_heads, d_ff: transformer width, depth, heads, feed-forward size.
        norm: ``"LayerNorm"`` (default here) or ``"BatchNorm"`` (tsai's default). LayerNorm is
            the default because prompts change the token set and the few-shot batches are
            tiny, both of which disturb batch statistics [inferred, not from the paper].
        dropout: residual / feed-forward dropout.
        res_attention: tsai's residual attention (attention scores passed between layers).
        pe: tsai positional encoding kind (``"zeros"`` = learned, tsai's default).
    """

    c_in: int = 6
    seq_len: int = 128
    patch_len: int = 16
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    norm: str = "LayerNorm"
    dropout: float = 0.1
    res_attention: bool = True
    pe: str = "zeros"

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        self.require_ints("c_in", "seq_len", "patch_len", "d_model", "n_layers", "n_heads", "d_ff")
        r(self.patch_len <= self.seq_len, "patch_len", f"must be <= seq_len={self.seq_len}")
        r(self.d_model % self.n_heads == 0, "n_heads", "must divide d_model")
        r(self.norm in ("LayerNorm", "BatchNorm"), "norm", "must be 'LayerNorm' or 'BatchNorm'")
        r(
            isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
            "dropout",
            "must be in [0, 1)",
        )
        r(isinstance(self.res_attention, bool), "res_attention", "must be a bool")

    @property
    def num_patches(self) -> int:
        return math.ceil(self.seq_len / self.patch_len)

    def tstplus_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tsai.models.TSTPlus.TSTPlus`` for this architecture."""
        kw: dict[str, Any] = dict(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            norm=self.norm,
            dropout=self.dropout,
            res_attention=self.res_attention,
            pe=self.pe,
            max_seq_len=None,
            key_padding_mask=False,
        )
        if self.patch_len > 1:
            kw.update(kernel_size=self.patch_len, stride=self.patch_len)
        return kw

    def build_tstplus(self, num_classes: int = 2) -> nn.Module:
        """A freshly initialised tsai ``TSTPlus`` (with its own head, ``c_out=num_classes``)."""
        return _import_tstplus()(self.c_in, num_classes, self.seq_len, **self.tstplus_kwargs())

    def build(self) -> TSTAdapter:
        """A fresh :class:`TSTAdapter` over a new ``TSTPlus`` (its head is dropped)."""
        return TSTAdapter(self.build_tstplus(), config=self)


class TSTAdapter(nn.Module):
    """A tsai ``TSTPlus`` seen through :class:`polyprompt.core.backbones.PromptableBackbone`.

    Args:
        model: a ``tsai.models.TSTPlus.TSTPlus`` (its ``backbone`` is kept, its head dropped)
            or its ``_TSTBackbone``.
        config: the :class:`TSTConfig` it was built from (recorded in :meth:`identity`).

    Attributes: ``embed_dim`` (D), ``num_blocks`` (encoder layers), ``num_prefix_tokens`` (0:
    TST has no CLS token), ``blocks`` (the encoder layers), ``c_in``, ``seq_len``,
    ``patch_len``, ``num_patches``.

    Shapes: ``embed`` (B, C, T) -> (B, N, D); ``forward_blocks`` / ``norm`` (B, L, D) ->
    (B, L, D) for any L; ``pool`` (B, L, D) -> (B, D), the mean of the data tokens.
    """

    num_prefix_tokens = 0

    def __init__(self, model: nn.Module, config: TSTConfig | None = None) -> None:
        super().__init__()
        tst = getattr(model, "backbone", model)
        if type(tst).__name__ != "_TSTBackbone" or not hasattr(tst, "encoder"):
            raise ConfigError(
                "TSTAdapter: `model` must be a tsai TSTPlus (or its _TSTBackbone), "
                f"got {type(model).__name__}"
            )
        self.tst = tst
        self.config = config
        self.embed_dim = int(tst.W_pos.shape[-1])
        self.num_blocks = len(tst.encoder.layers)
        self.num_patches = int(tst.W_pos.shape[0])
        self.res_attention = bool(tst.encoder.res_attention)
        if config is not None:
            self.c_in, self.seq_len, self.patch_len = config.c_in, config.seq_len, config.patch_len
        else:
            conv = _first_conv(tst.W_P)
            w = conv.weight if conv is not None else tst.W_P.weight
            self.c_in = int(w.shape[1])
            self.patch_len = int(w.shape[-1]) if conv is not None else 1
            self.seq_len = self.num_patches * self.patch_len

    @property
    def blocks(self) -> nn.ModuleList:
        return self.tst.encoder.layers

    # ---------------------------------------------------------------- token pipeline
    def check_input(self, x: Any, where: str = "TSTAdapter.embed") -> None:
        """Validate a batch of series ``(B, C, T)``; raise our errors on bad input.

        Raises:
            InputError: not a tensor / not floating point.
            ShapeError: wrong rank, wrong channel count, series shorter than one patch,
                or length different from the ``seq_len`` the positional encoding has.
            NonFiniteError: NaN or inf values (impute them explicitly before, see
                :func:`polyprompt.timeseries.data.impute`).
        """
        if not isinstance(x, torch.Tensor):
            raise InputError(
                f"{where}: `x` must be a torch.Tensor (B, C, T), got {type(x).__name__}"
            )
        check_tensor(x, "x", rank=3, finite=False, min_size={0: 1}, where=where)
        if not x.is_floating_point():
            raise InputError(f"{where}: `x` must be a floating tensor, got dtype {x.dtype}")
        if x.shape[1] != self.c_in:
            raise ShapeError(
                f"{where}: `x` has {x.shape[1]} channels, the backbone expects c_in={self.c_in} "
                f"(x is (B, C, T) = {tuple(x.shape)})"
            )
        t = int(x.shape[2])
        if t < self.patch_len:
            raise ShapeError(
                f"{where}: series of length {t} is shorter than one patch "
                f"(patch_len={self.patch_len}); shape {tuple(x.shape)}"
            )
        if t != self.seq_len:
            raise ShapeError(
                f"{where}: series length must be seq_len={self.seq_len} (the positional "
                f"encoding's size), got {t}; window the series first"
            )
        check_tensor(x, "x", where=where)  # finite check last: the message names NaN / inf

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Series ``(B, C, T)`` -> patch tokens ``(B, N, D)`` (``W_P``, ``+ W_pos``, dropout)."""
        self.check_input(x)
        tst = self.tst
        if tst.new_q_len:
            u = tst.W_P(x).transpose(2, 1)  # _TSTBackbone.forward, "Eq 2"
        else:
            u = tst.W_P(x.transpose(2, 1))  # "Eq 1"
        return tst.dropout(u + tst.W_pos)

    def forward_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        prefix: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run encoder layers ``[start, end)``; residual attention scores flow within the call."""
        where = "TSTAdapter.forward_blocks"
        if prefix:
            raise ConfigError(f"{where}: prefix tuning is not supported by the TST adapter")
        check_tensor(tokens, "tokens", rank=3, dims={2: self.embed_dim}, where=where)
        end = self.num_blocks if end is None else end
        if not (0 <= start <= end <= self.num_blocks):
            raise ConfigError(
                f"{where}: need 0 <= start <= end <= {self.num_blocks}, got {start}, {end}"
            )
        scores = None
        for layer in list(self.blocks)[start:end]:
            if self.res_attention:
                tokens, scores = layer(tokens, prev=scores)
            else:
                tokens = layer(tokens)
        return tokens

    def norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """TST is post-norm inside each layer: no final norm (identity)."""
        return tokens

    def pool(self, tokens: torch.Tensor, num_prompt_tokens: int = 0) -> torch.Tensor:
        """Mean of the data tokens (the ``num_prompt_tokens`` leading prompts left out)."""
        return tokens[:, num_prompt_tokens:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Series -> pooled features ``(B, D)`` (no prompts)."""
        return self.pool(self.norm(self.forward_blocks(self.embed(x))))

    def identity(self) -> dict[str, Any]:
        from polyprompt.core.freezing import module_identity

        ident = module_identity(self.tst)
        ident.update(
            {
                "adapter": "polyprompt.timeseries.TSTAdapter",
                "c_in": self.c_in,
                "seq_len": self.seq_len,
                "patch_len": self.patch_len,
                "embed_dim": self.embed_dim,
                "num_blocks": self.num_blocks,
            }
        )
        return ident


def _first_conv(module: nn.Module) -> nn.Conv1d | None:
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            return m
    return None


def load_tsai_state_dict(
    path: str | Path, config: TSTConfig, *, num_classes: int | None = None
) -> tuple[TSTAdapter, dict[str, torch.Tensor]]:
    """Load a tsai ``TSTPlus`` checkpoint in tsai's own key layout into a :class:`TSTAdapter`.

    Accepted files (never unpickled: ``torch.load(weights_only=True)`` or safetensors):

    * ``torch.save(model.state_dict(), path)`` of a ``TSTPlus`` (keys ``backbone.W_P...``,
      ``backbone.W_pos``, ``backbone.encoder.layers.{i}...``, ``head.{j}...``);
    * fastai ``Learner.save(name)`` files (``models/<name>.pth``: ``{"model": state_dict,
      "opt": ...}``);
    * a ``.safetensors`` file with the same keys.

    (``Learner.export`` ``.pkl`` files pickle the whole learner and are refused.)

    Returns:
        ``(adapter, head_state)``: the backbone with the loaded weights and the ``head.*``
        tensors (keys without the ``head.`` prefix; empty if the file has none).

    Raises:
        CheckpointError: unreadable file, pickled learner, missing / unexpected / mis-shaped keys.
    """
    path = Path(path)
    where = f"load_tsai_state_dict({path})"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    if path.suffix == ".pkl":
        raise CheckpointError(
            f"{where}: Learner.export .pkl files are pickles and are not loaded; save the "
            "weights with torch.save(learn.model.state_dict(), 'x.pth') or learn.save('x')"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            from polyprompt.core.checkpoint import load_torch_state

            state = load_torch_state(path)
    except CheckpointError:
        raise
    except Exception as exc:  # torch / safetensors raise many kinds
        raise CheckpointError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # fastai Learner.save layout
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: expected a dict of tensors (a TSTPlus state_dict)")
    model = config.build_tstplus(num_classes or 2)
    backbone_state = {
        k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")
    }
    head_state = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
    other = sorted(k for k in state if not k.startswith(("backbone.", "head.")))
    if other:
        raise CheckpointError(f"{where}: unexpected keys outside backbone./head.: {other[:5]}")
    try:
        missing, unexpected = model.backbone.load_state_dict(backbone_state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit {config}: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: missing backbone keys {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    return TSTAdapter(model, config=config), head_state
