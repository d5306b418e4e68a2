"""Fixtures shared by the cwarp tests (CPU; GPU tests skip one by one)."""
from __future__ import annotations

import importlib.util
import os

import torch

# Without a GPU the Triton kernels run under the interpreter, which must be
# chosen before triton is first imported anywhere in the process (triton
# fixes its own @jit helpers at import). Set it before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def load_script():
    """load_script("benchmarks/x.py"): a repository script imported as a module (scripts are not a package)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load(relpath: str):
        name = os.path.splitext(os.path.basename(relpath))[0]
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, relpath))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
