"""H-PPO: hybrid discrete (which node) + continuous (which prompt) PPO over variable-size graphs.

RELIEF Section 4 / official ``graph_level/agent.py`` (``ActorDiscrete``, ``ActorContinuous``,
``H_PPO``) and ``reward.py`` (GAE). stable-baselines3 has no hybrid-action PPO; what it has is
reused: ``LinearSchedule`` (entropy decay, log-std annealing, lr decay), ``RunningMeanStd``
(reward normalisation), ``update_learning_rate``, ``explained_variance`` and its ``Logger``.

* discrete actor (per node, shared): MLP ``D -> D/2 -> D/4 -> 1`` (tanh, orthogonal init,
  last gain 0.01) on the node embeddings of the currently prompted graph; softmax over the
  graph's real nodes (padding masked to ``-inf``).
* continuous actor (per node, shared): MLP ``D -> D/2 -> D/2 -> D``, mean
  ``tanh(.) * max_z`` at the chosen node; Gaussian with a fixed, annealed log-std
  (``init_log_std -> final_log_std``, paper 0 -> -5).
* critic: **permutation-invariant** -- ``[mean, max]`` pooling of the valid node states, MLP
  ``2D -> H -> H -> 1``; the official critic flattens the zero-padded ``(max_nodes, D)``
  state into an MLP (``max_nodes*D -> 5% -> 2.5% -> 1``), see :func:`official_critic_params`.
* loss: clipped surrogates of both actors, ``- c_ent * H(discrete)``, ``c_v * MSE(V, R)``,
  optional KL-to-ensemble terms (``K`` sub-policies: discrete ``KL(pi_ens || pi_k)`` with
  ``pi_ens`` the normalised element-wise max; continuous ``KL(N_k || N_ens)`` with the mean
  of means / stds, at the ensemble's arg-max node), gradient clipping, approximate-KL early
  stop per PPO epoch, advantage normalisation per rollout.

Example (B graphs padded to N nodes, D features)::

    >>> import torch
    >>> from polyprompt.graph.agent import HPPOAgent
    >>> from polyprompt.graph.config import HPPOConfig
    >>> agent = HPPOAgent(16, HPPOConfig(ensemble_num=2))
    >>> states, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    >>> a_d, a_c, lp_d, lp_c = agent.act(states, mask, policy=0)
    >>> a_d.shape, a_c.shape, agent.value(states, mask).shape
    (torch.Size([3]), torch.Size([3, 16]), torch.Size([3]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Normal

from polyprompt.core.errors import InputError, ShapeError
from polyprompt.graph.config import HPPOConfig

__all__ = [
    "ActorContinuous",
    "ActorDiscrete",
    "HPPOAgent",
    "NodeLayout",
    "PooledCritic",
    "Rollout",
    "compute_gae",
    "official_critic_params",
]


def _orthogonal(layer: nn.Linear, gain: float = math.sqrt(2)) -> None:
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


class ActorDiscrete(nn.Module):
    """Node scores ``(B, N, D) -> (B, N)`` logits, padding masked to ``-inf``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        h1, h2 = max(1, dim // 2), max(1, dim // 4)
        self.linears = nn.Sequential(
            nn.Linear(dim, h1), nn.Tanh(), nn.Linear(h1, h2), nn.Tanh(), nn.Linear(h2, 1)
        )
        _orthogonal(self.linears[0])
        _orthogonal(self.linears[2])
        _orthogonal(self.linears[4], gain=0.01)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.linears(states).squeeze(-1)
        return logits.masked_fill(~mask, float("-inf"))


class ActorContinuous(nn.Module):
    """Prompt mean at the chosen node: ``tanh(MLP(s_node)) * max_z`` ``(B, D)``."""

    def __init__(self, dim: int, max_z: float) -> None:
        super().__init__()
        h = max(1, dim // 2)
        self.max_z = max_z
        self.linears = nn.Sequential(
            nn.Linear(dim, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, dim)
        )
        _orthogonal(self.linears[0])
        _orthogonal(self.linears[2])
        _orthogonal(self.linears[4], gain=0.01)

    def forward(self, states: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        chosen = states[torch.arange(states.shape[0], device=states.device), node]  # (B, D)
        return torch.tanh(self.linears(chosen)) * self.max_z


class PooledCritic(nn.Module):
    """``V(s)`` from ``[mean, max]`` over the valid node states (invariant to node order)."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.linears = nn.Sequential(
            nn.Linear(2 * dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp_min(1.0)
        mx = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        return self.linears(torch.cat([mean, mx], -1)).squeeze(-1)


def official_critic_params(max_nodes: int, emb_dim: int) -> int:
    """Parameter count of RELIEF's official ``Critic`` (flattened padded state MLP)."""
    d_in = int(emb_dim * max_nodes)
    h1, h2 = int(d_in * 0.05), int(d_in * 0.025)
    return d_in * h1 + h1 + h1 * h2 + h2 + h2 + 1


@dataclass
class NodeLayout:
    """Where the ``N`` nodes of a PyG batch of ``B`` graphs sit in the padded ``(B, n_max)``
    view; built once per episode (:meth:`from_batch`), so no step re-batches the graphs."""

    flat_index: torch.Tensor  # (N,) position of each node in the flattened (B * n_max) view
    offsets: torch.Tensor  # (B,) first node of each graph (``ptr[:-1]``)
    mask: torch.Tensor  # (B, n_max) bool, real nodes
    batch_size: int
    n_max: int

    @classmethod
    def from_batch(cls, batch: torch.Tensor, ptr: torch.Tensor, num_graphs: int) -> NodeLayout:
        counts = ptr[1:] - ptr[:-1]
        n_max = int(counts.max())
        pos = torch.arange(batch.shape[0], device=batch.device) - ptr[batch]
        mask = torch.arange(n_max, device=batch.device)[None, :] < counts[:, None]
        return cls(batch * n_max + pos, ptr[:-1], mask, int(num_graphs), n_max)

    def dense(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``(N, ...) -> (B, n_max, ...)``, padding = ``fill``."""
        out = x.new_full((self.batch_size * self.n_max, *x.shape[1:]), fill)
        return out.index_copy_(0, self.flat_index, x).view(
            self.batch_size, self.n_max, *x.shape[1:]
        )


def _fused_mlp(mlps: list[nn.Sequential], x: torch.Tensor) -> torch.Tensor:
    """``K`` three-layer tanh MLPs (``Linear, Tanh, Linear, Tanh, Linear``) on the same
    input ``(M, D)`` at once -> ``(K, M, out)``: one matmul for all first layers, batched
    matmuls after (instead of ``3 K`` small ones)."""
    k = len(mlps)
    w1 = torch.cat([m[0].weight for m in mlps])
    b1 = torch.cat([m[0].bias for m in mlps])
    y = torch.tanh(F.linear(x, w1, b1)).view(x.shape[0], k, -1).transpose(0, 1)
    for i in (2, 4):
        w = torch.stack([m[i].weight for m in mlps]).transpose(1, 2)
        b = torch.stack([m[i].bias for m in mlps]).unsqueeze(1)
        y = torch.baddbmm(b, y, w)
        if i == 2:
            y = torch.tanh(y)
    return y


@dataclass
class Rollout:
    """Valid transitions of a batch of episodes (flattened over graphs and steps)."""

    states: torch.Tensor  # (T, N, D)
    masks: torch.Tensor  # (T, N) bool
    action_d: torch.Tensor  # (T,)
    action_c: torch.Tensor  # (T, D)
    logp_d: torch.Tensor  # (T,)
    logp_c: torch.Tensor  # (T,)
    advantages: torch.Tensor  # (T,)
    returns: torch.Tensor  # (T,)

    def __len__(self) -> int:
        return int(self.action_d.shape[0])


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over ``(B, T)`` episodes (official ``reward.compute_adv_ret``), vectorised over B.

    ``delta_t = r_t + gamma (1 - done_t) V(s_{t+1}) - V(s_t)``;
    ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``; returns ``A + V``.
    """
    adv = torch.zeros_like(rewards)
    gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        nd = 1.0 - dones[:, t]
        delta = rewards[:, t] + gamma * nd * next_values[:, t] - values[:, t]
        gae = delta + gamma * lam * nd * gae
        adv[:, t] = gae
    return adv, adv + values


class HPPOAgent(nn.Module):
    """``K`` sub-policies (discrete + continuous actor each) and one shared critic."""

    def __init__(self, emb_dim: int, config: HPPOConfig | None = None) -> None:
        super().__init__()
        from stable_baselines3.common.utils import LinearSchedule

        self.config = cfg = config or HPPOConfig()
        self.emb_dim = int(emb_dim)
        k = cfg.ensemble_num
        self.actor_ds = nn.ModuleList(ActorDiscrete(emb_dim) for _ in range(k))
        self.actor_cs = nn.ModuleList(ActorContinuous(emb_dim, cfg.max_z) for _ in range(k))
        self.critic = PooledCritic(emb_dim, cfg.critic_hidden)
        self.register_buffer("log_std", torch.tensor(float(cfg.init_log_std)))
        self.entropy_coef = cfg.entropy_coef
        self._ent_schedule = LinearSchedule(cfg.entropy_coef, 0.0, 1.0)
        self._std_schedule = LinearSchedule(cfg.init_log_std, cfg.final_log_std, 1.0)
        self._lr_schedule = LinearSchedule(cfg.lr, 0.0, 1.0)
        self.lr = cfg.lr

    # -- schedules ---------------------------------------------------------------------
    def set_progress(self, progress_remaining: float) -> None:
        """Official per-epoch schedule with ``progress_remaining = 1 - (epoch - 1) / epochs``:
        entropy coefficient and (``lr_decay="down"``) lr decay linearly to 0, log-std goes
        linearly from ``init_log_std`` to ``final_log_std``."""
        p = float(min(1.0, max(0.0, progress_remaining)))
        self.entropy_coef = float(self._ent_schedule(p))
        self.log_std.fill_(float(self._std_schedule(p)))
        self.lr = float(self._lr_schedule(p)) if self.config.lr_decay == "down" else self.config.lr

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One Adam per sub-policy over its actors and the shared critic (official layout)."""
        return [
            torch.optim.Adam(
                [
                    *self.actor_ds[i].parameters(),
                    *self.actor_cs[i].parameters(),
                    *self.critic.parameters(),
                ],
                lr=self.config.lr,
            )
            for i in range(self.config.ensemble_num)
        ]

    # -- acting ------------------------------------------------------------------------
    def _check(self, states: torch.Tensor, mask: torch.Tensor) -> None:
        if states.dim() != 3 or states.shape[-1] != self.emb_dim:
            raise ShapeError(
                f"HPPOAgent: states must be (B, N, {self.emb_dim}), got {tuple(states.shape)}"
            )
        if mask.shape != states.shape[:2] or mask.dtype != torch.bool:
            raise ShapeError(f"HPPOAgent: mask must be bool {tuple(states.shape[:2])}")
        if not mask.any(1).all():
            raise InputError("HPPOAgent: every graph needs at least one valid node")

    def _std(self, like: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_std).expand_as(like)

    @torch.no_grad()
    def act(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        *,
        policy: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Sample ``(node (B,), prompt (B, D), logp_d, logp_c)``.

        ``policy=k``: sub-policy ``k`` (training rollouts, with log-probs). ``policy=None``:
        the ensemble (official evaluation): node sampled from the normalised element-wise
        max of the sub-policies' distributions (arg-max if ``deterministic``), prompt = mean
        of their means; log-probs are ``None``.
        """
        self._check(states, mask)
        if policy is not None:
            logits = self.actor_ds[policy](states, mask)
            probs = torch.softmax(logits, -1)
            if deterministic:
                a_d = probs.argmax(-1)
            else:
                a_d = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            logp_d = torch.log(probs.gather(1, a_d[:, None]).squeeze(1).clamp_min(1e-30))
            mean = self.actor_cs[policy](states, a_d)
            std = self._std(mean)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            a_c = mean if deterministic else mean + std * noise
            logp_c = Normal(mean, std).log_prob(a_c).sum(-1)
            return a_d, a_c, logp_d, logp_c
        pis = torch.stack([torch.softmax(a(states, mask), -1) for a in self.actor_ds], 1)
        ens = pis.max(1).values + 1e-10
        ens = ens.masked_fill(~mask, 0.0)
        ens = ens / ens.sum(-1, keepdim=True)
        if deterministic:
            a_d = ens.argmax(-1)
        else:
            a_d = torch.multinomial(ens, 1, generator=generator).squeeze(-1)
        a_c = torch.stack([a(states, a_d) for a in self.actor_cs], 1).mean(1)
        return a_d, a_c, None, None

    @torch.no_grad()
    def act_nodes(
        self,
        h: torch.Tensor,
        layout: NodeLayout,
        *,
        policy: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`act` on the flat node states ``h`` ``(N, D)`` of a PyG batch (the RL
        episode's hot path): the actors run on the ``N`` real nodes only (not on padding),
        the ``K`` sub-policies of the ensemble in one fused pass, and only the node scores
        are padded. Same distributions and, for the same generator, the same actions as
        :meth:`act` on ``layout.dense(h)``."""
        if policy is not None:
            logits = layout.dense(
                self.actor_ds[policy].linears(h).squeeze(-1), float("-inf")
            )  # (B, n_max)
            probs = torch.softmax(logits, -1)
            if deterministic:
                a_d = probs.argmax(-1)
            else:
                a_d = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            logp_d = torch.log(probs.gather(1, a_d[:, None]).squeeze(1).clamp_min(1e-30))
            chosen = h[layout.offsets + a_d]
            mean = torch.tanh(self.actor_cs[policy].linears(chosen)) * self.config.max_z
            std = self._std(mean)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            a_c = mean if deterministic else mean + std * noise
            logp_c = Normal(mean, std).log_prob(a_c).sum(-1)
            return a_d, a_c, logp_d, logp_c
        scores = _fused_mlp([a.linears for a in self.actor_ds], h)  # (K, N, 1)
        logits = layout.dense(scores.squeeze(-1).T, float("-inf"))  # (B, n_max, K)
        pis = torch.softmax(logits, 1)
        ens = pis.max(-1).values + 1e-10
        ens = ens.masked_fill(~layout.mask, 0.0)
        ens = ens / ens.sum(-1, keepdim=True)
        if deterministic:
            a_d = ens.argmax(-1)
        else:
            a_d = torch.multinomial(ens, 1, generator=generator).squeeze(-1)
        chosen = h[layout.offsets + a_d]
        means = torch.tanh(_fused_mlp([a.linears for a in self.actor_cs], chosen))
        a_c = (means * self.config.max_z).mean(0)
        return a_d, a_c, None, None

    def value(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.critic(states, mask)

    # -- learning ----------------------------------------------------------------------
    def _ensemble_penalties(
        self, k: int, states: torch.Tensor, mask: torch.Tensor, probs_k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        with torch.no_grad():
            pis = [
                probs_k.detach() if i == k else torch.softmax(a(states, mask), -1)
                for i, a in enumerate(self.actor_ds)
            ]
            ens_max = torch.stack(pis, 1).max(1).values
            ens = F.normalize(F.normalize(ens_max, p=1, dim=-1) + 1e-10, p=1, dim=-1)
            ens_node = ens_max.argmax(-1)
        cur = F.normalize(probs_k + 1e-10, p=1, dim=-1)
        pen_d = (ens * (torch.log(ens) - torch.log(cur))).sum(-1) * cfg.penalty_d
        means = []
        for i, a in enumerate(self.actor_cs):
            if i == k:
                means.append(a(states, ens_node))
            else:
                with torch.no_grad():
                    means.append(a(states, ens_node))
        std = self._std(means[k])
        ens_mean = torch.stack([m.detach() for m in means], 1).mean(1)
        pen_c = torch.distributions.kl_divergence(Normal(means[k], std), Normal(ens_mean, std))
        return pen_d, pen_c.sum(-1) * cfg.penalty_c

    def update(
        self, k: int, rollout: Rollout, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """PPO epochs on ``rollout`` for sub-policy ``k`` (and the shared critic)."""
        from stable_baselines3.common.utils import explained_variance, update_learning_rate

        cfg = self.config
        n = len(rollout)
        stats: dict[str, float] = {"transitions": float(n), "ppo_epochs": 0.0}
        if n < 2:
            return stats
        update_learning_rate(optimizer, self.lr)
        adv = rollout.advantages
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        mb = min(cfg.minibatch_size, n)
        n_mb = max(1, n // mb)
        params = [
            *self.actor_ds[k].parameters(),
            *self.actor_cs[k].parameters(),
            *self.critic.parameters(),
        ]
        sums = {
            "loss_d": 0.0,
            "loss_c": 0.0,
            "loss_v": 0.0,
            "entropy_d": 0.0,
            "penalty_d": 0.0,
            "penalty_c": 0.0,
            "kl_d": 0.0,
            "kl_c": 0.0,
        }
        count = 0
        use_pen = cfg.ensemble_num > 1 and (cfg.penalty_d > 0 or cfg.penalty_c > 0)
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(n)
            kl_d_ep = kl_c_ep = 0.0
            for b in range(n_mb):
                idx = perm[b * mb : (b + 1) * mb]
                s, m = rollout.states[idx], rollout.masks[idx]
                logits = self.actor_ds[k](s, m)
                dist_d = Categorical(logits=logits)
                lp_d = dist_d.log_prob(rollout.action_d[idx])
                ent_d = dist_d.entropy()
                ratio_d = torch.exp(lp_d - rollout.logp_d[idx])
                a = adv[idx]
                surr_d = torch.min(ratio_d * a, ratio_d.clamp(1 - cfg.clip_d, 1 + cfg.clip_d) * a)
                mean = self.actor_cs[k](s, rollout.action_d[idx])
                dist_c = Normal(mean, self._std(mean))
                lp_c = dist_c.log_prob(rollout.action_c[idx]).sum(-1)
                ratio_c = torch.exp(lp_c - rollout.logp_c[idx])
                surr_c = torch.min(ratio_c * a, ratio_c.clamp(1 - cfg.clip_c, 1 + cfg.clip_c) * a)
                if use_pen:
                    pen_d, pen_c = self._ensemble_penalties(k, s, m, torch.softmax(logits, -1))
                else:
                    pen_d = pen_c = torch.zeros(1)
                loss_d = (-surr_d - self.entropy_coef * ent_d + pen_d).mean()
                loss_c = (-surr_c + pen_c).mean()
                loss_v = cfg.value_coef * F.mse_loss(self.critic(s, m), rollout.returns[idx])
                optimizer.zero_grad()
                (loss_d + loss_c + loss_v).backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    kl_d = float(((ratio_d - 1) - (lp_d - rollout.logp_d[idx])).mean())
                    kl_c = float(((ratio_c - 1) - (lp_c - rollout.logp_c[idx])).mean())
                kl_d_ep += kl_d
                kl_c_ep += kl_c
                for key, val in (
                    ("loss_d", loss_d),
                    ("loss_c", loss_c),
                    ("loss_v", loss_v),
                    ("entropy_d", ent_d.mean()),
                    ("penalty_d", pen_d.mean()),
                    ("penalty_c", pen_c.mean()),
                ):
                    sums[key] += val.item()
                sums["kl_d"] += kl_d
                sums["kl_c"] += kl_c
                count += 1
            stats["ppo_epochs"] += 1
            if cfg.target_kl_d is not None and kl_d_ep / n_mb > cfg.target_kl_d:
                break
            if cfg.target_kl_c is not None and kl_c_ep / n_mb > cfg.target_kl_c:
                break
        stats.update({key: v / max(1, count) for key, v in sums.items()})
        with torch.no_grad():
            v = self.critic(rollout.states, rollout.masks)
        stats["explained_variance"] = float(
            explained_variance(v.cpu().double().numpy(), rollout.returns.cpu().double().numpy())
        )
        return stats

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}, ensemble_num={self.config.ensemble_num}"

    def state_summary(self) -> dict[str, Any]:
        return {"entropy_coef": self.entropy_coef, "log_std": float(self.log_std), "lr": self.lr}
