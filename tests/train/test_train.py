"""cwarp-train end to end on tiny runs: logs, exact resume after Ctrl-C, NaN stop, bad input."""
import json
import os
import signal

import pytest
import torch

from cwarp.train import cli
from cwarp.train import config as C
from cwarp.train import methods as M
from cwarp.train import distributed as cdist
from cwarp.train import loop
from cwarp.train import trainer as T
from cwarp.train.byol import cosine_momentum
from cwarp.train.optim import LARS, WarmupCosine, build_optimizer

from tiny_runs import tiny_args


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def run(argv, **kw):
    cfg, explicit = C.parse_command_line(argv)
    return loop.train(cfg, explicit, **kw)


# The quick tier's one training run; the others here are marked slow.
def test_run_writes_log_config_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert cli.main(tiny_args(out)) == 0
    rows = read_log(out)
    assert [r["step"] for r in rows] == list(range(1, 7))       # 24 / 8 = 3 steps x 2 epochs
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    cfg = json.load(open(out / "config.json"))
    assert cfg["method"] == "contrawarp" and cfg["in_channels"] == 3
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for k in ("arch", "image_size", "in_channels", "format"):
        assert k in state["config"]
    assert state["step"] == 6 and state["epoch"] == 2
    from cwarp.models import build_backbone
    bb = build_backbone(cfg["arch"], cfg["in_channels"], cfg["image_size"])
    bb.load_state_dict(state["backbone"])           # the probe's contract
    assert not any(p.startswith(".checkpoint-") for p in os.listdir(out))


@pytest.mark.slow
def test_byol_baseline_has_no_negatives(tmp_path):
    out = tmp_path / "byol"
    res = run(tiny_args(out, "--method", "byol", "--epochs", "1"))
    assert res["status"] == "done"
    assert res["config"].negatives.num_negatives == 0 and res["config"].negatives.nce_weight == 0.0
    rows = read_log(out)
    assert all("byol_term" in r and "nce_term" not in r and "warp_acc" not in r for r in rows)
    assert all(r["byol_term"] == pytest.approx(r["loss"], rel=1e-5) for r in rows)


@pytest.mark.slow
def test_log_carries_the_loss_parts(tmp_path):
    out = tmp_path / "parts"
    run(tiny_args(out, "--epochs", "1", "--nce-weight", "0.5", "--byol-weight", "2"))
    for r in read_log(out):
        assert 0 <= r["byol_term"] <= 4 and r["nce_term"] >= 0 and 0 <= r["warp_acc"] <= 1
        assert r["loss"] == pytest.approx(0.5 * r["nce_term"] + 2 * r["byol_term"], rel=1e-5)


@pytest.mark.parametrize("through", ["target", "online"])
@pytest.mark.parametrize("nce_on", ["p1", "both"])
@pytest.mark.parametrize("in_batch", [False, True])
def test_loss_terms_match_the_reference(in_batch, nce_on, through):
    from cwarp import reference

    cfg = C.validate(C.parse_command_line(tiny_args("unused", "--nce-weight", "0.7", "--byol-weight", "0.3",
                                                         "--nce-on", nce_on, "--negatives-through", through,
                                                         *(["--in-batch"] if in_batch else [])))[0])
    trainer = T.Trainer(cfg, cdist.init_from_env("cpu"), torch.device("cpu"), in_channels=3, steps_per_epoch=3)
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2, o1, o2 = (torch.randn(6, 16, generator=g) for _ in range(6))
    # The InfoNCE's positives: the targets, or with online negatives the online projections.
    k1, k2 = (z1, z2) if through == "target" else (o1, o2)
    zneg = torch.randn(6, 2, 16, generator=g)
    zneg[:3] = k2[:3, None] + 0.01 * zneg[:3]     # rows 0-2: the negatives beat the positive's cosine (mostly)
    loss = trainer.method.loss(p1, p2, z1, z2, zneg, *((o1, o2) if through == "online" else ()))

    def part(nce_weight, byol_weight):
        kw = dict(tau=cfg.negatives.tau, nce_weight=nce_weight, byol_weight=byol_weight, in_batch=in_batch)
        zneg2 = zneg if nce_on == "both" else None
        pos1, pos2 = (k2, k1) if byol_weight == 0 else (z2, z1)
        return 0.5 * (reference.contrastive_loss(p1, pos1, zneg, **kw) + reference.contrastive_loss(p2, pos2, zneg2, **kw))

    terms = trainer.method.last_terms()
    torch.testing.assert_close(terms["byol_term"], part(0.0, 1.0))
    torch.testing.assert_close(terms["nce_term"], part(1.0, 0.0))
    torch.testing.assert_close(loss, 0.7 * part(1.0, 0.0) + 0.3 * part(0.0, 1.0))
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=-1)  # noqa: E731
    wins = (cos(p1, k2)[:, None] > cos(p1[:, None], zneg)).all(1)
    assert terms["warp_acc"].item() == wins.float().mean().item()


