"""RELIEF: sparse node feature prompts placed by an H-PPO agent on a frozen GIN.

Zhu et al., KDD 2025 (Sections 4.1-4.4; official ``graph_level/base.py``):

* **Episode** = one graph (batched: ``rollout_graphs`` graphs side by side, each stopping
  after as many steps as it has nodes). State = node embeddings of the currently prompted
  graph (frozen GIN output); action = (node, prompt vector); the prompt matrix starts at
  zero and the vector is *added* to the chosen node's row (revisits accumulate).
* **Reward** = decrease of the per-graph downstream loss (projection head on the frozen
  GIN's mean-pooled output) caused by the step, normalised with running statistics.
* **Training** alternates, per epoch: every sub-policy collects rollouts on the training
  graphs and takes PPO updates (GAE, clipping, KL early stop, KL-to-ensemble), then the
  projection head trains ``head_epochs`` epochs on graphs prompted by the joint policy.
  Entropy coefficient and log-std follow the official per-epoch schedules.
* **Inference**: the ensemble places the prompts (node sampled from the normalised max of
  the sub-policies, prompt = mean of their means), then the head classifies.

Example::

    >>> import torch
    >>> from torch_geometric.data import Batch
    >>> from torch_geometric.utils import from_smiles
    >>> from polyprompt.core import create
    >>> from polyprompt.graph.backbone import GINBackbone
    >>> from polyprompt.graph.config import GINConfig, HPPOConfig
    >>> import polyprompt.graph.relief
    >>> gin = GINBackbone(GINConfig(num_layers=2, emb_dim=16))
    >>> relief = create("relief", gin, num_classes=2, agent=HPPOConfig(ensemble_num=2))
    >>> batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("c1ccccc1")])
    >>> relief(batch).shape                               # logits (B, C)
    torch.Size([2, 2])
    >>> prompt, info = relief.attach_prompts(batch)        # (N, D) sparse prompt matrix
    >>> prompt.shape, 0 < info["prompt_ratio"] <= 1
    (torch.Size([9, 16]), True)
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.core.progress import progress_bar
from polyprompt.core.registry import register_method
from polyprompt.graph.agent import HPPOAgent, NodeLayout, Rollout, compute_gae
from polyprompt.graph.backbone import with_self_loops
from polyprompt.graph.config import RELIEFConfig
from polyprompt.graph.methods import GraphClassifier, accuracy, roc_auc

__all__ = ["RELIEF"]


@register_method("relief")
class RELIEF(GraphClassifier):
    """Frozen GIN + H-PPO agent (prompt placement) + projection head."""

    config_class = RELIEFConfig

    def __init__(self, backbone: nn.Module, config: RELIEFConfig) -> None:
        super().__init__(backbone, config)
        self.agent = HPPOAgent(int(backbone.embed_dim), config.agent)

    # -- episodes ----------------------------------------------------------------------
    def _losses(self, h: torch.Tensor, data: Any, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(self.backbone.pool(h, data.batch)), y, reduction="none")

    @torch.no_grad()
    def run_episodes(
        self,
        data: Any,
        *,
        policy: int | None = None,
        deterministic: bool = False,
        record: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """One episode per graph of the PyG batch ``data`` (steps = its node count).

        Returns ``{"prompt" (N, D), "h" (N, D) final node representations, "prompt_ratio",
        "steps"}`` and, with ``record`` (needs ``data.y`` and ``policy``), the raw per-step
        tensors ``states, masks, action_d, action_c, logp_d, logp_c, rewards, valid, dones``.
        """
        if record and policy is None:
            raise InputError("RELIEF.run_episodes: record=True needs a sub-policy index")
        self.backbone.check(data, "RELIEF")  # once per episode batch, not per step
        was_training = self.head.training
        self.head.eval()
        gnn = self.backbone
        layout = NodeLayout.from_batch(data.batch, data.ptr, data.num_graphs)
        counts = layout.mask.sum(1)
        n_max = layout.n_max
        # everything but the prompt is fixed for the episode: embed atoms and bonds, add the
        # self-loops and lay the nodes out once; each step = agent + one pass of the layers
        prompt = torch.zeros(data.num_nodes, gnn.embed_dim, device=data.x.device)
        h0 = gnn.atom(data.x)
        edge_emb = gnn.edge_embeddings(data)
        edge_index = with_self_loops(data.edge_index, data.num_nodes)
        h = gnn.forward_blocks(h0, graph=data, edge_emb=edge_emb, edge_index=edge_index)
        y = data.y.view(-1) if record else None
        loss_prev = self._losses(h, data, y) if record else None
        rec: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "states",
                "action_d",
                "action_c",
                "logp_d",
                "logp_c",
                "rewards",
                "valid",
                "dones",
            )
        }
        for t in range(n_max):
            a_d, a_c, lp_d, lp_c = self.agent.act_nodes(
                h, layout, policy=policy, deterministic=deterministic, generator=generator
            )
            if record:
                rec["states"].append(layout.dense(h))
            active = counts > t
            rows = (layout.offsets + a_d)[active]
            prompt.index_put_((rows,), a_c[active], accumulate=True)
            h = gnn.forward_blocks(
                h0 + prompt, graph=data, edge_emb=edge_emb, edge_index=edge_index
            )
            if record:
                loss = self._losses(h, data, y)
                rec["action_d"].append(a_d)
                rec["action_c"].append(a_c)
                rec["logp_d"].append(lp_d)
                rec["logp_c"].append(lp_c)
                rec["rewards"].append(torch.where(active, loss_prev - loss, 0.0))
                rec["valid"].append(active)
                rec["dones"].append((counts == t + 1).float())
                loss_prev = loss
        self.head.train(was_training)
        out: dict[str, Any] = {
            "prompt": prompt,
            "h": h,
            "prompt_ratio": float((prompt != 0).any(-1).float().mean()),
            "steps": n_max,
        }
        if record:
            out.update({k: torch.stack(v, 1) for k, v in rec.items()})  # (B, T, ...)
            out["masks"] = layout.mask[:, None, :].expand(-1, n_max, -1)
        return out

    def attach_prompts(
        self, data: Any, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Prompt matrix ``(N, D)`` placed by the ensemble policy, and episode info."""
        out = self.run_episodes(data, deterministic=deterministic, generator=generator)
        return out["prompt"], {k: v for k, v in out.items() if k != "prompt"}

    def forward(
        self, data: Any, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """PyG batch -> logits ``(B, C)`` on the graphs prompted by the ensemble."""
        out = self.run_episodes(data, deterministic=deterministic, generator=generator)
        return self.head(self.backbone.pool(out["h"], data.batch))

    # -- rollouts -> PPO ---------------------------------------------------------------
    def _rollout(self, data: Any, k: int, rms: Any) -> tuple[Rollout, float]:
        ep = self.run_episodes(data, policy=k, record=True)
        valid, dones = ep["valid"], ep["dones"]
        rewards = ep["rewards"]
        raw_mean = float(rewards[valid].sum() / data.num_graphs)
        if self.config.agent.normalize_reward:
            rms.update(rewards[valid].cpu().double().numpy())
            scale = float(rms.var) ** 0.5 + 1e-8
            rewards = torch.where(valid, (rewards - float(rms.mean)) / scale, 0.0)
        b, t = valid.shape
        states, masks = ep["states"], ep["masks"]
        with torch.no_grad():
            values = self.agent.value(states.flatten(0, 1), masks.flatten(0, 1)).view(b, t)
        next_values = torch.cat([values[:, 1:], values[:, -1:]], 1)
        adv, ret = compute_gae(
            rewards.float(),
            values,
            next_values,
            dones,
            self.config.agent.gamma,
            self.config.agent.gae_lambda,
        )
        sel = valid
        return (
            Rollout(
                states=states[sel],
                masks=masks[sel],
                action_d=ep["action_d"][sel],
                action_c=ep["action_c"][sel],
                logp_d=ep["logp_d"][sel],
                logp_c=ep["logp_c"][sel],
                advantages=adv[sel],
                returns=ret[sel],
            ),
            raw_mean,
        )

    # -- training ----------------------------------------------------------------------
    def evaluate(self, data: Any, *, generator: torch.Generator | None = None) -> dict[str, float]:
        """``{"roc_auc", "accuracy", "loss", "prompt_ratio"}`` with ensemble prompts."""
        from polyprompt.graph.methods import graph_loader

        logits, ys, ratios, sizes = [], [], [], []
        for batch, y in graph_loader(data, self.config.eval_batch_size, shuffle=False):
            out = self.run_episodes(batch, generator=generator)
            with torch.no_grad():
                logits.append(self.head(self.backbone.pool(out["h"], batch.batch)))
            ys.append(y)
            ratios.append(out["prompt_ratio"] * batch.num_nodes)
            sizes.append(batch.num_nodes)
        lg, yy = torch.cat(logits), torch.cat(ys)
        return {
            "roc_auc": roc_auc(lg, yy, self.config.num_classes),
            "accuracy": accuracy(lg, yy),
            "loss": float(F.cross_entropy(lg, yy)),
            "prompt_ratio": sum(ratios) / sum(sizes),
        }

    def fit(
        self,
        train: Any,
        val: Any | None = None,
        *,
        seed: int = 0,
        progress: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> list[dict[str, Any]]:
        """The alternating RELIEF schedule for ``config.epochs`` epochs; returns the history
        (one dict per epoch: mean raw episode reward, agent statistics, head loss, validation
        ROC-AUC / prompt ratio). With ``val``, the head + agent of the best validation epoch
        (after ``skip_epochs``) are restored at the end.

        ``checkpoint_dir``: after every epoch the trainable state, the optimizers, the torch
        RNG, the history and the best state are written there atomically
        (``relief_state.pt``, read back with ``weights_only=True``); a new ``fit`` with the
        same directory continues from the last completed epoch with the same results as an
        uninterrupted run."""
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.running_mean_std import RunningMeanStd
        from stable_baselines3.common.utils import set_random_seed

        from polyprompt.graph.methods import graph_loader

        cfg = self.config
        acfg = cfg.agent
        if len(train) == 0:
            raise InputError("RELIEF.fit: empty training set")
        set_random_seed(seed)
        # A Logger with no output formats: `configure(None, [])` would create an empty SB3-<date>
        # folder in the temp dir on every fit.
        logger = Logger(folder=None, output_formats=[])
        optims = self.agent.optimizers()
        head_opt = torch.optim.Adam(self.head.parameters(), lr=cfg.head_lr)
        history: list[dict[str, Any]] = []
        best: tuple[float, dict[str, torch.Tensor]] | None = None
        start = 1
        state_file = Path(checkpoint_dir) / "relief_state.pt" if checkpoint_dir else None
        if state_file is not None and state_file.is_file():
            from polyprompt.core.checkpoint import load_torch_state

            st = load_torch_state(state_file)
            if (
                st.get("config") != json.dumps(cfg.to_dict(), sort_keys=True)
                or st.get("seed") != seed
            ):
                raise CheckpointError(
                    f"RELIEF.fit: {state_file} was written with another config or seed"
                )
            self.load_state_dict(st["model"], strict=False)
            for opt, saved in zip(optims, st["optims"]):
                opt.load_state_dict(saved)
            head_opt.load_state_dict(st["head_opt"])
            history = list(st["history"])
            if st.get("best_state") is not None:
                best = (float(st["best_value"]), st["best_state"])
            torch.set_rng_state(st["rng"])
            start = int(st["epoch"]) + 1
        bar = progress_bar(total=cfg.epochs, desc="RELIEF", enabled=progress, initial=start - 1)
        for epoch in range(start, cfg.epochs + 1):
            t0 = time.perf_counter()
            self.agent.set_progress(1.0 - (epoch - 1) / cfg.epochs)
            rms = RunningMeanStd(shape=())
            self.agent.train()
            rewards: list[float] = []
            for k in range(acfg.ensemble_num):
                loader = graph_loader(
                    train, acfg.rollout_graphs, shuffle=True, seed=seed * 1000 + epoch * 10 + k
                )
                loader.sampler.set_epoch(epoch)
                for batch, _y in loader:
                    rollout, r = self._rollout(batch, k, rms)
                    rewards.append(r)
                    stats = self.agent.update(k, rollout, optims[k])
                    for key, v in stats.items():
                        logger.record_mean(f"agent/{key}", v)
            agent_seconds = time.perf_counter() - t0
            # projection head on graphs prompted by the joint policy
            self.agent.eval()
            self.head.train()
            head_losses = []
            for e in range(cfg.head_epochs):
                loader = graph_loader(
                    train, cfg.batch_size, shuffle=True, seed=seed + 7919 * epoch + e
                )
                for batch, y in loader:
                    out = self.run_episodes(batch)
                    logits = self.head(self.backbone.pool(out["h"], batch.batch))
                    loss = F.cross_entropy(logits, y)
                    head_opt.zero_grad()
                    loss.backward()
                    head_opt.step()
                    head_losses.append(loss.item())
            row: dict[str, Any] = {
                "epoch": epoch,
                "reward": sum(rewards) / max(1, len(rewards)),
                "head_loss": sum(head_losses) / max(1, len(head_losses)),
                "agent_seconds": agent_seconds,
                **{k.split("/", 1)[1]: v for k, v in logger.name_to_value.items()},
                **self.agent.state_summary(),
            }
            logger.dump(epoch)
            if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                ev = self.evaluate(val)
                row.update({f"val_{k}": v for k, v in ev.items()})
                if epoch > cfg.skip_epochs and (best is None or ev["roc_auc"] > best[0]):
                    best = (ev["roc_auc"], copy.deepcopy(self.trainable_state_dict()))
                    row["best"] = True
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            bar.update(1)
            bar.set_postfix(
                reward=f"{row['reward']:.3f}", val_auc=f"{row.get('val_roc_auc', float('nan')):.3f}"
            )
            if state_file is not None:
                from polyprompt.core.checkpoint import save_torch_state

                save_torch_state(
                    state_file,
                    {
                        "epoch": epoch,
                        "seed": seed,
                        "config": json.dumps(cfg.to_dict(), sort_keys=True),
                        "model": self.trainable_state_dict(),
                        "optims": [o.state_dict() for o in optims],
                        "head_opt": head_opt.state_dict(),
                        "history": history,
                        "best_value": None if best is None else best[0],
                        "best_state": None if best is None else best[1],
                        "rng": torch.get_rng_state(),
                    },
                )
            if callback is not None:
                callback(row)
        bar.close()
        if best is not None:
            self.load_state_dict(best[1], strict=False)
        self.agent.eval()
        return history
