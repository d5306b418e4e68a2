"""Two processes (gloo, as under torchrun) each read a disjoint part of an epoch of streamed data, and the
two parts together are the whole data set, for a folder and for webdataset shards.

Each image is a flat colour whose value is its index, written losslessly (PNG), so a decoded batch says which
images it holds. The feeds are the trainer's own (load_data, make_feed), with two loader workers a process.
"""
import io
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

pytestmark = pytest.mark.slow   # two spawned processes, each with two loader workers

WORLD = 2
IMAGES = 48          # 2 processes x batches of 4 x 6 steps: nothing left over
SIZE = 16


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), index, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _write(root):
    folder = root / "folder"
    for i in range(IMAGES):
        (folder / f"{i % 5}").mkdir(parents=True, exist_ok=True)
        (folder / f"{i % 5}" / f"{i:03d}.png").write_bytes(_png(i))
    import webdataset as wds

    for shard in range(4):
        with wds.TarWriter(str(root / f"faces-{shard:06d}.tar")) as w:
            for i in range(shard * 12, shard * 12 + 12):
                w.write({"__key__": f"{i:04d}", "png": _png(i)})
    return {"folder": str(folder), "webdataset": str(root / "faces-{000000..000003}.tar")}


def _rank(rank, port, data, q):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    from cwarp.train import config as C
    from cwarp.train import distributed as D
    from cwarp.train.feeds import make_feed
    from cwarp.train.training_data import load_data

    info = D.init_from_env("cpu")
    seen = {}
    try:
        for fmt, path in data.items():
            cfg = C.validate(C.parse_command_line(["--out", "x", "--format", fmt, "--data", path, "--image-size",
                                                   str(SIZE), "--batch-size", str(4 * WORLD), "--workers", "2"])[0])
            feed = make_feed(load_data(cfg), cfg, info, torch.device("cpu"), 4)
            ids = [images[:, 0, 0, 0].tolist() for images, _, _ in feed.epoch(0, 0)]
            seen[fmt] = (feed.steps_per_epoch, ids)
    except Exception as e:  # noqa: BLE001 - reported by the test instead of a timeout
        seen = f"rank {rank}: {type(e).__name__}: {e}"
    q.put(seen)
    D.cleanup()


@pytest.fixture(scope="module")
def epochs(tmp_path_factory):
    data = _write(tmp_path_factory.mktemp("dist"))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, data, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in range(WORLD)]
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_one_epoch_over_two_processes_is_the_data_set_once(epochs, fmt):
    parts = []
    for result in epochs:
        steps, batches = result[fmt]
        assert steps == IMAGES // (4 * WORLD) and len(batches) == steps
        parts.append([i for batch in batches for i in batch])
    assert not set(parts[0]) & set(parts[1])                         # disjoint
    assert sorted(parts[0] + parts[1]) == list(range(IMAGES))      # together the data set, each image once
