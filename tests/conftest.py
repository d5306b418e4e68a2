"""Fixtures shared by the cwarp tests (CPU; GPU tests skip one by one)."""
from __future__ import annotations

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
