"""POND: common + domain-specific, instance-conditioned prompts on a frozen series transformer.

Wang et al., *POND: Multi-Source Time Series Domain Adaptation with Information-Aware Prompt
Tuning*, KDD 2024 (arXiv:2312.12276). What the paper states ([S], abstract / Fig. 1) and what
is inferred ([I], ``shared/POND.md``) — every inferred choice is a :class:`PONDConfig` option:

* [S] a pre-trained transformer over the series takes learnable prompts with its input;
* [S] **common prompts** shared by all sources + **domain-specific prompts** per source,
  produced by a **conditional module per source domain** from the input series, so prompts
  are instance-level and time-varying; the target gets its own prompts (Fig. 1, step 2);
* [I] composition ``P_i(x) = P_c + P_i + g_i(x)`` (``composition="sum"``) or
  ``[P_c ; P_i + g_i(x)]`` (``"concat"``), prepended to the patch tokens (shallow);
* [I] ``g_i``: per-step (or per-patch token) ``Linear -> GELU``, mean over time,
  ``Linear -> (L_p, D)`` (:class:`PONDGenerator`, a :class:`~polyprompt.core.PromptGenerator`);
* losses, names [S, v1], formulas [I]: task ``L_cls = CE(f(x; P_i(x)), y)``; **fidelity**
  ``L_fid`` = CE of a probe on the mean domain-specific prompt (``fidelity="probe"``) or the
  margin ``max(0, L_cls(P_i) - L_cls(P_c) + m)`` (``"margin"``); **domain discrimination**
  ``L_dd = CE(D(mean specific prompt), i)``; optional orthogonality ``||P_c^T P_i||_F^2``;
  ``L = L_cls + lambda_fid L_fid + lambda_dd L_dd + lambda_orth L_orth``.

Training phases (:meth:`POND.set_phase`; the 3-step schedule lives in
:mod:`polyprompt.timeseries.pipeline`): ``"sources"`` (step 2a: P_c, P_i, g_i, probe, D),
``"target"`` (step 2b: P_T, g_T, probe, D), ``"adapt"`` (step 3: P_T, g_T, optionally the
head and the backbone), ``"all"`` (every non-backbone parameter: for full prompt checkpoints).

Domain ids: ``0 .. num_sources - 1`` are the sources, ``num_sources`` (= :attr:`POND.target_id`)
is the target. ``forward(x)`` without ``domain`` uses the target prompts.

Example (shapes: series ``(B, C, T)`` -> logits ``(B, K)``)::

    >>> import torch
    >>> from polyprompt.core import create
    >>> from polyprompt.timeseries.backbone import TSTConfig
    >>> backbone = TSTConfig(c_in=6, seq_len=64, patch_len=16, d_model=32).build()
    >>> pond = create("pond", backbone, num_classes=7, num_sources=3, num_tokens=4)
    >>> pond(torch.randn(2, 6, 64), domain=torch.tensor([0, 2])).shape
    torch.Size([2, 7])
    >>> losses = pond.losses(torch.randn(4, 6, 64), torch.tensor([0, 1, 2, 3]),
    ...                      torch.tensor([0, 1, 2, 0]))
    >>> sorted(losses)
    ['cls', 'dd', 'fid', 'logits', 'orth', 'total']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.config import PromptConfig, is_int, is_number
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.prompts.generator import PromptGenerator
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor

__all__ = [
    "POND",
    "Composition",
    "FidelityKind",
    "GeneratorInput",
    "PONDConfig",
    "PONDGenerator",
    "Phase",
]


class Composition(str, Enum):
    """[I] How common and domain prompts combine: ``SUM`` (L_p tokens) or ``CONCAT`` (2 L_p)."""

    SUM = "sum"
    CONCAT = "concat"


class GeneratorInput(str, Enum):
    """[I] What the conditional module reads: the raw ``SERIES`` steps ``(B, T, C)`` or the
    frozen backbone's patch ``TOKENS`` ``(B, N, D)``."""

    SERIES = "series"
    TOKENS = "tokens"


