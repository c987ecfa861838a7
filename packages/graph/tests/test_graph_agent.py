"""H-PPO agent: masking, schedules, GAE, PPO update, critic invariance and size."""

from __future__ import annotations

import torch

from polyprompt.graph.agent import (
    HPPOAgent,
    NodeLayout,
    Rollout,
    compute_gae,
    official_critic_params,
)
from polyprompt.graph.config import HPPOConfig


def _states(b=4, n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, n, d, generator=g)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate([6, 3, 1, 4][:b]):
        mask[i, :k] = True
    return s, mask


def test_act_never_picks_padding_and_bounds():
    torch.manual_seed(0)
    agent = HPPOAgent(16, HPPOConfig(max_z=0.3, ensemble_num=2))
    s, m = _states()
    for policy in (0, 1, None):
        for _ in range(30):
            a_d, a_c, _, _ = agent.act(s, m, policy=policy)
            assert bool(m[torch.arange(4), a_d].all())
    a_d, a_c, lp_d, lp_c = agent.act(s, m, policy=0, deterministic=True)
    assert a_c.abs().max() <= 0.3 + 1e-6  # deterministic = tanh mean * max_z
    assert lp_d.shape == (4,) and lp_c.shape == (4,) and torch.isfinite(lp_c).all()


def test_schedules_follow_official():
    agent = HPPOAgent(8, HPPOConfig(entropy_coef=0.01, init_log_std=0.0, lr_decay="down"))
    agent.set_progress(1.0)
    assert agent.entropy_coef == 0.01 and float(agent.log_std) == 0.0 and agent.lr == 5e-4
    agent.set_progress(0.5)
    assert abs(agent.entropy_coef - 0.005) < 1e-9 and abs(float(agent.log_std) + 2.5) < 1e-6
    agent.set_progress(0.0)
    assert float(agent.log_std) == -5.0 and agent.entropy_coef == 0.0


def test_gae_matches_loop():
    r = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.0, 0.0]])
    v = torch.tensor([[0.3, 0.2, 0.1], [0.5, 0.4, 0.0]])
    nv = torch.cat([v[:, 1:], v[:, -1:]], 1)
    done = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    adv, ret = compute_gae(r, v, nv, done, 0.9, 0.8)
    # graph 1, last step: delta = r - v
    assert torch.isclose(adv[0, 2], torch.tensor(0.0 - 0.1))
    d1 = 0.5 + 0.9 * 0.1 - 0.2
    assert torch.isclose(adv[0, 1], torch.tensor(d1 + 0.9 * 0.8 * (-0.1)))
    assert torch.isclose(adv[1, 0], torch.tensor(0.2 - 0.5))  # done at step 0: no bootstrap
    assert torch.allclose(ret, adv + v)


def test_critic_permutation_invariant_and_small():
    agent = HPPOAgent(300, HPPOConfig())
    s, m = _states(d=300)
    perm = torch.randperm(6)
    full = m.all(1)
    v1 = agent.value(s, m)
    v2 = agent.value(s[:, perm], m[:, perm])
    assert torch.allclose(v1, v2, atol=1e-5)
    assert full.any()
    ours = sum(p.numel() for p in agent.critic.parameters())
    official = official_critic_params(max_nodes=47, emb_dim=300)  # solubility's largest graph
    assert ours / official < 0.01  # critic vs critic (the target)
    # whole agent (3 sub-policies + critic) vs the official agent (same actors + its critic)
    actors = agent.num_params() - ours
    assert agent.num_params() / (actors + official) < 0.06


def test_update_improves_advantaged_actions():
    torch.manual_seed(0)
    agent = HPPOAgent(
        16,
        HPPOConfig(
            ensemble_num=2,
            target_kl_d=None,
            target_kl_c=None,
            update_epochs=20,
            minibatch_size=32,
            lr=5e-3,
        ),
    )
    s, m = _states(b=4)
    s = s.repeat(16, 1, 1)
    m = m.repeat(16, 1)
    a_d, a_c, lp_d, lp_c = agent.act(s, m, policy=0)
    adv = (a_d == 0).float() * 2 - 1  # node 0 is good
    ro = Rollout(s, m, a_d, a_c, lp_d, lp_c, adv, adv)
    p0 = torch.softmax(agent.actor_ds[0](s, m), -1)[:, 0].mean()
    before = [p.clone() for p in agent.actor_ds[1].parameters()]
    stats = agent.update(0, ro, agent.optimizers()[0])
    p1 = torch.softmax(agent.actor_ds[0](s, m), -1)[:, 0].mean()
    assert p1 > p0 and stats["ppo_epochs"] == 20 and stats["penalty_d"] >= 0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.actor_ds[1].parameters()))
    # KL early stop cuts the PPO epochs
    agent2 = HPPOAgent(16, HPPOConfig(ensemble_num=1, target_kl_d=1e-12, update_epochs=20, lr=5e-3))
    a_d, a_c, lp_d, lp_c = agent2.act(s, m, policy=0)
    stats2 = agent2.update(0, Rollout(s, m, a_d, a_c, lp_d, lp_c, adv, adv), agent2.optimizers()[0])
    assert stats2["ppo_epochs"] < 20


def test_node_layout_and_act_nodes_match_dense_act():
    """The episode hot path (flat nodes, fused ensemble) = :meth:`act` on padded states."""
    torch.manual_seed(0)
    agent = HPPOAgent(16, HPPOConfig(max_z=0.4, ensemble_num=3))
    counts = torch.tensor([6, 3, 1, 4])
    batch = torch.repeat_interleave(torch.arange(4), counts)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    layout = NodeLayout.from_batch(batch, ptr, 4)
    h = torch.randn(int(counts.sum()), 16)
    dense = layout.dense(h)
    assert dense.shape == (4, 6, 16) and layout.n_max == 6
    assert torch.equal(layout.mask.sum(1), counts)
    assert torch.equal(dense[layout.mask], h) and (dense[~layout.mask] == 0).all()
    for policy in (0, 2, None):
        for det in (True, False):
            g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            a = agent.act(dense, layout.mask, policy=policy, deterministic=det, generator=g1)
            b = agent.act_nodes(h, layout, policy=policy, deterministic=det, generator=g2)
            assert torch.equal(a[0], b[0]), (policy, det)
            assert torch.allclose(a[1], b[1], atol=1e-6), (policy, det)
            if policy is None:
                assert b[2] is None and b[3] is None
            else:
                assert torch.allclose(a[2], b[2], atol=1e-5)
                assert torch.allclose(a[3], b[3], atol=1e-4)