def test_nce_on_p1_keeps_the_negatives_out_of_p2s_half():
    from cwarp import reference

    cfg = C.validate(C.parse_command_line(tiny_args("unused"))[0])
    assert cfg.negatives.nce_on == "p1" and cfg.negatives.negatives_through == "online"   # the defaults
    cfg = cfg.replace(negatives_through="target")
    trainer = T.Trainer(cfg, cdist.init_from_env("cpu"), torch.device("cpu"), in_channels=3, steps_per_epoch=3)
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(5, 8, generator=g) for _ in range(4))
    zneg = torch.randn(5, 2, 8, generator=g)
    kw = dict(tau=cfg.negatives.tau, nce_weight=1.0, byol_weight=1.0)
    want = 0.5 * (reference.contrastive_loss(p1, z2, zneg, **kw) + reference.contrastive_loss(p2, z1, None, **kw))
    torch.testing.assert_close(trainer.method.loss(p1, p2, z1, z2, zneg), want)
    both = T.Trainer(cfg.replace(nce_on="both"), cdist.init_from_env("cpu"), torch.device("cpu"), in_channels=3,
                     steps_per_epoch=3)
    assert not torch.allclose(both.method.loss(p1, p2, z1, z2, zneg), want)
    # The embeddings must match the config's --negatives-through.
    with pytest.raises(ValueError, match="--negatives-through target takes no z1_online"):
        trainer.method.loss(p1, p2, z1, z2, zneg, z1, z2)
    online = T.Trainer(cfg.replace(negatives_through="online"), cdist.init_from_env("cpu"), torch.device("cpu"),
                       in_channels=3, steps_per_epoch=3)
    with pytest.raises(ValueError, match="--negatives-through online needs z1_online"):
        online.method.loss(p1, p2, z1, z2, zneg)


