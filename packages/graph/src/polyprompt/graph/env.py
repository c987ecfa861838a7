"""``GraphPromptEnv``: RELIEF's prompting MDP as a Gymnasium environment (one graph per episode).

* **State**: node embeddings of the currently prompted graph (frozen GIN output).
* **Action**: ``{"node": Discrete(max_nodes), "prompt": Box(-1, 1, (D,))}``; the prompt
  vector is scaled by ``max_z`` and *added* to the chosen node's prompt row.
* **Reward**: decrease of the graph's downstream loss (cross-entropy of the projection head
  on the frozen GIN's pooled output) caused by the step; with ``normalize_reward=True`` it is
  normalised by running mean / std (RELIEF ``reward.Normalization``, SB3 ``RunningMeanStd``),
  as :class:`~polyprompt.graph.relief.RELIEF` does per rollout. ``info["raw_reward"]`` keeps
  the raw decrease.
* **Episode length**: the graph's node count (``terminated`` after ``n`` steps).

Variable graph sizes, fixed-size view: Gymnasium spaces have fixed shapes, so the observation
is padded to ``max_nodes`` rows: ``{"nodes": (max_nodes, D) float32 (zeros beyond n),
"mask": MultiBinary(max_nodes) (1 for real nodes)}``. A ``node`` action on a padding row
(``>= n``; a masked softmax never picks one, random actions may) changes nothing, gives
reward 0 and sets ``info["invalid_node"]``. Graphs above ``max_nodes`` are rejected when the
environment is built. The batched trainer (``RELIEF.run_episodes``) runs the same MDP on a
PyG batch of graphs at once, padding only to the batch's largest graph.

Parallel rollouts through stable-baselines3's vectorised environments:
:func:`make_vec_env` stacks ``n_envs`` copies in an SB3 ``DummyVecEnv`` (or
``SubprocVecEnv``), which the fixed-size padded view makes possible (SB3 stacks observations
into ``(n_envs, max_nodes, D)`` arrays); :func:`vec_rollout` collects PPO rollouts from it
with :class:`~polyprompt.graph.agent.HPPOAgent` (auto-reset, GAE across episode boundaries).
The RELIEF trainer itself does not use it: a VecEnv steps each graph separately (one GIN
forward per environment and step, numpy round trips, padding to the dataset's largest
graph), while ``RELIEF.run_episodes`` steps all graphs of a PyG batch with *one* GIN forward
per step -- the benchmark measures both (``benchmarks/graph.py``).

It passes ``stable_baselines3.common.env_checker.check_env`` (SB3's own algorithms do not
support Dict action spaces, which the checker reports as a warning: the hybrid action is
what :class:`~polyprompt.graph.agent.HPPOAgent` exists for).

Example::

    >>> from torch_geometric.utils import from_smiles
    >>> import torch
    >>> from polyprompt.graph.backbone import GINBackbone
    >>> from polyprompt.graph.config import GINConfig
    >>> from polyprompt.graph.methods import ProjectionHead
    >>> from polyprompt.graph.env import GraphPromptEnv
    >>> g = from_smiles("CCO"); g.y = torch.tensor([1])
    >>> env = GraphPromptEnv([g], GINBackbone(GINConfig(num_layers=2, emb_dim=8)),
    ...                      ProjectionHead(8, 2), max_nodes=4)
    >>> obs, info = env.reset(seed=0)
    >>> obs["nodes"].shape, obs["mask"].tolist()
    ((4, 8), [1, 1, 1, 0])
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from polyprompt.core.errors import InputError
from polyprompt.graph.data import check_graph

__all__ = ["GraphPromptEnv", "make_vec_env", "vec_rollout"]


class GraphPromptEnv(gym.Env):
    """One labelled molecular graph per episode; see the module docstring."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        graphs: Sequence[Any],
        backbone: nn.Module,
        head: nn.Module,
        *,
        max_nodes: int | None = None,
        max_z: float = 0.5,
        normalize_reward: bool = False,
    ) -> None:
        super().__init__()
        from stable_baselines3.common.running_mean_std import RunningMeanStd

        self.normalize_reward = bool(normalize_reward)
        self.reward_rms = RunningMeanStd(shape=())
        graphs = list(graphs)
        if not graphs:
            raise InputError("GraphPromptEnv: no graphs")
        self.max_nodes = int(max_nodes or max(g.num_nodes for g in graphs))
        feats = getattr(getattr(backbone, "config", None), "in_features", None)
        for i, g in enumerate(graphs):
            where = f"GraphPromptEnv graph {i}"
            if feats is None:
                check_graph(g, max_nodes=self.max_nodes, where=where)
            else:  # node-feature GIN (node tasks): real-valued features, featureless edges
                from polyprompt.graph.node_tasks import check_feature_graph

                check_feature_graph(g, feats, max_nodes=self.max_nodes, where=where)
            if getattr(g, "y", None) is None:
                raise InputError(f"GraphPromptEnv graph {i}: needs a label `y` for the reward")
        self.graphs = graphs
        self.backbone = backbone.eval()
        self.head = head.eval()
        self.max_z = float(max_z)
        d = int(backbone.embed_dim)
        self.observation_space = spaces.Dict(
            {
                "nodes": spaces.Box(-np.inf, np.inf, (self.max_nodes, d), np.float32),
                "mask": spaces.MultiBinary(self.max_nodes),
            }
        )
        self.action_space = spaces.Dict(
            {
                "node": spaces.Discrete(self.max_nodes),
                "prompt": spaces.Box(-1.0, 1.0, (d,), np.float32),
            }
        )
        self._graph: Any = None
        self._prompt: torch.Tensor | None = None

    @torch.no_grad()
    def _forward(self) -> tuple[torch.Tensor, float]:
        g = self._graph
        h = self.backbone(g, self._prompt, check=False)
        logits = self.head(self.backbone.pool(h, None))
        return h, float(F.cross_entropy(logits, g.y.view(-1)))

    def _obs(self, h: torch.Tensor) -> dict[str, np.ndarray]:
        nodes = np.zeros(self.observation_space["nodes"].shape, np.float32)
        n = h.shape[0]
        nodes[:n] = h.cpu().numpy()
        mask = np.zeros(self.max_nodes, np.int8)
        mask[:n] = 1
        return {"nodes": nodes, "mask": mask}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(len(self.graphs)))
        if not 0 <= int(index) < len(self.graphs):
            raise InputError(f"GraphPromptEnv.reset: index {index} not in [0, {len(self.graphs)})")
        self._graph = self.graphs[int(index)]
        self._n = int(self._graph.num_nodes)
        self._t = 0
        self._prompt = torch.zeros(self._n, int(self.backbone.embed_dim))
        h, self._loss = self._forward()
        return self._obs(h), {"index": int(index), "num_nodes": self._n, "loss": self._loss}

    def step(
        self, action: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._prompt is None:
            raise InputError("GraphPromptEnv.step: call reset() first")
        node = int(action["node"])
        vec = np.asarray(action["prompt"], dtype=np.float32).reshape(-1)
        if vec.shape[0] != self._prompt.shape[1]:
            raise InputError(
                f"GraphPromptEnv.step: prompt has {vec.shape[0]} values, expected "
                f"{self._prompt.shape[1]}"
            )
        if not np.isfinite(vec).all():
            raise InputError("GraphPromptEnv.step: prompt contains NaN/inf")
        invalid = not 0 <= node < self._n
        if not invalid:
            self._prompt[node] += torch.from_numpy(np.clip(vec, -1.0, 1.0) * self.max_z)
        h, loss = self._forward()
        raw = 0.0 if invalid else self._loss - loss
        reward = raw
        if self.normalize_reward and not invalid:
            self.reward_rms.update(np.array([raw]))
            reward = (raw - float(self.reward_rms.mean)) / (
                float(self.reward_rms.var) ** 0.5 + 1e-8
            )
        self._loss = loss
        self._t += 1
        terminated = self._t >= self._n
        info = {
            "loss": loss,
            "invalid_node": invalid,
            "raw_reward": float(raw),
            "prompt_ratio": float((self._prompt != 0).any(-1).float().mean()),
        }
        return self._obs(h), float(reward), terminated, False, info


def make_vec_env(
    graphs: Sequence[Any],
    backbone: nn.Module,
    head: nn.Module,
    n_envs: int = 4,
    *,
    max_nodes: int | None = None,
    max_z: float = 0.5,
    normalize_reward: bool = False,
    subprocess: bool = False,
    seed: int | None = None,
) -> Any:
    """``n_envs`` :class:`GraphPromptEnv` over ``graphs`` in an SB3 vectorised environment.

    Every copy draws its own graph per episode (seeded ``seed + i`` by SB3). All copies
    share one padded size (``max_nodes``, default the largest graph). ``subprocess=True``:
    ``SubprocVecEnv`` (one process per copy, the backbone pickled into each), otherwise
    ``DummyVecEnv`` (sequential, shared backbone)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if not isinstance(n_envs, int) or n_envs < 1:
        raise InputError(f"make_vec_env: n_envs must be an int >= 1, got {n_envs!r}")
    graphs = list(graphs)
    if not graphs:
        raise InputError("make_vec_env: no graphs")
    size = int(max_nodes or max(g.num_nodes for g in graphs))

    def factory() -> GraphPromptEnv:
        return GraphPromptEnv(
            graphs,
            backbone,
            head,
            max_nodes=size,
            max_z=max_z,
            normalize_reward=normalize_reward,
        )

    venv = (SubprocVecEnv if subprocess else DummyVecEnv)([factory] * n_envs)
    if seed is not None:
        venv.seed(seed)
    return venv


@torch.no_grad()
def vec_rollout(
    venv: Any,
    agent: Any,
    n_steps: int,
    *,
    policy: int = 0,
    gamma: float | None = None,
    gae_lambda: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Any, dict[str, float]]:
    """``n_steps`` steps of every environment of ``venv`` (from :func:`make_vec_env`) with
    sub-policy ``policy`` of ``agent`` (an :class:`~polyprompt.graph.agent.HPPOAgent`)
    -> (:class:`~polyprompt.graph.agent.Rollout` of the ``n_steps * n_envs`` transitions,
    ``{"reward": mean reward per step, "episodes": finished episodes}``).

    The agent acts on the padded observations with the node mask; finished episodes are
    reset by SB3, their ``terminal_observation`` is not bootstrapped (``done``), the
    last step bootstraps from the critic."""
    from polyprompt.graph.agent import Rollout, compute_gae

    if not isinstance(n_steps, int) or n_steps < 1:
        raise InputError(f"vec_rollout: n_steps must be an int >= 1, got {n_steps!r}")
    gamma = agent.config.gamma if gamma is None else gamma
    gae_lambda = agent.config.gae_lambda if gae_lambda is None else gae_lambda
    obs = venv.reset()
    keys = ("states", "masks", "action_d", "action_c", "logp_d", "logp_c", "rewards", "dones")
    rec: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    episodes = 0
    for _ in range(n_steps):
        states = torch.from_numpy(obs["nodes"])
        mask = torch.from_numpy(obs["mask"]).bool()
        a_d, a_c, lp_d, lp_c = agent.act(states, mask, policy=policy, generator=generator)
        actions = [
            {"node": int(a_d[i]), "prompt": (a_c[i] / agent.config.max_z).clamp(-1, 1).numpy()}
            for i in range(len(a_d))
        ]
        obs, rewards, dones, _infos = venv.step(actions)
        episodes += int(dones.sum())
        for k, v in zip(keys, (states, mask, a_d, a_c, lp_d, lp_c)):
            rec[k].append(v)
        rec["rewards"].append(torch.as_tensor(rewards, dtype=torch.float32))
        rec["dones"].append(torch.as_tensor(dones, dtype=torch.float32))
    t = {k: torch.stack(v, 1) for k, v in rec.items()}  # (n_envs, n_steps, ...)
    b = t["rewards"].shape[0]
    values = agent.value(t["states"].flatten(0, 1), t["masks"].flatten(0, 1)).view(b, n_steps)
    last = agent.value(torch.from_numpy(obs["nodes"]), torch.from_numpy(obs["mask"]).bool())
    next_values = torch.cat([values[:, 1:], last[:, None]], 1)
    adv, ret = compute_gae(t["rewards"], values, next_values, t["dones"], gamma, gae_lambda)
    rollout = Rollout(
        states=t["states"].flatten(0, 1),
        masks=t["masks"].flatten(0, 1),
        action_d=t["action_d"].flatten(0, 1),
        action_c=t["action_c"].flatten(0, 1),
        logp_d=t["logp_d"].flatten(0, 1),
        logp_c=t["logp_c"].flatten(0, 1),
        advantages=adv.flatten(),
        returns=ret.flatten(),
    )
    return rollout, {"reward": float(t["rewards"].mean()), "episodes": float(episodes)}
