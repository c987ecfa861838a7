"""GraphPromptEnv: SB3 check_env, episode length, reward = loss decrease, invalid nodes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch_geometric.utils import from_smiles

from polyprompt.core.errors import InputError
from polyprompt.graph.backbone import GINBackbone
from polyprompt.graph.config import GINConfig
from polyprompt.graph.env import GraphPromptEnv
from polyprompt.graph.methods import ProjectionHead


def _env(max_nodes=8, **kw):
    torch.manual_seed(0)
    graphs = []
    for smi, y in [("CCO", 0), ("c1ccccc1", 1), ("CCN(C)C", 1)]:
        g = from_smiles(smi)
        g.y = torch.tensor([y])
        graphs.append(g)
    gin = GINBackbone(GINConfig(num_layers=2, emb_dim=8))
    return GraphPromptEnv(graphs, gin, ProjectionHead(8, 2), max_nodes=max_nodes, max_z=0.5, **kw)


def test_check_env_passes():
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that its algorithms lack Dict actions
        check_env(_env(), warn=True)


def test_episode_reward_is_loss_decrease():
    env = _env()
    obs, info = env.reset(seed=0, options={"index": 1})
    assert info["num_nodes"] == 6 and obs["mask"].sum() == 6 and obs["nodes"][6:].sum() == 0
    loss, total, steps = info["loss"], 0.0, 0
    terminated = False
    rng = np.random.default_rng(0)
    while not terminated:
        action = {"node": int(rng.integers(6)), "prompt": rng.uniform(-1, 1, 8).astype(np.float32)}
        obs, r, terminated, truncated, info = env.step(action)
        total += r
        steps += 1
        assert not truncated
    assert steps == 6
    assert abs(total - (loss - info["loss"])) < 1e-5  # rewards telescope to the loss decrease
    assert 0 < info["prompt_ratio"] <= 1


def test_invalid_node_and_bad_inputs():
    env = _env()
    env.reset(seed=0, options={"index": 0})  # 3 nodes
    _, r, _, _, info = env.step({"node": 7, "prompt": np.ones(8, np.float32)})
    assert r == 0.0 and info["invalid_node"] and info["prompt_ratio"] == 0
    with pytest.raises(InputError, match="prompt has"):
        env.step({"node": 0, "prompt": np.ones(3, np.float32)})
    with pytest.raises(InputError, match="node cap"):
        _env(max_nodes=4)


def test_agent_drives_vectorised_envs():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from polyprompt.graph.agent import HPPOAgent
    from polyprompt.graph.config import HPPOConfig

    venv = DummyVecEnv([_env, _env])
    agent = HPPOAgent(8, HPPOConfig(ensemble_num=1))
    obs = venv.reset()
    for _ in range(4):
        s = torch.as_tensor(obs["nodes"])
        m = torch.as_tensor(obs["mask"]).bool()
        a_d, a_c, _, _ = agent.act(s, m, policy=0)
        act = [
            {"node": int(a_d[i]), "prompt": (a_c[i] / 0.5).clamp(-1, 1).numpy()} for i in range(2)
        ]
        obs, rewards, _dones, infos = venv.step(act)
        assert rewards.shape == (2,) and not any(i["invalid_node"] for i in infos)


def test_normalised_reward_keeps_raw():
    env = _env(normalize_reward=True)
    env.reset(seed=0, options={"index": 1})
    rng = np.random.default_rng(1)
    raws, rewards = [], []
    for _ in range(6):
        a = {"node": int(rng.integers(6)), "prompt": rng.uniform(-1, 1, 8).astype(np.float32)}
        _, r, _, _, info = env.step(a)
        raws.append(info["raw_reward"])
        rewards.append(r)
    assert env.reward_rms.count > 5 and raws != rewards


def test_make_vec_env_and_vec_rollout_feed_ppo():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from polyprompt.graph.agent import HPPOAgent
    from polyprompt.graph.config import HPPOConfig
    from polyprompt.graph.env import make_vec_env, vec_rollout

    base = _env()
    venv = make_vec_env(base.graphs, base.backbone, base.head, 3, seed=0)
    assert isinstance(venv, DummyVecEnv) and venv.num_envs == 3
    assert venv.observation_space["nodes"].shape == (6, 8)  # padded to the largest graph
    torch.manual_seed(0)
    agent = HPPOAgent(8, HPPOConfig(ensemble_num=2, minibatch_size=8, update_epochs=2))
    rollout, info = vec_rollout(
        venv, agent, 10, policy=1, generator=torch.Generator().manual_seed(0)
    )
    assert len(rollout) == 30 and rollout.states.shape == (30, 6, 8)
    # graphs have 3-6 nodes: 10 steps finish at least one episode per env (auto-reset by SB3)
    assert info["episodes"] >= 3
    assert bool(rollout.masks[torch.arange(30), rollout.action_d].all())  # never padding
    assert torch.isfinite(rollout.advantages).all() and torch.isfinite(rollout.returns).all()
    before = [p.clone() for p in agent.actor_ds[1].parameters()]
    stats = agent.update(1, rollout, agent.optimizers()[1])
    assert stats["ppo_epochs"] >= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor_ds[1].parameters()))
    with pytest.raises(InputError, match="n_envs"):
        make_vec_env(base.graphs, base.backbone, base.head, 0)
    with pytest.raises(InputError, match="n_steps"):
        vec_rollout(venv, agent, 0)