class FidelityKind(str, Enum):
    """[I] Fidelity loss: ``PROBE`` (label probe on the prompt), ``MARGIN`` (the domain prompt
    must beat the common prompt by ``fidelity_margin``), ``NONE``."""

    PROBE = "probe"
    MARGIN = "margin"
    NONE = "none"


class Phase(str, Enum):
    """Which parameters train (see module docstring)."""

    SOURCES = "sources"
    TARGET = "target"
    ADAPT = "adapt"
    FROZEN = "frozen"
    ALL = "all"  # every POND parameter (not the backbone): what a full prompt checkpoint holds


@dataclass
class PONDConfig(PromptConfig):
    """Config of :class:`POND` ([I] = inferred default, see ``shared/POND.md``).

    Args:
        num_classes: classes (>= 2).
        num_sources: source domains (>= 1); the target gets one more prompt slot.
        num_tokens: prompt tokens L_p per prompt set [I: 5-10].
        generator_hidden: hidden size of each conditional module g_i [I].
        generator_input: :class:`GeneratorInput` [I: "series"].
        composition: :class:`Composition` [I: "sum"].
        fidelity: :class:`FidelityKind` [I: "probe"].
        fidelity_margin: margin m of ``fidelity="margin"``.
        lambda_fid, lambda_dd, lambda_orth: loss weights [I: 0.5, 0.5, 0].
        init_std: std of the normal init of the static prompts.
        head_dropout: dropout before the head.
    """

    num_classes: int = 2
    num_sources: int = 1
    num_tokens: int = 5
    generator_hidden: int = 64
    generator_input: GeneratorInput = GeneratorInput.SERIES
    composition: Composition = Composition.SUM
    fidelity: FidelityKind = FidelityKind.PROBE
    fidelity_margin: float = 0.1
    lambda_fid: float = 0.5
    lambda_dd: float = 0.5
    lambda_orth: float = 0.0
    init_std: float = 0.02
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_int(self.num_classes) and self.num_classes >= 2, "num_classes", "must be an int >= 2")
        r(is_int(self.num_sources) and self.num_sources >= 1, "num_sources", "must be an int >= 1")
        r(is_int(self.num_tokens) and self.num_tokens >= 1, "num_tokens", "must be an int >= 1")
        r(
            is_int(self.generator_hidden) and self.generator_hidden >= 1,
            "generator_hidden",
            "must be an int >= 1",
        )
        for name in ("fidelity_margin", "lambda_fid", "lambda_dd", "lambda_orth"):
            r(is_number(getattr(self, name)) and getattr(self, name) >= 0, name, "must be >= 0")
        r(is_number(self.init_std) and self.init_std > 0, "init_std", "must be > 0")
        r(
            is_number(self.head_dropout) and 0 <= self.head_dropout < 1,
            "head_dropout",
            "must be in [0, 1)",
        )


class PONDGenerator(PromptGenerator):
    """Conditional module g_i: ``(B, L, F)`` -> ``Linear(F, h) -> GELU -> mean_L -> Linear(h, L_p D)``.

    [S] "a conditional module for each source domain to generate prompts from time series
    input data"; the layer layout is [I]. The last layer starts at zero, so a fresh
    generator adds nothing and the static prompts dominate at the start.

    Shapes: ``(B, L, in_dim)`` -> ``(B, num_tokens, dim)``.

    Example::

        >>> PONDGenerator(6, num_tokens=4, dim=32)(torch.randn(2, 100, 6)).shape
        torch.Size([2, 4, 32])
    """

    input_ranks = (3,)

    def __init__(self, in_dim: int, num_tokens: int, dim: int, hidden: int = 64) -> None:
        super().__init__(num_tokens, dim, in_dim=in_dim)
        self.inp = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, num_tokens * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        z = F.gelu(self.inp(features)).mean(dim=1)
        return self.out(z).view(features.shape[0], self.num_tokens, self.dim)


