"""TSTAdapter: protocol, shapes, bad inputs, tsai checkpoint loader, core baselines on it."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core.backbones.protocol import PromptableBackbone
from polyprompt.core.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError
from polyprompt.timeseries.backbone import TSTAdapter, TSTConfig, load_tsai_state_dict


def test_protocol_and_shapes(tst_config):
    bb = tst_config.build().eval()
    assert isinstance(bb, PromptableBackbone)
    assert (bb.embed_dim, bb.num_blocks, bb.num_prefix_tokens) == (16, 2, 0)
    tokens = bb.embed(torch.randn(3, 6, 128))
    assert tokens.shape == (3, 8, 16)
    seq = torch.cat([torch.zeros(3, 4, 16), tokens], 1)
    out = bb.forward_blocks(seq)
    assert out.shape == (3, 12, 16)
    assert bb.pool(bb.norm(out), num_prompt_tokens=4).shape == (3, 16)
    # blocks split in two calls = one call when residual attention is off
    plain = (
        TSTConfig(c_in=6, seq_len=128, d_model=16, n_heads=2, res_attention=False).build().eval()
    )
    t = plain.embed(torch.randn(2, 6, 128))
    torch.testing.assert_close(
        plain.forward_blocks(plain.forward_blocks(t, 0, 1), 1), plain.forward_blocks(t)
    )


def test_adapter_matches_tsai_backbone(tst_config):
    """embed + forward_blocks reproduce tsai's own _TSTBackbone.forward (no prompts)."""
    model = tst_config.build_tstplus(7).eval()
    bb = TSTAdapter(model, config=tst_config).eval()
    x = torch.randn(2, 6, 128)
    ours = bb.forward_blocks(bb.embed(x))
    theirs = model.backbone(x).transpose(1, 2)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    "x, err, words",
    [
        (torch.full((2, 6, 128), float("nan")), NonFiniteError, "NaN"),
        (torch.randn(2, 5, 128), ShapeError, "channels"),
        (torch.randn(2, 6, 8), ShapeError, "shorter than one patch"),
        (torch.randn(2, 6, 100), ShapeError, "seq_len"),
        (torch.randn(6, 128), ShapeError, "3 dimensions"),
        (torch.ones(2, 6, 128, dtype=torch.long), Exception, "floating"),
    ],
)
def test_bad_inputs(tst_config, x, err, words):
    bb = tst_config.build()
    with pytest.raises(err, match=words):
        bb.embed(x)


def test_config_errors():
    with pytest.raises(ConfigError, match="n_heads"):
        TSTConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="patch_len"):
        TSTConfig(seq_len=8, patch_len=16)
    with pytest.raises(ConfigError):
        TSTAdapter(torch.nn.Linear(2, 2))


def test_core_baselines_run_on_adapter(tst_config):
    from polyprompt.core import create

    for kind, kw in (("linear_probe", {}), ("vpt", {"num_tokens": 3}), ("full_finetune", {})):
        m = create(kind, tst_config.build(), num_classes=7, **kw)
        assert m(torch.randn(2, 6, 128)).shape == (2, 7)


def test_load_tsai_state_dict_layouts(tmp_path, tst_config):
    model = tst_config.build_tstplus(7).eval()
    x = torch.randn(2, 6, 128)
    ref = model.backbone(x)
    sd = model.state_dict()
    assert any(k.startswith("backbone.encoder.layers.0.") for k in sd)  # tsai's own key layout
    torch.save(sd, tmp_path / "tst.pth")
    torch.save({"model": sd, "opt": {"state": {}, "param_groups": []}}, tmp_path / "learner.pth")
    for name in ("tst.pth", "learner.pth"):
        bb, head = load_tsai_state_dict(tmp_path / name, tst_config, num_classes=7)
        torch.testing.assert_close(bb.eval().forward_blocks(bb.embed(x)), ref.transpose(1, 2))
        assert any(k.endswith("weight") for k in head)
    (tmp_path / "export.pkl").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle"):
        load_tsai_state_dict(tmp_path / "export.pkl", tst_config)
    bad = {k: v for k, v in sd.items() if "layers.1" not in k}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_tsai_state_dict(tmp_path / "bad.pth", tst_config)
    wrong = TSTConfig(c_in=6, seq_len=128, d_model=32, n_heads=2)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_tsai_state_dict(tmp_path / "tst.pth", wrong)