@pytest.mark.slow
def test_ctrl_c_then_resume_matches_uninterrupted(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run(tiny_args(full))

    def interrupt(step, loss):
        if step == 4:                      # mid-epoch 2: sampler position must be restored
            os.kill(os.getpid(), signal.SIGINT)

    res = run(tiny_args(cut), step_hook=interrupt)
    assert res["status"] == "interrupted" and res["step"] == 4
    assert [r["step"] for r in read_log(cut)] == [1, 2, 3, 4]
    assert cli.main(tiny_args(cut, "--resume")) == 0
    a, b = read_log(full), read_log(cut)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    # Bitwise on the CPU: same views, same updates, same EMA.
    assert [r["loss"] for r in b] == [r["loss"] for r in a]
    sa = torch.load(full / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    real_step = T.Trainer.train_step

    def poisoned(self, *a):
        if self.step < 4:
            return real_step(self, *a)
        real_loss = self.method.loss
        self.method.loss = lambda *e: real_loss(*e) * float("nan")
        try:
            return real_step(self, *a)
        finally:
            self.method.loss = real_loss

    monkeypatch.setattr(T.Trainer, "train_step", poisoned)
    assert cli.main(tiny_args(out)) == 3
    err = capsys.readouterr().err
    assert "NaN or Inf" in err and "last good checkpoint" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3                      # the end of epoch 1, before the NaN
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("extra, match", [
    (["--lr", "-1"], "--lr"),
    (["--tau", "0"], "--tau"),
    (["--warp-magnitude", "0.2,0.1"], "--warp-magnitude"),
    (["--num-negatives", "0"], "--num-negatives"),
    (["--arch", "vgg"], "--arch"),
    (["--batch-size", "32"], "fewer than one batch"),
    (["--resume"], "no checkpoint"),
    (["--sync-bn"], "--sync-bn"),
    (["--rotation", "-5"], "--rotation"),
    (["--jitter-strength", "6"], "--jitter-strength"),
    (["--grayscale-p", "1.5"], "--grayscale-p"),
    (["--nce-on", "p2"], "--nce-on"),
])
def test_bad_input_messages(tmp_path, capsys, extra, match):
    assert cli.main(tiny_args(tmp_path / "bad", *extra)) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
def test_resume_conflict_names_the_field(tmp_path, capsys):
    out = tmp_path / "conf"
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    assert cli.main(tiny_args(out, "--epochs", "1", "--resume", "--lr", "0.5")) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "conflicts" in err
    # Re-running into the same folder without --resume is refused too.
    assert cli.main(tiny_args(out, "--epochs", "1")) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_cosine_momentum_and_schedule():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    w = torch.nn.Parameter(torch.ones(3, 3))
    opt = torch.optim.SGD([w], lr=1.0)
    sch = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    lrs = [sch.get_lr()]
    for _ in range(10):
        sch.step()
        lrs.append(sch.get_lr())
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_lars_scales_by_trust_ratio():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))
    b = torch.nn.Parameter(torch.zeros(4))
    opt = build_optimizer("lars", [("w", w), ("b", b)], lr=1.0, weight_decay=0.0, momentum=0.0)
    assert isinstance(opt, LARS)
    w.grad = torch.full((4, 4), 0.5)
    b.grad = torch.full((4,), 0.5)
    opt.step()
    # |w| = 8, |g| = 2: step = lr * 0.001 * 8 / 2 * g = 0.002 per entry; b is not adapted.
    assert torch.allclose(w, torch.full((4, 4), 2.0 - 0.002))
    assert torch.allclose(b, torch.full((4,), -0.5))


def test_online_negatives_carry_gradient_target_negatives_do_not():
    import cwarp
    from cwarp.train.byol import BYOL
    from cwarp.models import build_backbone

    torch.manual_seed(0)
    model = BYOL(build_backbone(C.compact_arch(), 3, 16), proj_dim=8, hidden_dim=16)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    neg = torch.randn(4, 2, 3, 16, 16, generator=g)
    for online in (False, True):
        e = model(x1, x2, neg, online_negatives=online)
        assert e.zneg.shape == (4, 2, 8) and e.zneg.requires_grad == online
        assert not e.z1.requires_grad and not e.z2.requires_grad
        assert (e.z2_online is not None) == online and (e.z1_online is not None) == online
        if online:
            e.zneg.retain_grad()
            e.z2_online.retain_grad()
            model.zero_grad()
            cwarp.contrastive_loss(e.p1, e.z2_online, e.zneg, byol_weight=0.0, nce_weight=1.0).backward()
            assert e.zneg.grad.abs().sum() > 0 and e.z2_online.grad.abs().sum() > 0
            assert all(p.grad is None for p in model.target_backbone.parameters())
    # Through the online network the negatives and their positives are the
    # projector's output (no predictor), from one batch.
    model.eval()
    e = model(x1, x2, neg, online_negatives=True)
    expect = model.projector(model.backbone(torch.cat([x1, x2, neg.flatten(0, 1)])))
    torch.testing.assert_close(e.zneg, expect[8:].view(4, 2, 8))
    torch.testing.assert_close(e.z1_online, expect[:4])
    torch.testing.assert_close(e.z2_online, expect[4:8])


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--negatives-through", "online"], ["--precision", "bf16"]])
def test_run_with_online_negatives_or_bf16(tmp_path, extra):
    res = run(tiny_args(tmp_path / "run", "--epochs", "1", *extra))
    assert res["status"] == "done"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_log(tmp_path / "run"))


