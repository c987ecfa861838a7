"""FeatureCache: frozen tokens computed once, keyed by backbone + block + data, atomic files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.cache import CacheWarning, FeatureCache, cached_dataset, data_fingerprint
from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.registry import create


def vit(seed: int = 0) -> TimmViTAdapter:
    torch.manual_seed(seed)
    return TimmViTAdapter(
        VisionTransformer(
            img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3, num_heads=4, num_classes=0
        )
    )


def images(n: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("start_block", [0, 2, 3])
def test_tokens_match_the_backbone_and_are_read_back(tmp_path, start_block, monkeypatch):
    bb = vit()
    cache = FeatureCache(bb, start_block, root=tmp_path)
    x = images()
    tokens = cache.tokens(x, batch_size=4)
    with torch.no_grad():
        want = bb.forward_blocks(bb.embed(x), 0, start_block)
    assert tokens.shape == (10, 17, 64) and not tokens.is_inference()
    torch.testing.assert_close(tokens, want, atol=1e-6, rtol=1e-5)
    files = list(tmp_path.glob("*.safetensors"))
    assert [f.stem for f in files] == [cache.key(x)]
    # a second cache on the same backbone reads the file instead of running the backbone
    again = FeatureCache(bb, start_block, root=tmp_path)
    monkeypatch.setattr(again, "_compute", lambda *a: pytest.fail("recomputed"))
    assert torch.equal(again.tokens(x), tokens)


def test_key_changes_with_weights_data_and_block():
    bb = vit()
    cache = FeatureCache(bb, 3, in_memory=True)
    x = images()
    key = cache.key(x)
    assert key == FeatureCache(vit(), 3, in_memory=True).key(x)  # same weights, same key
    assert key != FeatureCache(bb, 2, in_memory=True).key(x)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-3
    assert cache.key(x2) != key
    assert cache.key(x.double()) != key
    with torch.no_grad():
        bb.model.blocks[2].mlp.fc2.weight[0, 0] += 1e-4  # one weight of one block
    assert cache.key(x) != key
    assert data_fingerprint(x) == data_fingerprint(x.clone())


def test_changed_backbone_invalidates_cached_tokens(tmp_path):
    bb = vit()
    cache = FeatureCache(bb, 3, root=tmp_path)
    x = images()
    before = cache.tokens(x)
    with torch.no_grad():
        bb.model.blocks[0].attn.qkv.weight.mul_(2.0)
    after = cache.tokens(x)
    assert not torch.allclose(before, after)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert cache.clear() == 2 and not list(tmp_path.iterdir())


def test_corrupt_file_is_recomputed_with_a_warning(tmp_path):
    cache = FeatureCache(vit(), 2, root=tmp_path)
    x = images()
    good = cache.tokens(x)
    path = cache.path(cache.key(x))
    path.write_bytes(path.read_bytes()[:100])  # truncated file
    with pytest.warns(CacheWarning, match="recomputing"):
        again = cache.tokens(x)
    torch.testing.assert_close(again, good)
    fresh = FeatureCache(cache.backbone, 2, root=tmp_path)
    with warnings_as_errors():
        torch.testing.assert_close(fresh.tokens(x), good)  # the file was rewritten


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", CacheWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def test_writes_are_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    cache = FeatureCache(vit(), 1, root=tmp_path)
    with pytest.raises(OSError, match="disk full"):
        cache.tokens(images())
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file remains


def test_in_memory_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path))
    cache = FeatureCache(vit(), 3, in_memory=True)
    assert cache.root == tmp_path / "features"
    x = images()
    first = cache.tokens(x)
    assert cache.tokens(x) is first
    assert not (tmp_path / "features").exists()
    assert cache.clear() == 1


def test_cached_linear_probe_training_matches_uncached(tmp_path):
    x = images(24)
    y = torch.arange(24) % 3
    data = TensorDataset(x, y)

    def train(cached: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        probe = create("linear_probe", vit(), num_classes=3)
        cache = FeatureCache(probe.backbone, probe.cache_point, root=tmp_path)
        ds = cached_dataset(data, cache, batch_size=5) if cached else data
        opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.5)
        for xb, yb in DataLoader(ds, batch_size=8, shuffle=False):
            logits = probe.forward_from_tokens(xb, cache.start_block) if cached else probe(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return probe.eval()

    plain, cached = train(False), train(True)
    assert not torch.equal(
        plain.head.weight, create("linear_probe", vit(), num_classes=3).head.weight
    )
    with torch.no_grad():
        torch.testing.assert_close(cached(x), plain(x), atol=1e-5, rtol=1e-5)


def test_dataset_inputs_and_bad_inputs(tmp_path):
    bb = vit()
    cache = FeatureCache(bb, 3, root=tmp_path)
    x = images(6)
    ds = TensorDataset(x, torch.arange(6))
    out = cache.cached_dataset(ds)
    assert len(out) == 6 and out[0][0].shape == (17, 64) and int(out[5][1]) == 5
    torch.testing.assert_close(cache.tokens(ds), cache.tokens(x))
    torch.testing.assert_close(cache.tokens([xi for xi in x]), cache.tokens(x))
    with pytest.raises(InputError, match="start_block"):
        FeatureCache(bb, 4)
    with pytest.raises(InputError, match="PromptableBackbone"):
        FeatureCache(torch.nn.Linear(2, 2), 0)
    with pytest.raises(InputError, match="batch_size"):
        cache.tokens(x, batch_size=0)
    with pytest.raises(InputError, match="empty"):
        cache.tokens([])
    with pytest.raises(ShapeError, match="different shapes"):
        cache.tokens([torch.zeros(1, 32, 32), torch.zeros(1, 16, 16)])
    with pytest.raises(InputError, match=r"\(input, label\) pair"):
        cached_dataset([x[0], x[1]], cache)
    with pytest.raises(ShapeError):
        cache.tokens(torch.randn(2, 3, 32, 32))  # the adapter validates the images
