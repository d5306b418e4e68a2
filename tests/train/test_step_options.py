"""cwarp-train's cheaper-step options and its controls: what each changes in the step, and what it must not."""
import pytest
import torch

import cwarp
from cwarp.train import config as C
from cwarp.train import methods as M
from cwarp.train import distributed as cdist
from cwarp.train import trainer as T
from cwarp.train.batch_stats import BatchStats
from cwarp.train.byol import BYOL
from cwarp.models import build_backbone

from test_train import read_log, run, tiny_args


def _model_and_batch(size=16, seed=0):
    torch.manual_seed(seed)
    model = BYOL(build_backbone(C.compact_arch(), 3, size), proj_dim=8, hidden_dim=16)
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(4, 3, size, size, generator=g), torch.randn(4, 3, size, size, generator=g)
    return model, x1, x2, torch.randn(4, 2, 3, size, size, generator=g)


def test_batch_stats_normalize_a_second_batch_as_the_first():
    torch.manual_seed(0)
    net = build_backbone(C.compact_arch(), 3, 16).train()
    x = torch.randn(8, 3, 16, 16)
    with BatchStats(net) as stats:
        ref = net(x)
    running = {k: v.clone() for k, v in net.state_dict().items()}
    # The recorded batch itself, run again with its statistics: what training mode gave.
    torch.testing.assert_close(stats.apply(net, x), ref, rtol=1e-4, atol=1e-5)
    assert net.training and all(m.training for m in net.modules())
    # The second call leaves the running statistics alone.
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in running.items())
    # Another batch is normalized with the first one's statistics, not its own.
    other = torch.randn(8, 3, 16, 16) * 3 + 1
    assert not torch.allclose(stats.apply(net, other), net.eval()(other))
    with pytest.raises(RuntimeError, match="has not run inside this BatchStats"):
        BatchStats(net).apply(net, x)


def test_detached_negatives_have_no_gradient_and_the_views_statistics():
    model, x1, x2, neg = _model_and_batch()
    e = model(x1, x2, neg, online_negatives=True, detach_negatives=True)
    assert e.zneg.shape == (4, 2, 8) and not e.zneg.requires_grad
    assert e.p1.requires_grad and e.z2_online.requires_grad
    # A negative equal to view 2 embeds exactly as view 2's online projection: same weights, same statistics.
    same = torch.stack([x2, x2], 1)
    e = model(x1, x2, same, online_negatives=True, detach_negatives=True)
    torch.testing.assert_close(e.zneg[:, 0], e.z2_online.detach(), rtol=1e-4, atol=1e-5)
    # The running statistics move with the views alone.
    detached, *_ = _model_and_batch()
    detached(x1, x2, neg, online_negatives=True, detach_negatives=True)
    views_only, *_ = _model_and_batch()
    views_only(x1, x2, None)
    for (k, a), b in zip(detached.backbone.state_dict().items(), views_only.backbone.state_dict().values()):
        if "running" in k:
            torch.testing.assert_close(a, b)


def test_negatives_for_the_first_anchors_only():
    model, x1, x2, neg = _model_and_batch()
    for online in (False, True):
        e = model(x1, x2, neg[:2], online_negatives=online)
        assert e.zneg.shape == (2, 2, 8) and e.p1.shape == (4, 8)
    assert M.negative_anchor_count(32, 0.5) == 16 and M.negative_anchor_count(3, 0.1) == 1