@register_method("pond")
class POND(PromptMethod):
    """POND over a :class:`~polyprompt.core.backbones.PromptableBackbone` (see module docstring).

    Trainable parts: ``common`` ``(L_p, D)``, ``domain_prompts[i]`` ``(L_p, D)`` and
    ``generators[i]`` for ``i = 0..S`` (S = target slot), ``head`` ``Linear(D, K)``, ``probe``
    ``Linear(D, K)`` (fidelity), ``discriminator`` ``Linear(D, S + 1)``.
    """

    config_class = PONDConfig
    method_name = "pond"

    def __init__(self, backbone: nn.Module, config: PONDConfig) -> None:
        super().__init__(backbone, config)
        for attr in ("embed", "forward_blocks", "norm", "pool", "embed_dim"):
            if not hasattr(backbone, attr):
                raise InputError(
                    f"POND: backbone {type(backbone).__name__} lacks {attr!r} (PromptableBackbone)"
                )
        freeze_backbone(backbone)
        d = int(backbone.embed_dim)
        lp, s = config.num_tokens, config.num_sources
        self.target_id = s
        self.num_domains = s + 1
        in_dim = d if config.generator_input is GeneratorInput.TOKENS else int(backbone.c_in)
        std = config.init_std
        self.common = nn.Parameter(torch.randn(lp, d) * std)
        self.domain_prompts = nn.ParameterList(
            [nn.Parameter(torch.randn(lp, d) * std) for _ in range(s + 1)]
        )
        self.generators = nn.ModuleList(
            [PONDGenerator(in_dim, lp, d, config.generator_hidden) for _ in range(s + 1)]
        )
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(d, config.num_classes)
        self.probe = nn.Linear(d, config.num_classes)
        self.discriminator = nn.Linear(d, s + 1)
        self.phase = Phase.SOURCES
        self.adapt_backbone = False
        #: loss weights that replace the config's for the current phase, e.g. ``{"lambda_dd": 0}``
        self.loss_overrides: dict[str, float] = {}
        self.set_phase(Phase.SOURCES)

    # ------------------------------------------------------------------ phases
    def set_phase(
        self, phase: Phase | str, *, adapt_backbone: bool = False, train_head: bool = False
    ):
        """Set which parameters train; returns ``self``.

        ``"sources"``: common, source prompts/generators, probe, discriminator (+ head if
        ``train_head``). ``"target"``: the target slot, probe, discriminator. ``"adapt"``:
        the target slot (+ the head if ``train_head``, + the backbone if ``adapt_backbone``).
        ``"frozen"``: none. ``"all"``: every POND parameter but the backbone (set it before
        :func:`~polyprompt.core.checkpoint.save_prompt` / ``load_prompt`` to save / load the
        common prompt, every domain slot, the head, the probe and the discriminator).
        """
        phase = Phase(phase)
        self.phase = phase
        self.adapt_backbone = bool(adapt_backbone and phase is Phase.ADAPT)
        self.requires_grad_(False)
        t = self.target_id
        if phase is Phase.ALL:
            self.requires_grad_(True)
            self.backbone.requires_grad_(False)
        elif phase is Phase.SOURCES:
            self.common.requires_grad_(True)
            for i in range(t):
                self.domain_prompts[i].requires_grad_(True)
                self.generators[i].requires_grad_(True)
            self.probe.requires_grad_(True)
            self.discriminator.requires_grad_(True)
            self.head.requires_grad_(train_head)
        elif phase is not Phase.FROZEN:
            self.domain_prompts[t].requires_grad_(True)
            self.generators[t].requires_grad_(True)
            if phase is Phase.TARGET:
                self.probe.requires_grad_(True)
                self.discriminator.requires_grad_(True)
            else:
                self.head.requires_grad_(train_head)
                self.backbone.requires_grad_(self.adapt_backbone)
        return self

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)
        if not self.adapt_backbone:
            self.backbone.eval()  # frozen backbone: fixed dropout / norm statistics
        return self

    def init_target_from(self, source: int) -> None:
        """Step 3 [I]: copy source ``source``'s static prompt and generator into the target slot."""
        self._check_domain_ids(torch.tensor([source]), where="POND.init_target_from")
        if source == self.target_id:
            raise InputError("POND.init_target_from: pass a source id, not the target id")
        with torch.no_grad():
            self.domain_prompts[self.target_id].copy_(self.domain_prompts[source])
            self.generators[self.target_id].load_state_dict(self.generators[source].state_dict())

    def reset_target(self) -> None:
        """Step 3 [I], ``adapt_init="common"``: empty the target slot (static prompt and the
        generator's zero-initialised output layer set to 0), so the target starts from the
        common prompt alone, i.e. from what is shared by all sources."""
        t = self.target_id
        with torch.no_grad():
            self.domain_prompts[t].zero_()
            self.generators[t].out.weight.zero_()
            self.generators[t].out.bias.zero_()

    # ------------------------------------------------------------------ prompts
    @property
    def num_prompt_tokens(self) -> int:
        n = self.config.num_tokens
        return 2 * n if self.config.composition is Composition.CONCAT else n

    def _check_domain_ids(self, domain: torch.Tensor, where: str) -> None:
        if domain.numel() and (int(domain.min()) < 0 or int(domain.max()) >= self.num_domains):
            bad = sorted({int(v) for v in domain.flatten() if not 0 <= int(v) < self.num_domains})
            raise InputError(
                f"{where}: unknown domain id(s) {bad[:5]}; known: 0..{self.num_sources - 1} "
                f"(sources) and {self.target_id} (target)"
            )

    @property
    def num_sources(self) -> int:
        return self.target_id

    def _domain_tensor(
        self, domain: Any, batch: int, device: torch.device, where: str
    ) -> torch.Tensor:
        if domain is None:
            domain = self.target_id
        if isinstance(domain, int) and not isinstance(domain, bool):
            domain = torch.full((batch,), domain, dtype=torch.long, device=device)
        if not isinstance(domain, torch.Tensor):
            raise InputError(f"{where}: `domain` must be None, an int or a (B,) tensor of ids")
        if domain.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
            raise InputError(f"{where}: `domain` must hold integer ids, got dtype {domain.dtype}")
        check_tensor(domain, "domain", rank=1, dims={0: batch}, where=where)
        domain = domain.to(device=device, dtype=torch.long)
        self._check_domain_ids(domain, where)
        return domain

    def _generator_features(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.generator_input is GeneratorInput.TOKENS:
            return tokens
        return x.transpose(1, 2)  # (B, T, C)

    def specific_prompts(
        self, x: torch.Tensor, domain: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Domain-specific part ``P_d + g_d(x)`` ``(B, L_p, D)`` for each sample's domain ``d``."""
        if tokens is None:
            tokens = self.backbone.embed(x)
        feats = self._generator_features(x, tokens)
        out = tokens.new_zeros(x.shape[0], self.config.num_tokens, int(self.backbone.embed_dim))
        for d in torch.unique(domain).tolist():
            idx = (domain == d).nonzero(as_tuple=True)[0]
            gen = self.generators[d](feats[idx])
            out = out.index_put((idx,), gen + self.domain_prompts[d])
        return out

    def compose(self, specific: torch.Tensor) -> torch.Tensor:
        """Common + specific -> the prompt tokens prepended to the series tokens."""
        common = self.common.unsqueeze(0).expand(specific.shape[0], -1, -1)
        if self.config.composition is Composition.CONCAT:
            return torch.cat([common, specific], dim=1)
        return common + specific

    # ------------------------------------------------------------------ forward
    def _encode(self, tokens: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        p = int(getattr(self.backbone, "num_prefix_tokens", 0))
        seq = torch.cat([tokens[:, :p], prompt, tokens[:, p:]], dim=1)
        seq = self.backbone.norm(self.backbone.forward_blocks(seq))
        return self.backbone.pool(seq, num_prompt_tokens=prompt.shape[1])

    def forward_parts(self, x: torch.Tensor, domain: Any = None) -> dict[str, torch.Tensor]:
        """``{"logits" (B, K), "features" (B, D), "specific" (B, L_p, D), "tokens" (B, N, D)}``."""
        where = "POND.forward"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{where}: `x` must be a tensor (B, C, T), got {type(x).__name__}")
        tokens = self.backbone.embed(x)
        dom = self._domain_tensor(domain, x.shape[0], x.device, where)
        specific = self.specific_prompts(x, dom, tokens)
        feats = self._encode(tokens, self.compose(specific))
        logits = self.head(self.head_drop(feats))
        return {"logits": logits, "features": feats, "specific": specific, "tokens": tokens}

    def forward(self, x: torch.Tensor, domain: Any = None) -> torch.Tensor:
        """Series ``(B, C, T)`` + domain ids (``None`` = target) -> logits ``(B, K)``."""
        return self.forward_parts(x, domain)["logits"]

    def forward_common(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with the common prompt only (the ``margin`` fidelity's reference)."""
        if tokens is None:
            tokens = self.backbone.embed(x)
        n = self.num_prompt_tokens
        common = self.common.unsqueeze(0).expand(x.shape[0], -1, -1)
        if n != common.shape[1]:
            common = torch.cat([common, torch.zeros_like(common)], dim=1)
        return self.head(self._encode(tokens, common))

    # ------------------------------------------------------------------ losses
    def losses(
        self, x: torch.Tensor, y: torch.Tensor, domain: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """POND's objective on a labelled batch of mixed domains.

        Returns ``{"total", "cls", "fid", "dd", "orth", "logits"}``; ``y = -1`` marks an
        unlabelled window (left out of ``cls`` / ``fid``, kept in ``dd``).
        """
        cfg = self.config
        lam = {k: float(getattr(cfg, k)) for k in ("lambda_fid", "lambda_dd", "lambda_orth")}
        lam.update(self.loss_overrides)
        where = "POND.losses"
        check_tensor(y, "y", rank=1, dims={0: x.shape[0]}, where=where)
        parts = self.forward_parts(x, domain)
        logits, specific = parts["logits"], parts["specific"]
        dom = self._domain_tensor(domain, x.shape[0], x.device, where)
        y = y.to(device=logits.device, dtype=torch.long)
        lab = y >= 0
        zero = logits.sum() * 0.0
        cls = F.cross_entropy(logits[lab], y[lab]) if lab.any() else zero
        pooled = specific.mean(dim=1)  # (B, D)
        if cfg.fidelity is FidelityKind.PROBE and lab.any():
            fid = F.cross_entropy(self.probe(pooled[lab]), y[lab])
        elif cfg.fidelity is FidelityKind.MARGIN and lab.any():
            ref = F.cross_entropy(
                self.forward_common(x[lab], parts["tokens"][lab]), y[lab], reduction="none"
            )
            own = F.cross_entropy(logits[lab], y[lab], reduction="none")
            fid = F.relu(own - ref.detach() + cfg.fidelity_margin).mean()
        else:
            fid = zero
        dd = F.cross_entropy(self.discriminator(pooled), dom) if lam["lambda_dd"] > 0 else zero
        if lam["lambda_orth"] > 0:
            used = torch.unique(dom).tolist()
            orth = sum(((self.common.T @ self.domain_prompts[d]) ** 2).sum() for d in used) / len(
                used
            )
        else:
            orth = zero
        total = cls + lam["lambda_fid"] * fid + lam["lambda_dd"] * dd + lam["lambda_orth"] * orth
        return {"total": total, "cls": cls, "fid": fid, "dd": dd, "orth": orth, "logits": logits}

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trainer ``step_fn`` body: batch ``(x, y, domain)`` -> ``(total loss, logits, y)``."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise InputError("POND.step: a batch must be (x, y, domain)")
        x, y, d = batch
        out = self.losses(x, y, d)
        lab = y >= 0
        return out["total"], out["logits"][lab], y[lab]

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"num_sources={c.num_sources}, num_tokens={c.num_tokens}, "
            f"composition={c.composition.value}, phase={self.phase.value}"
        )


def pond_step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trainer ``step_fn`` for :class:`POND` (calls ``model(...)`` via :meth:`POND.step`)."""
    target = getattr(model, "module", model)  # DDP
    if not isinstance(target, POND):
        raise ConfigError(f"pond_step: expected a POND model, got {type(target).__name__}")
    return target.step(batch)
