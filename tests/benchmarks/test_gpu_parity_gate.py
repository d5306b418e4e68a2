"""The GPU check's parity gate (benchmarks/gpu_parity.py) on the CPU: the C++
kernels pass it on every seed of the gate's shapes, where the former gate
(everything at 1e-4 of 1 + max |expected|) failed one case in 24, and
deliberately wrong kernels fail it. The wrong kernels are mutated copies of
the reference's bilinear sampling, written here and nowhere else."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cwarp import reference

SEEDS = range(12)


@pytest.fixture(scope="module")
def gate(load_script):
    return load_script("benchmarks/gpu_parity.py")


@pytest.fixture(scope="module")
def gate_inputs(gate):
    """gate_inputs(kind, seed): the gate's float32 case inputs, made once per module."""
    made = {}

    def get(kind, seed):
        if (kind, seed) not in made:
            made[kind, seed] = gate.warp_inputs(gate.WarpCase(torch.float32, kind), seed, "cpu")
        return made[kind, seed]

    return get


def _verdicts(gate, case, figures):
    """{figure: True when within the gate's tolerance} (bitwise repetition: must be 1)."""
    return {k: (v == 1.0 if k == "repeats bitwise" else v <= gate.tolerance(k, case.dtype))
            for k, v in figures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
def test_the_cpp_kernels_pass_every_seed_of_the_gate_shapes(gate, gate_inputs, kind):
    case = gate.WarpCase(torch.float32, kind)
    fn = gate.backend_fn("cpp")
    for seed in SEEDS:
        inputs = gate_inputs(kind, seed)
        figures = gate.check_warp(fn, case, inputs)
        assert all(_verdicts(gate, case, figures).values()), (seed, figures)


@pytest.mark.slow
def test_the_former_gate_failed_a_correct_kernel(gate, gate_inputs):
    """Why the gate changed: one seed's float32 sampling point crosses a pixel
    edge, and the unmasked parameter gradient moves by a few percent."""
    case = gate.WarpCase(torch.float32, "translate")
    errors = [gate.former_gate_err(gate.backend_fn("cpp"), case, gate_inputs(case.kind, seed))
              for seed in SEEDS]
    assert max(errors) > 100 * gate.FORMER_TOL[torch.float32], errors


@pytest.mark.slow
@pytest.mark.parametrize("case_index", range(6))
def test_every_gate_case_passes_on_the_cpp_kernels(gate, case_index):
    case = gate.warp_cases()[case_index]
    figures = gate.check_warp(gate.backend_fn("cpp"), case, gate.warp_inputs(case, 0, "cpu"))
    assert all(_verdicts(gate, case, figures).values()), figures
    assert ("repeats bitwise" in figures) == case.deterministic


def test_the_edge_mask_marks_points_near_integer_pixel_coordinates(gate):
    # theta = I with align_corners=False puts output pixel j at input pixel j
    # exactly; a shift of a quarter pixel puts every point off the edges.
    params = torch.zeros(1, 0, 5, dtype=torch.float64)
    eye = torch.eye(2, 3, dtype=torch.float64)[None]
    assert gate.near_pixel_edge(params, eye, (8, 10), (8, 10), "translate").all()
    shifted = eye.clone()
    shifted[0, :, 2] = 0.25 * 2 / torch.tensor([10.0, 8.0], dtype=torch.float64)
    assert not gate.near_pixel_edge(params, shifted, (8, 10), (8, 10), "translate").any()


# ---------------------------------------------------------------------------
# Wrong kernels: a copy of the reference's bilinear sampling (border padding,
# align_corners=False), mutated.
# ---------------------------------------------------------------------------


def _sample(image, grid, corner_step=1, swap_weights=False):
    """grid_sample(image, grid, bilinear, border, align_corners=False) by
    gathering the four corners; corner_step != 1 or swap_weights mutate it."""
    B, C, H, W = image.shape
    x = (((grid[..., 0] + 1) * W - 1) / 2).clamp(0, W - 1)
    y = (((grid[..., 1] + 1) * H - 1) / 2).clamp(0, H - 1)
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    if swap_weights:
        fx, fy = 1 - fx, 1 - fy
    flat = image.flatten(2)

    def corner(yi, xi):
        idx = (yi.long().clamp(0, H - 1) * W + xi.long().clamp(0, W - 1)).flatten(1)
        return flat.gather(2, idx[:, None].expand(B, C, -1)).view(B, C, *grid.shape[1:3])

    x1, y1 = x0 + corner_step, y0 + corner_step
    wx, wy = fx[:, None], fy[:, None]
    return ((1 - wx) * (1 - wy) * corner(y0, x0) + wx * (1 - wy) * corner(y0, x1)
            + (1 - wx) * wy * corner(y1, x0) + wx * wy * corner(y1, x1))


def _warp(image, params, theta, *, out_size, kind, grad_scale=1.0, backward_only=False, **mutation):
    """local_warp through the copied sampler in the image's dtype. backward_only:
    the forward is the reference's, only the gradients are the mutant's.
    grad_scale scales the gradient with respect to the sampling points."""
    grid = reference.local_warp_grid(params, out_size, theta, kind=kind, compute_dtype=image.dtype)
    if grad_scale != 1.0:
        grid = grid.detach() + grad_scale * (grid - grid.detach())
    mutant = _sample(image, grid, **mutation)
    if not backward_only:
        return mutant
    correct = reference.local_warp(image, params, theta, out_size=out_size, kind=kind, compute_dtype=image.dtype)
    return correct.detach() + (mutant - mutant.detach())


def test_the_unmutated_copy_is_the_reference(gate, gate_inputs):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
    grid = torch.rand(2, 9, 11, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2
    expected = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(_sample(image, grid), expected, atol=1e-12, rtol=0)
    case = gate.WarpCase(torch.float32, "translate")
    figures = gate.check_warp(_warp, case, gate_inputs("translate", 0))
    assert all(_verdicts(gate, case, figures).values()), figures


MUTANTS = {
    "corner off by one": (dict(corner_step=2), "forward"),
    "bilinear weights swapped": (dict(swap_weights=True), "forward"),
    "backward: corner off by one": (dict(corner_step=2, backward_only=True), "grad image"),
    "backward: bilinear weights swapped": (dict(swap_weights=True, backward_only=True), "grad image"),
    "backward: sampling-point gradient 2 % too large": (dict(grad_scale=1.02, backward_only=True), "grad params"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_a_wrong_kernel_fails_the_gate(gate, gate_inputs, mutant, kind):
    mutation, caught_by = MUTANTS[mutant]
    case = gate.WarpCase(torch.float32, kind)
    inputs = gate_inputs(kind, 0)
    figures = gate.check_warp(lambda *a, **kw: _warp(*a, **kw, **mutation), case, inputs)
    verdicts = _verdicts(gate, case, figures)
    print(f"{mutant} ({kind}):", {k: f"{v:.2e}" for k, v in figures.items()})
    assert not verdicts[caught_by], figures
    # Missed by a margin, not by a hair: at least 10x the tolerance.
    assert figures[caught_by] >= 10 * gate.tolerance(caught_by, case.dtype), figures
    if mutation.get("backward_only"):
        assert verdicts["forward"], figures