@pytest.mark.parametrize("through", ["online", "target"])
def test_half_anchor_loss_is_byol_over_all_plus_nce_over_the_half(through):
    cfg = C.validate(C.RunConfig().replace(out="x", negatives_through=through, negative_anchors=0.5))
    method = M.build_method(cfg, cdist.DistInfo())
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2, z1o, z2o = (torch.randn(4, 8, generator=g) for _ in range(6))
    zneg = torch.randn(2, 2, 8, generator=g)
    online = through == "online"
    loss = method.loss(p1, p2, z1, z2, zneg, z1o if online else None, z2o if online else None)
    key = z2o if online else z2
    byol = sum(cwarp.contrastive_loss(p, z, None, byol_weight=1.0, nce_weight=0.0) for p, z in ((p1, z2), (p2, z1)))
    nce = cwarp.contrastive_loss(p1[:2], key[:2], zneg, byol_weight=0.0, tau=cfg.negatives.tau)
    torch.testing.assert_close(loss, 0.5 * (byol + nce))
    assert set(method.loss_terms(p1, p2, z1, z2, zneg, loss, key)) == {"byol_term", "nce_term", "warp_acc"}


@pytest.mark.parametrize("extra", [
    ["--detach-negatives", "true"],
    ["--negative-anchors", "0.5"],
    ["--warp-centers", "uniform"],
    ["--negative-kind", "affine"],
    ["--memory-format", "channels_last"],
    ["--byol-weight", "0"],
    ["--negatives-through", "target"],
])
def test_runs_with_each_option(tmp_path, extra):
    res = run(tiny_args(tmp_path / "run", "--epochs", "1", *extra))
    assert res["status"] == "done"
    rows = read_log(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and all("warp_acc" in r for r in rows)


def test_stride_two_stem_run_and_compiled_backbone(tmp_path):
    res = run(tiny_args(tmp_path / "s2", "--epochs", "1", "--arch", "convnet-small-s2", "--image-size", "32"))
    assert res["status"] == "done" and res["config"].arch == "convnet-small-s2"
    cfg = C.validate(C.parse_command_line(tiny_args(tmp_path / "c", "--compile", "true"))[0])
    trainer = T.Trainer(cfg, cdist.DistInfo(), torch.device("cpu"), 3, 3, num_classes=7)
    # Compiled in place: the state_dict keys stay those the probe and --resume read.
    assert not any("_orig_mod" in k for k in trainer.model.state_dict())
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    loss = trainer.train_step(*trainer.make_views(images, None))
    assert torch.isfinite(loss)


def test_channels_last_reaches_the_views_and_weights():
    cfg = C.validate(C.parse_command_line(tiny_args("unused", "--memory-format", "channels_last"))[0])
    trainer = T.Trainer(cfg, cdist.DistInfo(), torch.device("cpu"), 3, 3, num_classes=7)
    pos1, pos2, neg = trainer.make_views(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), None)
    cl = torch.channels_last
    assert pos1.is_contiguous(memory_format=cl) and neg.flatten(0, 1).is_contiguous(memory_format=cl)
    conv = next(m for m in trainer.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=cl)
    assert not T.channels_last(C.validate(C.RunConfig().replace(out="x")), torch.device("cpu"))
    assert T.channels_last(C.validate(C.RunConfig().replace(out="x")), torch.device("cuda"))


def test_control_options_reach_the_augmentation():
    cfg = C.validate(C.parse_command_line(tiny_args("unused", "--warp-centers", "uniform",
                                                    "--negative-kind", "affine"))[0])
    aug = T.build_augment(cfg)
    assert aug.warp_centers == "uniform" and aug.negative_kind == "affine"


@pytest.mark.parametrize("changes, match", [
    (dict(warp_centers="eyes"), "--warp-centers: expected one of"),
    (dict(negative_kind="elastic"), "--negative-kind: expected one of"),
    (dict(memory_format="nhwc"), "--memory-format: expected one of"),
    (dict(negative_anchors=0.0), r"--negative-anchors: expected a fraction in \(0, 1\]"),
    (dict(negative_anchors=1.5), r"--negative-anchors: expected a fraction in \(0, 1\]"),
    (dict(detach_negatives=True, negatives_through="target"), "--detach-negatives: only with --negatives-through"),
    (dict(negative_anchors=0.5, in_batch=True), "--negative-anchors: --in-batch takes every anchor"),
])
def test_bad_option_values(changes, match):
    with pytest.raises(C.ConfigError, match=match):
        C.validate(C.RunConfig().replace(out="x", **changes))
