"""pytest-benchmark cases for one cwarp-train step (tiny shapes; the floor is
measured by benchmarks/train_throughput.py, not here)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup():
    from cwarp.train import distributed as D
    from cwarp.train import trainer as T
    from cwarp.train.config import compact_arch, config_from_argv
    from cwarp.data import SyntheticFaces

    cfg = config_from_argv(["--out", "unused", "--arch", compact_arch(), "--image-size", "16",
                            "--batch-size", "8", "--hidden-dim", "64", "--proj-dim", "32"])
    trainer = T.Trainer(cfg, D.DistInfo(), torch.device("cpu"), 3, steps_per_epoch=1000)
    images, _, landmarks = SyntheticFaces(8, image_size=16, seed=0).tensors()
    return trainer, images, landmarks


@pytest.mark.parametrize("mode", ["on_the_fly", "prerendered"])
def test_bench_train_step(benchmark, setup, mode):
    trainer, images, landmarks = setup
    views = trainer.make_views(images, landmarks)
    if mode == "on_the_fly":
        loss = benchmark(lambda: trainer.train_step(*trainer.make_views(images, landmarks)))
    else:
        loss = benchmark(lambda: trainer.train_step(*views))
    assert torch.isfinite(loss)