@pytest.mark.parametrize("through", ["target", "online"])
def test_bf16_step_loss_is_float32_without_casts(through):
    """--precision bf16: the network and the loss run under one autocast region;
    the loss is float32 by contrastive_loss's autocast policy, and equals the
    loss of the bfloat16 embeddings cast to float32 by hand."""
    argv = tiny_args("unused", "--precision", "bf16", "--negatives-through", through)
    cfg = C.validate(C.parse_command_line(argv)[0])
    trainer = T.Trainer(cfg, cdist.init_from_env("cpu"), torch.device("cpu"), in_channels=3, steps_per_epoch=3)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    neg = torch.rand(4, 2, 3, 16, 16, generator=g)
    model = trainer.model.eval()          # eval: batch norm's statistics stay as they are between the calls
    loss = trainer.method.step_loss(model, x1, x2, neg, None, trainer.autocast)
    assert loss.dtype == torch.float32
    with trainer.autocast:
        emb = model(x1, x2, neg, online_negatives=through == "online")
    assert emb.p1.dtype == torch.bfloat16 and emb.zneg.dtype == torch.bfloat16
    by_hand = trainer.method.loss(*(None if t is None else t.float() for t in emb))
    torch.testing.assert_close(loss, by_hand, rtol=0, atol=0)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for _, p in model.online_parameters())


def test_global_view_options_reach_the_augmentation():
    cfg = C.validate(C.parse_command_line(tiny_args(
        "unused", "--crop-scale", "0.8,1", "--rotation", "3", "--jitter-strength", "0.5", "--grayscale-p", "0"))[0])
    aug = T.build_augment(cfg)
    assert aug.crop_scale == (0.8, 1.0) and aug.rotation == (-3.0, 3.0) and aug.grayscale_p == 0.0
    assert aug.brightness == (0.8, 1.2) and aug.contrast == (0.8, 1.2)
    assert aug.saturation == pytest.approx((0.9, 1.1)) and aug.hue == pytest.approx((-0.05, 0.05))
    plain = T.build_augment(C.validate(C.parse_command_line(tiny_args("unused", "--jitter-strength", "0"))[0]))
    assert plain.brightness == (1.0, 1.0) and plain.hue == (0.0, 0.0)
    default = T.build_augment(C.validate(C.parse_command_line(tiny_args("unused"))[0]))
    assert default.rotation == (-5.0, 5.0) and default.brightness == pytest.approx((0.8, 1.2))
    assert default.crop_scale == (0.8, 1.0) and default.warp_radius == (0.4, 0.6)


def test_warp_kind_reaches_the_augmentation():
    default = T.build_augment(C.validate(C.parse_command_line(tiny_args("unused"))[0]))
    gaussian = T.build_augment(C.validate(C.parse_command_line(tiny_args("unused", "--warp-kind", "gaussian"))[0]))
    assert default.kind == "translate" and gaussian.kind == "gaussian"
    with pytest.raises(C.ConfigError, match="--warp-kind: expected one of"):
        C.validate(C.RunConfig().replace(out="x", warp_kind="swirl"))


def test_precision_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert T.autocast_dtype("fp32", cpu) is None and T.autocast_dtype("fp32", cuda) is None
    assert T.autocast_dtype("bf16", cpu) is torch.bfloat16 and T.autocast_dtype("bf16", cuda) is torch.bfloat16
    assert T.autocast_dtype("auto", cuda) is torch.bfloat16 and T.autocast_dtype("auto", cpu) is None
    cfg, _ = C.parse_command_line(tiny_args("unused"))
    for key, value in (("precision", "fp16"), ("negatives_through", "both")):
        with pytest.raises(C.ConfigError, match="--" + key.replace("_", "-")):
            C.validate(cfg.replace(**{key: value}))


