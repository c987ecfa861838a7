"""Official ViT-B/16 checkpoint layout (timm keys) on a synthetic checkpoint; bad checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from polyprompt.continual.backbone import load_vit_checkpoint
from polyprompt.core.errors import CheckpointError

SMALL = {"img_size": 32, "depth": 1}  # ViT-B/16 width and key layout, 1 block, 32 px


def _official_like_state():
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000, **SMALL)
    return ref, {k: v.contiguous() for k, v in ref.state_dict().items()}


def test_vit_b16_key_layout_loads_from_safetensors_and_torch_files(tmp_path):
    ref, state = _official_like_state()
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
            "blocks.0.mlp.fc2.bias", "norm.weight", "head.weight"} <= set(state)  # fmt: skip
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    x = torch.rand(2, 3, 32, 32)
    ref.eval()
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    for name in ("model.safetensors", "ckpt.pth"):
        adapter = load_vit_checkpoint(tmp_path / name, **SMALL)
        assert adapter.embed_dim == 768 and adapter.num_blocks == 1
        with torch.no_grad():
            assert torch.allclose(adapter.forward_features(x), expected, atol=1e-5)


def _to_google_npz(state: dict, path, heads: int = 12) -> None:
    """Write ``state`` (timm keys) in the Google JAX ViT-B_16.npz key layout."""
    import numpy as np

    d = state["cls_token"].shape[-1]
    hd = d // heads
    w = {
        "embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),
        "embedding/bias": state["patch_embed.proj.bias"],
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
    }
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        m = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = (
            state[b + "norm1.weight"],
            state[b + "norm1.bias"],
        )
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = (
            state[b + "norm2.weight"],
            state[b + "norm2.bias"],
        )
        qkv_w, qkv_b = state[b + "attn.qkv.weight"].chunk(3), state[b + "attn.qkv.bias"].chunk(3)
        for n, wt, bs in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
            w[m + n + "/kernel"] = wt.T.reshape(d, heads, hd)
            w[m + n + "/bias"] = bs.reshape(heads, hd)
        w[m + "out/kernel"] = state[b + "attn.proj.weight"].reshape(d, heads, hd).permute(1, 2, 0)
        w[m + "out/bias"] = state[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = state[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = state[b + f"mlp.fc{r + 1}.bias"]
        i += 1
    np.savez(path, **{k: v.detach().numpy() for k, v in w.items()})


def test_official_google_npz_layout_loads(tmp_path):
    ref, state = _official_like_state()
    _to_google_npz(state, tmp_path / "ViT-B_16.npz")
    adapter = load_vit_checkpoint(tmp_path / "ViT-B_16.npz", **SMALL)
    x = torch.rand(2, 3, 32, 32)
    ref.eval()
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
        assert torch.allclose(adapter.forward_features(x), expected, atol=1e-5)
    import numpy as np

    np.savez(tmp_path / "bad.npz", **{"embedding/kernel": np.zeros((16, 16, 3, 768), "float32")})
    with pytest.raises(CheckpointError, match="lacks key"):
        load_vit_checkpoint(tmp_path / "bad.npz", **SMALL)


def test_bad_checkpoints_are_named(tmp_path):
    _, state = _official_like_state()
    with pytest.raises(CheckpointError, match="no such file"):
        load_vit_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_vit_checkpoint(tmp_path / "junk.safetensors", **SMALL)
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.0.mlp")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys.*blocks.0.mlp"):
        load_vit_checkpoint(tmp_path / "partial.safetensors", **SMALL)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_vit_checkpoint(
            tmp_path / "partial.safetensors", img_size=32, depth=1, embed_dim=384, num_heads=6
        )


def test_frozen_probe_accuracy_reads_real_digits(make_backbone):
    """The offline probe ceiling (benchmark and longer-stream check): well above chance on real
    digits even for a random tiny ViT, and at chance when the labels are shuffled."""
    import torch

    from polyprompt.continual.backbone import frozen_probe_accuracy
    from polyprompt.continual.data import ImageSet, load_digit_pool

    train, test = load_digit_pool("optdigits", max_samples=600)
    acc = frozen_probe_accuracy(make_backbone(img=32), train, test)
    assert 0.5 < acc <= 1.0
    g = torch.Generator().manual_seed(0)
    shuffled = ImageSet(train.images, train.labels[torch.randperm(len(train), generator=g)],
                        train.class_names, "shuffled")  # fmt: skip
    assert frozen_probe_accuracy(make_backbone(img=32), shuffled, test) < 0.3
