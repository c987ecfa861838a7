"""Dataclass configs of the graph package (validated, JSON round trip via ``to_dict``).

Defaults follow RELIEF's official ``graph_level/main.py`` (JasonZhujp/RELIEF) and the paper's
Section 5 / Appendix: 5-layer 300-d GIN, JK=last, mean pool; H-PPO with clip 0.2, value
coefficient 0.5, entropy 0.01 (decaying), lr 5e-4, grad-norm 0.5, GAE 0.99 / 0.95, three
sub-policies with a KL term to their ensemble, log-std annealed 0 -> -5.

Example::

    >>> from polyprompt.graph.config import RELIEFConfig
    >>> cfg = RELIEFConfig(num_classes=3)
    >>> cfg.agent.clip_d, cfg.agent.ensemble_num
    (0.2, 3)
    >>> RELIEFConfig(num_classes=1)
    Traceback (most recent call last):
    ...
    polyprompt.core.errors.ConfigError: RELIEFConfig.num_classes: must be an int >= 2 (got 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from polyprompt.core.config import PromptConfig, is_number


def _int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


class JK(str, Enum):
    """Jumping-knowledge mode of the GIN (pretrain-gnns ``JK``)."""

    LAST = "last"
    SUM = "sum"
    MAX = "max"


@dataclass
class GINConfig(PromptConfig):
    """The pretrain-gnns GIN (``chem/model.py`` ``GNN``, RELIEF ``PromptedGNN``).

    Args:
        num_layers: message-passing layers (paper: 5 for graph tasks, 2 for node tasks).
        emb_dim: embedding size (paper: 300).
        jk: how layer outputs are combined (paper: ``last``).
        drop_ratio: dropout after each layer (only active when the GNN trains).
        max_nodes: node cap; larger graphs raise :class:`~polyprompt.core.errors.InputError`.
        in_features: ``None`` (default): molecules, the ``from_smiles`` atom / bond embedding
            tables. An int: real-valued node features of that width (node tasks, e.g.
            bag-of-words or one-hot), read by a linear input encoder; edges carry no features
            (RELIEF ``node_level/model.py`` ``GIN``: plain ``GINConv``, 2 layers).
    """

    num_layers: int = 5
    emb_dim: int = 300
    jk: JK = JK.LAST
    drop_ratio: float = 0.0
    max_nodes: int = 200
    in_features: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            self.in_features is None or _int(self.in_features, 1),
            "in_features",
            "must be None (molecules) or an int >= 1 (continuous node features)",
        )
        self.require(_int(self.num_layers, 1), "num_layers", "must be an int >= 1")
        self.require(_int(self.emb_dim, 4), "emb_dim", "must be an int >= 4")
        self.require(
            is_number(self.drop_ratio) and 0 <= self.drop_ratio < 1,
            "drop_ratio",
            "must be in [0, 1)",
        )
        self.require(_int(self.max_nodes, 1), "max_nodes", "must be an int >= 1")


@dataclass
class PretrainGraphConfig(PromptConfig):
    """In-situ pre-training of the GIN on unlabelled molecules (Hu et al. 2020 AttrMasking +
    You et al. 2020 GraphCL), run one after the other (``strategies``).

    Args:
        strategies: subset of ``("attr_masking", "graphcl")``, in order.
        epochs: epochs per strategy.
        batch_size, lr: Adam settings (pretrain-gnns: 256 / 1e-3; GraphCL 128 / 1e-3).
        mask_rate: AttrMasking share of atoms masked (paper 0.15).
        aug_ratio: GraphCL node-drop / subgraph ratio (paper 0.2).
        temperature: GraphCL NT-Xent temperature (the official chem code uses ``T = 0.1``).
        max_molecules: cap on the unlabelled set (None = all).
    """

    strategies: tuple[str, ...] = ("attr_masking", "graphcl")
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    mask_rate: float = 0.15
    aug_ratio: float = 0.2
    temperature: float = 0.1
    max_molecules: int | None = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = {"attr_masking", "graphcl"}
        self.require(
            isinstance(self.strategies, tuple)
            and len(self.strategies) >= 1
            and all(s in ok for s in self.strategies),
            "strategies",
            f"must be a non-empty tuple of {sorted(ok)}",
        )
        self.require(_int(self.epochs), "epochs", "must be an int >= 1")
        self.require(_int(self.batch_size, 2), "batch_size", "must be an int >= 2")
        self.require(is_number(self.lr) and self.lr > 0, "lr", "must be > 0")
        self.require(is_number(self.mask_rate) and 0 < self.mask_rate < 1, "mask_rate", "in (0, 1)")
        self.require(
            is_number(self.aug_ratio) and 0 <= self.aug_ratio < 1, "aug_ratio", "in [0, 1)"
        )
        self.require(is_number(self.temperature) and self.temperature > 0, "temperature", "> 0")
        self.require(
            self.max_molecules is None or _int(self.max_molecules, 2),
            "max_molecules",
            "must be None or an int >= 2",
        )
        self.require(_int(self.seed, 0), "seed", "must be an int >= 0")


@dataclass
class GraphClassifierConfig(PromptConfig):
    """Head over the mean-pooled frozen GIN output (RELIEF's ``GNNBasedNet``).

    Args:
        num_classes: classes (>= 2; binary tasks use 2 and ROC-AUC on the positive class).
        head_layers: MLP layers of the projection head (official ``--head_layers``, 1-3).
        num_basis: GPF-plus basis vectors (GPF-plus only; Fang et al. use 5-20).
    """

    num_classes: int = 2
    head_layers: int = 1
    num_basis: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(_int(self.num_classes, 2), "num_classes", "must be an int >= 2")
        self.require(_int(self.head_layers, 1), "head_layers", "must be an int >= 1")
        self.require(_int(self.num_basis, 1), "num_basis", "must be an int >= 1")


@dataclass
class AllInOneConfig(GraphClassifierConfig):
    """All-in-One prompt graph (Sun et al., KDD 2023; ProG ``HeavyPrompt``).

    Args:
        token_num: prompt tokens (nodes of the prompt graph), in the atom-embedding space.
        inner_prune: token-token edge where ``sigmoid(p_i . p_j) >= inner_prune``.
        cross_prune: token -> node edge where ``sigmoid(p_k . x_n) >= cross_prune``.
    """

    token_num: int = 10
    inner_prune: float = 0.3
    cross_prune: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(_int(self.token_num), "token_num", "must be an int >= 1")
        for name in ("inner_prune", "cross_prune"):
            v = getattr(self, name)
            self.require(is_number(v) and 0 <= v <= 1, name, "must be in [0, 1]")


@dataclass
class HPPOConfig(PromptConfig):
    """H-PPO of RELIEF (``graph_level/agent.py`` ``H_PPO`` + ``base.py`` ``train_policy``).

    Args:
        max_z: bound of the continuous action (prompt content), ``tanh * max_z``.
        init_log_std / final_log_std: log-std of the Gaussian, annealed linearly over the
            agent epochs (paper: 0 -> -5).
        clip_d / clip_c: PPO clip ratios of the discrete / continuous actor.
        value_coef: critic loss weight. entropy_coef: discrete entropy weight (decays
            linearly to 0 over the epochs, as the official ``descend_decay_frac``).
        lr: Adam lr of actors and critic. lr_decay: ``"static"`` or ``"down"`` (linear).
        max_grad_norm: gradient clipping. gamma / gae_lambda: GAE.
        update_epochs: PPO passes over a rollout (official ``policy_update_nums``).
        minibatch_size: transitions per PPO minibatch.
        target_kl_d / target_kl_c: KL early stop thresholds (None = off).
        ensemble_num: sub-policies (paper 3); penalty_d / penalty_c: KL-to-ensemble weights.
        rollout_graphs: graphs per rollout batch (official ``--batch_size`` 8).
        critic_hidden: hidden width of the permutation-invariant critic.
        normalize_reward: running mean/std reward normalisation (official ``Normalization``).
    """

    max_z: float = 0.5
    init_log_std: float = 0.0
    final_log_std: float = -5.0
    clip_d: float = 0.2
    clip_c: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    lr: float = 5e-4
    lr_decay: str = "static"
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 10
    minibatch_size: int = 64
    target_kl_d: float | None = 0.001
    target_kl_c: float | None = 0.1
    ensemble_num: int = 3
    penalty_d: float = 1.0
    penalty_c: float = 0.1
    rollout_graphs: int = 8
    critic_hidden: int = 64
    normalize_reward: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_number(self.max_z) and self.max_z > 0, "max_z", "must be > 0")
        r(is_number(self.init_log_std), "init_log_std", "must be a finite number")
        r(is_number(self.final_log_std), "final_log_std", "must be a finite number")
        for name in ("clip_d", "clip_c"):
            r(
                is_number(getattr(self, name)) and 0 < getattr(self, name) < 1,
                name,
                "must be in (0, 1)",
            )
        for name in ("value_coef", "entropy_coef", "penalty_d", "penalty_c"):
            r(is_number(getattr(self, name)) and getattr(self, name) >= 0, name, "must be >= 0")
        r(is_number(self.lr) and self.lr > 0, "lr", "must be > 0")
        r(self.lr_decay in ("static", "down"), "lr_decay", "must be 'static' or 'down'")
        r(is_number(self.max_grad_norm) and self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        r(is_number(self.gamma) and 0 <= self.gamma <= 1, "gamma", "must be in [0, 1]")
        r(is_number(self.gae_lambda) and 0 <= self.gae_lambda <= 1, "gae_lambda", "in [0, 1]")
        r(_int(self.update_epochs), "update_epochs", "must be an int >= 1")
        r(_int(self.minibatch_size, 2), "minibatch_size", "must be an int >= 2")
        for name in ("target_kl_d", "target_kl_c"):
            v = getattr(self, name)
            r(v is None or (is_number(v) and v > 0), name, "must be None or > 0")
        r(_int(self.ensemble_num), "ensemble_num", "must be an int >= 1")
        r(_int(self.rollout_graphs), "rollout_graphs", "must be an int >= 1")
        r(_int(self.critic_hidden), "critic_hidden", "must be an int >= 1")
        r(isinstance(self.normalize_reward, bool), "normalize_reward", "must be a bool")


@dataclass
class RELIEFConfig(GraphClassifierConfig):
    """RELIEF: agent settings, alternation schedule and projection head.

    Args:
        agent: :class:`HPPOConfig`.
        epochs: agent epochs (paper 50-100); each = PPO updates of every sub-policy on
            rollouts over the training graphs, then ``head_epochs`` of the projection head.
        head_epochs: projection-head epochs per agent epoch (official ``tasknet_epochs``).
        head_lr: projection-head Adam lr (official ``tasknet_lr`` 1e-3).
        batch_size: graphs per projection-head batch (official ``train_loader_size`` 8).
        eval_batch_size: graphs per evaluation batch.
        eval_every: evaluate validation ROC-AUC every this many epochs.
        skip_epochs: model selection ignores epochs before this (official ``skip_epoch``).
    """

    agent: HPPOConfig = field(default_factory=HPPOConfig)
    epochs: int = 20
    head_epochs: int = 1
    head_lr: float = 1e-3
    batch_size: int = 8
    eval_batch_size: int = 64
    eval_every: int = 1
    skip_epochs: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.agent, dict):
            self.agent = HPPOConfig.from_dict(self.agent)
        super().__post_init__()
        r = self.require
        r(isinstance(self.agent, HPPOConfig), "agent", "must be an HPPOConfig")
        r(_int(self.epochs), "epochs", "must be an int >= 1")
        r(_int(self.head_epochs, 0), "head_epochs", "must be an int >= 0")
        r(is_number(self.head_lr) and self.head_lr > 0, "head_lr", "must be > 0")
        r(_int(self.batch_size), "batch_size", "must be an int >= 1")
        r(_int(self.eval_batch_size), "eval_batch_size", "must be an int >= 1")
        r(_int(self.eval_every), "eval_every", "must be an int >= 1")
        r(_int(self.skip_epochs, 0), "skip_epochs", "must be an int >= 0")
