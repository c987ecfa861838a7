import pytest
import torch
from torch.utils.data import TensorDataset

from polyprompt.core import create, load_prompt, save_prompt, trainable_report
from polyprompt.core.errors import BackboneMismatchError, ConfigError, InputError
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
from polyprompt.pointcloud.generator import DGCNNPromptGenerator
from polyprompt.pointcloud.method import IDPT, IDPTConfig


def _idpt(seed=0, **kw):
    torch.manual_seed(seed)
    bb = PointMAEBackbone(PointMAEConfig.tiny())
    return create("idpt", bb, num_classes=3, k=8, **kw)


def test_registered_and_shapes(clouds):
    model = _idpt()
    assert isinstance(model, IDPT) and model.prompt_layer == 2
    assert model(clouds).shape == (4, 3)
    assert model.prompt(clouds).shape == (4, 1, 64)
    assert model.features(clouds).shape == (4, 3 * 64)


def test_paper_size_trainable_share():
    model = create("idpt", PointMAEBackbone(), num_classes=15)
    rep = trainable_report(model)
    assert rep.trainable_params == pytest.approx(1.70e6, rel=0.01)  # paper: 1.70 M
    assert 7.0 < 100 * rep.trainable_params / (rep.backbone_params + rep.trainable_params) < 7.8


def test_gradients_reach_only_generator_and_head(clouds):
    model = _idpt()
    model.train()
    tokens, _ = model.frozen_tokens(clouds)
    assert not tokens.requires_grad  # blocks 0..L-1 ran without autograd
    model(clouds).sum().backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"generator", "head"}
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training  # frozen backbone stays in eval mode


def test_factorised_edge_conv_equals_official_dgcnn():
    torch.manual_seed(0)
    gen = DGCNNPromptGenerator(32, k=6).eval()
    x = torch.randn(3, 20, 32)
    assert torch.allclose(gen(x), gen.reference_generate(x), atol=1e-5)
    gen.train()
    assert torch.allclose(gen(x), gen.reference_generate(x), atol=1e-4)


def test_prompt_is_instance_aware(clouds):
    model = _idpt().eval()
    p = model.prompt(clouds)
    assert not torch.allclose(p[0], p[1])


def test_cache_path_equals_uncached_path(clouds):
    from polyprompt.core import Trainer, TrainerConfig
    from polyprompt.pointcloud.method import CachedTokens

    y = torch.tensor([0, 1, 2, 1])
    results = []
    for cached in (False, True):
        model = _idpt(seed=3)
        data = TensorDataset(clouds, y)
        net = model
        if cached:
            data = model.feature_cache(in_memory=True).cached_dataset(data)
            net = CachedTokens(model)
        cfg = TrainerConfig(epochs=2, batch_size=2, lr=1e-3, progress=False, seed=0, device="cpu")
        Trainer(cfg).fit(net, data)
        model.eval()
        results.append(
            (model(clouds), {k: v.clone() for k, v in model.trainable_state_dict().items()})
        )
    (a, sa), (b, sb) = results
    assert torch.allclose(a, b, atol=1e-5)
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


def test_save_load_identical_outputs(tmp_path, clouds):
    model = _idpt().eval()
    save_prompt(model, tmp_path / "idpt")
    fresh = IDPT(model.backbone, IDPTConfig(num_classes=3, k=8)).eval()
    load_prompt(fresh, tmp_path / "idpt")
    assert torch.equal(fresh(clouds), model(clouds))
    other = _idpt(seed=5)
    with pytest.raises(BackboneMismatchError):
        load_prompt(other, tmp_path / "idpt")


def test_options_and_errors(clouds):
    for kind in ("prompt_only", "prompt_cls", "point_cls"):
        assert _idpt(head_features=kind)(clouds).shape == (4, 3)
    m = _idpt(train_cls_token=True)
    assert m.cache_point is None and m.backbone.cls_token.requires_grad
    with pytest.raises(InputError, match="nothing can be cached"):
        m.feature_cache(in_memory=True)
    with pytest.raises(ConfigError, match="prompt_layer"):
        _idpt(prompt_layer=3)
    with pytest.raises(ConfigError, match="exceed the backbone's 32 patch tokens"):
        create("idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=3, k=40)
    with pytest.raises(ConfigError, match="head_features"):
        IDPTConfig(num_classes=3, head_features="nope")
    with pytest.raises(InputError, match="prompt_layer=2"):
        _idpt().forward_from_tokens(torch.zeros(1, 33, 128), 1)
