"""RELIEF: frozen backbone, sparse prompts, training on real data, save -> load identical."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Batch

from polyprompt.core.checkpoint import load_prompt, save_prompt
from polyprompt.core.errors import InputError
from polyprompt.graph.config import HPPOConfig, RELIEFConfig
from polyprompt.graph.relief import RELIEF


def _cfg(**kw):
    agent = HPPOConfig(ensemble_num=2, update_epochs=3, minibatch_size=32, rollout_graphs=10)
    base = dict(num_classes=3, epochs=2, head_epochs=2, head_lr=5e-3, batch_size=10, agent=agent)
    base.update(kw)
    return RELIEFConfig(**base)


def test_episodes_are_sparse_and_record(gin, split):
    torch.manual_seed(0)
    relief = RELIEF(gin, _cfg())
    batch = Batch.from_data_list(split[0].graphs[:5])
    out = relief.run_episodes(batch, policy=0, record=True)
    counts = torch.bincount(batch.batch)
    assert out["steps"] == int(counts.max())
    assert out["valid"].sum() == batch.num_nodes  # one step per node
    assert out["states"].shape[:2] == (5, int(counts.max()))
    assert 0 < out["prompt_ratio"] < 1  # revisits leave some nodes without a prompt
    # prompts only where nodes were picked
    picked = torch.zeros(batch.num_nodes, dtype=torch.bool)
    rows = (batch.ptr[:-1, None] + out["action_d"])[out["valid"]]
    picked[rows] = True
    assert torch.equal((out["prompt"] != 0).any(-1), picked)
    with pytest.raises(InputError, match="sub-policy"):
        relief.run_episodes(batch, record=True)


def test_fit_trains_head_and_agent_not_backbone(gin, split):
    train, val, _ = split
    torch.manual_seed(0)
    relief = RELIEF(gin, _cfg())
    backbone_before = {k: v.clone() for k, v in relief.backbone.state_dict().items()}
    actor_before = [p.clone() for p in relief.agent.actor_ds[0].parameters()]
    before = relief.evaluate(val)["roc_auc"]
    history = relief.fit(train, val, seed=0)
    assert len(history) == 2 and {"reward", "val_roc_auc", "val_prompt_ratio", "kl_d"} <= set(
        history[0]
    )
    assert float(relief.agent.log_std) == pytest.approx(-2.5)  # annealed 0 -> -5 over 2 epochs
    for k, v in relief.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k
    assert any(
        not torch.equal(a, b) for a, b in zip(actor_before, relief.agent.actor_ds[0].parameters())
    )
    after = relief.evaluate(val)
    assert after["roc_auc"] > before
    assert 0 < after["prompt_ratio"] < 1


def test_save_load_identical(gin, split, tmp_path):
    torch.manual_seed(0)
    relief = RELIEF(gin, _cfg())
    relief.agent.set_progress(0.3)
    batch = Batch.from_data_list(split[2].graphs[:6])
    with torch.no_grad():
        relief.head.linears[0].weight.add_(0.1)
    save_prompt(relief, tmp_path / "ckpt")
    torch.manual_seed(1)
    other = RELIEF(type(gin)(gin.config).eval(), _cfg())
    other.backbone.load_state_dict(gin.state_dict())
    load_prompt(other, tmp_path / "ckpt")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(relief(batch, generator=g1), other(batch, generator=g2))
    assert float(other.agent.log_std) == float(relief.agent.log_std)


@pytest.mark.slow
def test_resume_matches_uninterrupted(gin, split, tmp_path):
    train = split[0].subset(range(12))
    val = split[1].subset(range(8))

    def run(ckpt, stop_after=None):
        torch.manual_seed(0)
        relief = RELIEF(copy.deepcopy(gin), _cfg(epochs=2, head_epochs=1))

        def cb(row):
            if stop_after is not None and row["epoch"] == stop_after:
                raise KeyboardInterrupt

        try:
            return relief, relief.fit(train, val, seed=0, callback=cb, checkpoint_dir=ckpt)
        except KeyboardInterrupt:
            return relief, None

    ref, hist_ref = run(None)
    _, none = run(tmp_path / "ck", stop_after=1)
    assert none is None and (tmp_path / "ck" / "relief_state.pt").is_file()
    resumed, hist = run(tmp_path / "ck")
    assert [h["reward"] for h in hist] == [h["reward"] for h in hist_ref]
    for k, v in ref.trainable_state_dict().items():
        assert torch.equal(v, resumed.trainable_state_dict()[k]), k


def test_bad_inputs_raise_our_errors(gin):
    from torch_geometric.utils import from_smiles

    from polyprompt.core.errors import ConfigError, NonFiniteError

    relief = RELIEF(gin, _cfg())
    g = from_smiles("CCO")
    g.x = g.x.float()
    g.x[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        relief(Batch.from_data_list([g]))
    big = Batch.from_data_list([from_smiles("C" * 40)])
    relief.backbone.config.max_nodes = 30
    with pytest.raises(InputError, match="node cap"):
        relief(big)
    with pytest.raises(ConfigError, match="clip_d"):
        HPPOConfig(clip_d=1.5)
    with pytest.raises(InputError, match="empty training set"):
        relief.fit([])