@pytest.mark.slow
def test_resume_a_checkpoint_from_before_precision_negatives_through_and_nce_on(tmp_path):
    """Such a run trained with auto precision (today's default), target
    negatives and negatives on both halves (the former defaults of
    negatives_through and nce_on)."""
    full, old = tmp_path / "full", tmp_path / "old"
    former = ("--nce-on", "both", "--negatives-through", "target")
    run(tiny_args(full, *former))

    def interrupt(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    assert run(tiny_args(old, *former), step_hook=interrupt)["status"] == "interrupted"
    path = old / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    for key in ("precision", "negatives_through", "nce_on", "config_version", "skip_corrupt"):
        del state["config"][key]
    # Nor had such checkpoints the loader's worker processes: their "workers" were the CPU threads.
    state["config"]["workers"] = state["config"].pop("threads")
    del state["checksum"]       # nor a checksum
    torch.save(state, path)
    # Asking for today's default explicitly contradicts what the checkpoint ran with.
    with pytest.raises(C.ConfigError, match=r"--nce-on \(e.g. nce_on: checkpoint has 'both', command line has 'p1'\)"):
        run(tiny_args(old, "--resume", "--nce-on", "p1"))
    res = run(tiny_args(old, "--resume"))
    assert res["status"] == "done"
    assert res["config"].precision == "auto" and res["config"].negatives.negatives_through == "target"
    assert res["config"].negatives.nce_on == "both"
    assert [r["loss"] for r in read_log(old)] == [r["loss"] for r in read_log(full)]


@pytest.mark.slow
def test_supervised_reference_run(tmp_path):
    out = tmp_path / "sup"
    res = run(tiny_args(out, "--method", "supervised", "--epochs", "1"))
    assert res["status"] == "done" and res["config"].negatives.num_negatives == 0
    rows = read_log(out)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert all("momentum" not in r for r in rows)               # no EMA target
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    from cwarp.models import build_backbone
    bb = build_backbone(state["config"]["arch"], 3, 16)
    bb.load_state_dict(state["backbone"])                       # probed like the BYOL runs
    assert "classifier.weight" in state["model"]


@pytest.mark.slow
def test_supervised_step_fits_the_labels_and_needs_them():
    from cwarp.train import distributed as D

    cfg, _ = C.parse_command_line(tiny_args("unused", "--method", "supervised", "--warmup-epochs", "0"))
    trainer = T.Trainer(C.validate(cfg), D.DistInfo(), torch.device("cpu"), 3, steps_per_epoch=1000,
                        num_classes=7)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 7
    losses = [float(trainer.train_step(x, x, None, y)) for _ in range(40)]
    assert losses[-1] < 0.25 * losses[0]       # cross-entropy against these labels, memorized
    with pytest.raises(ValueError, match="needs labels"):
        trainer.train_step(x, x, None)
    with pytest.raises(ValueError, match="needs num_classes"):
        T.Trainer(C.validate(cfg), D.DistInfo(), torch.device("cpu"), 3, steps_per_epoch=10)
    for key, value in (("in_batch", True), ("negatives_through", "target")):
        with pytest.raises(C.ConfigError, match="--" + key.replace("_", "-") + ": --method supervised"):
            C.validate(cfg.replace(**{key: value}))


@pytest.mark.slow
def test_ctrl_c_on_the_last_step_finishes_normally(tmp_path, capsys):
    out = tmp_path / "last"

    def interrupt(step, loss):
        if step == 6:                      # the run's last step
            os.kill(os.getpid(), signal.SIGINT)

    res = run(tiny_args(out), step_hook=interrupt)
    assert res["status"] == "done" and res["step"] == 6
    assert "stopping after this step" in capsys.readouterr().err      # said at once
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and state["epoch"] == 2
    # Resuming the finished run (with --arch auto, which keeps the checkpoint's backbone) has nothing to do.
    assert cli.main(["--out", str(out), "--resume", "--arch", "auto"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_method_registry_owns_the_losses():
    assert tuple(M.METHOD_CLASSES) == ("contrawarp", "byol", "supervised")
    cfg = C.validate(C.parse_command_line(tiny_args("unused"))[0])
    trainer = T.Trainer(cfg, cdist.init_from_env("cpu"), torch.device("cpu"), in_channels=3, steps_per_epoch=3)
    assert isinstance(trainer.method, M.ContraWarping) and trainer.cfg.data.in_channels == 3
    assert trainer.cfg.views.mean is not None and trainer.state_dict(0, 0)["config"]["mean"] == list(
        trainer.cfg.views.mean)
