"""cwarp.backends() tells the truth: a backend it calls available runs here, one it does not raises, with its reason."""
import os
import subprocess
import sys

import pytest
import torch

import cwarp
from cwarp import _extension

KEYS = {"cpp", "cuda", "triton"}


def warp_on(device: str, backend: str) -> torch.Tensor:
    image = torch.rand(1, 1, 6, 6, device=device)
    params = torch.tensor([[[0.0, 0.0, 0.5, 0.1, 0.0]]], device=device)
    return cwarp.local_warp(image, params, backend=backend)


def runs(device: str, backend: str) -> bool:
    try:
        warp_on(device, backend)
    except RuntimeError:
        return False
    return True


def test_keys_and_types():
    flags, reasons = cwarp.backends(), cwarp.backends(explain=True)
    assert set(flags) == set(reasons) == KEYS
    assert all(isinstance(v, bool) for v in flags.values())
    for name in KEYS:
        assert flags[name] == (reasons[name] == "available"), (name, reasons[name])
        assert reasons[name] and isinstance(reasons[name], str)


def test_cpp_flag_matches_what_runs():
    assert cwarp.backends()["cpp"] == runs("cpu", "cpp")


def test_cuda_flag_matches_what_runs():
    flag, reason = cwarp.backends()["cuda"], cwarp.backends(explain=True)["cuda"]
    if not torch.cuda.is_available():
        assert not flag and (reason.startswith("no CUDA device is visible") or "without its CUDA kernels" in reason
                             or "did not load" in reason)
    else:
        assert flag == runs("cuda", "cpp"), reason


def test_triton_flag_matches_what_runs():
    # Under the test suite, TRITON_INTERPRET=1 (conftest) lets Triton run CPU tensors when there is no GPU.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    flag = cwarp.backends()["triton"]
    assert flag == runs(device, "triton"), cwarp.backends(explain=True)["triton"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU makes Triton available with or without the interpreter")
def test_without_gpu_or_interpreter_triton_is_unavailable_and_says_why():
    # A fresh process: whether Triton interprets is fixed when triton is first imported.
    code = (
        "import torch, cwarp\n"
        "flags, why = cwarp.backends(), cwarp.backends(explain=True)\n"
        "assert flags['triton'] is False, flags\n"
        "assert 'TRITON_INTERPRET=1' in why['triton'] and 'no CUDA device' in why['triton'], why\n"
        "assert flags['cuda'] is False, flags\n"
        "image, params = torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 5)\n"
        "try:\n"
        "    cwarp.local_warp(image, params, backend='triton')\n"
        "except RuntimeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('backend=triton ran although backends() says it cannot')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_reasons_name_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert cwarp.backends(explain=True)["triton"].startswith("no CUDA device is visible")
    monkeypatch.setattr(_extension, "triton_installed", lambda: False)
    assert cwarp.backends(explain=True)["triton"] == "the triton package is not installed"
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_IMPORT_ERROR", ImportError("libcwarp.so: cannot open shared object file"))
    reasons = cwarp.backends(explain=True)
    assert reasons["cpp"].startswith("the compiled extension cwarp._C did not load (libcwarp.so: cannot open")
    assert reasons["cuda"] == reasons["cpp"]
    assert cwarp.backends() == {"cpp": False, "cuda": False, "triton": False}
    # An extension built against another torch fails to load on a symbol of torch's C++ API.
    monkeypatch.setattr(_extension, "_IMPORT_ERROR", ImportError("_C.abi3.so: undefined symbol: _ZN5torch4_def"))
    reason = cwarp.backends(explain=True)["cpp"]
    assert f"built against another torch than the running {torch.__version__}" in reason
    with pytest.raises(RuntimeError, match="must be built against the torch it runs with"):
        cwarp.local_warp(torch.rand(1, 1, 4, 4), torch.zeros(1, 0, 5), backend="cpp")


@pytest.mark.slow
@pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")
def test_import_cwarp_waits_for_torch_and_registers_the_ops_on_first_use():
    # Without torch loaded, `import cwarp` stays light (the console scripts' --help); the first
    # public name loads the kernels, and with them torch.ops.cwarp.*.
    code = (
        "import sys, cwarp\n"
        "assert 'torch' not in sys.modules\n"
        "warp = cwarp.local_warp\n"
        "import torch\n"
        "assert hasattr(torch.ops.cwarp, 'local_warp'), 'ops not registered'\n"
        "assert cwarp.nn.ContraWarpAugment is cwarp.ContraWarpAugment\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")
def test_import_cwarp_after_torch_registers_the_ops_at_once():
    code = "import torch, cwarp\nassert hasattr(torch.ops.cwarp, 'local_warp'), 'ops not registered'\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'cwarp' has no attribute 'warp_everything'"):
        cwarp.warp_everything  # noqa: B018
