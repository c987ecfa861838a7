"""Official DVPT backbone checkpoint (OpenAI CLIP ``visual.*`` layout) -> timm ViT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polyprompt.core.errors import CheckpointError
from polyprompt.medical.checkpoints import load_official_vit, read_state_dict

W, LAYERS, PATCH, GRID, OUT = 64, 2, 8, 4, 16


def clip_visual_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small random checkpoint with exactly the key layout of CLIP's ViT-B/16 ``visual``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    sd = {
        "visual.conv1.weight": r(W, 3, PATCH, PATCH),
        "visual.class_embedding": r(W, s=0.5),
        "visual.positional_embedding": r(1 + GRID * GRID, W, s=0.5),
        "visual.ln_pre.weight": 1 + r(W),
        "visual.ln_pre.bias": r(W),
        "visual.ln_post.weight": 1 + r(W),
        "visual.ln_post.bias": r(W),
        "visual.proj": r(W, OUT),
    }
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        sd |= {
            p + "ln_1.weight": 1 + r(W),
            p + "ln_1.bias": r(W),
            p + "attn.in_proj_weight": r(3 * W, W, s=0.2),
            p + "attn.in_proj_bias": r(3 * W),
            p + "attn.out_proj.weight": r(W, W, s=0.2),
            p + "attn.out_proj.bias": r(W),
            p + "ln_2.weight": 1 + r(W),
            p + "ln_2.bias": r(W),
            p + "mlp.c_fc.weight": r(4 * W, W, s=0.2),
            p + "mlp.c_fc.bias": r(4 * W),
            p + "mlp.c_proj.weight": r(W, 4 * W, s=0.2),
            p + "mlp.c_proj.bias": r(W),
        }
    return sd


def clip_reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """CLIP ``VisionTransformer.forward`` up to ``ln_post(x[:, 0])`` (openai/CLIP model.py)."""
    heads = W // 64 or 1
    t = F.conv2d(x, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    t = torch.cat([cls, t], 1) + sd["visual.positional_embedding"]
    t = F.layer_norm(t, (W,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    mha = torch.nn.MultiheadAttention(W, heads, batch_first=True)
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        mha.in_proj_weight.data = sd[p + "attn.in_proj_weight"]
        mha.in_proj_bias.data = sd[p + "attn.in_proj_bias"]
        mha.out_proj.weight.data = sd[p + "attn.out_proj.weight"]
        mha.out_proj.bias.data = sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(t, (W,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        t = t + mha(h, h, h, need_weights=False)[0]
        h = F.layer_norm(t, (W,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        h = F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        t = t + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return F.layer_norm(t[:, 0], (W,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)


def test_clip_layout_loads_and_matches_clip_forward(tmp_path):
    from safetensors.torch import save_file

    sd = clip_visual_state()
    path = tmp_path / "ViT-B_16.safetensors"
    save_file(sd, str(path))
    bb = load_official_vit(path)
    assert (bb.embed_dim, bb.num_blocks, bb.img_size, bb.in_chans) == (W, LAYERS, (32, 32), 3)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bb.forward_features(x), clip_reference(sd, x), atol=1e-4)
        # grey MRI into the RGB CLIP model: repeated to 3 channels
        grey = torch.rand(2, 1, 32, 32)
        assert torch.allclose(
            bb.forward_features(grey), clip_reference(sd, grey.expand(-1, 3, -1, -1)), atol=1e-4
        )


def test_torch_save_state_dict_and_timm_layout_roundtrip(tmp_path):
    sd = clip_visual_state(1)
    torch.save(sd, tmp_path / "clip.pt")
    bb = load_official_vit(tmp_path / "clip.pt")
    timm_sd = {k: v.clone() for k, v in bb.model.state_dict().items()}
    again = load_official_vit(timm_sd, act_layer="quick_gelu")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        # timm-layout checkpoints get timm's LayerNorm eps (1e-6) instead of CLIP's 1e-5
        assert torch.allclose(again.forward_features(x), bb.forward_features(x), atol=1e-3)


def test_position_embedding_resampled_for_other_sizes():
    bb = load_official_vit(clip_visual_state(), img_size=48)  # 4x4 -> 6x6 grid (official: 18x18)
    assert bb.img_size == (48, 48) and bb.model.pos_embed.shape == (1, 1 + 36, W)
    assert bb.forward_features(torch.rand(1, 3, 48, 48)).shape == (1, W)


def test_bad_checkpoints(tmp_path):
    sd = clip_visual_state()
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_official_vit({"foo.weight": torch.zeros(1)})
    broken = dict(sd)
    broken.pop("visual.transformer.resblocks.1.mlp.c_fc.bias")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_official_vit(broken)
    wrong = dict(sd)
    wrong["visual.transformer.resblocks.0.attn.out_proj.weight"] = torch.zeros(W, W + 1)
    with pytest.raises(CheckpointError):
        load_official_vit(wrong)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.pt")


def test_torchscript_archive_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B_16.pt"))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_state_dict(tmp_path / "ViT-B_16.pt")
