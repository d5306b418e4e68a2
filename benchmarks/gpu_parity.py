"""The parity gate of the GPU check: every backend of every op against the
float64 reference, with tolerances that a correct float32 kernel meets and a
wrong one misses.

    python benchmarks/gpu_parity.py [--backend cpp] [--device cpu] [--seeds 12]

run as a script, sweeps the gate's local_warp cases (B=8, 3x64x64, K=4, both
kinds) over seeds and prints, per case, the former gate's error (everything
held to 1e-4 of 1 + max |expected|) beside the gate's figures and margins;
exits 1 when a case misses the gate. benchmarks/gpu_check.py runs the gate
itself (seed 0) on CUDA.

The gate:
  forward    max |out - expected| / (1 + max |expected|) <= FORWARD_TOL
  gradients  max |grad - expected| / max |expected| <= GRAD_TOL, per input,
             for an upstream gradient that is zero at the output pixels whose
             float64 sampling point lies within EDGE_PX of a pixel edge.

Why the mask: bilinear sampling's derivative with respect to the sampling
point jumps where the point crosses a pixel edge (the border clamp
included), and a float32 kernel's point is off the float64 one by about
1e-5 pixel. Now and then that puts it on the other side of an edge, and the
one sample's jump moves a parameter gradient, a sum of signed terms over
the image, by a few hundredths of its size. With those samples out of the
upstream gradient, what is left is rounding, and the gradients can be held
to GRAD_TOL of their size. A wrong kernel errs at every sample.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cwarp  # noqa: E402
from cwarp import reference  # noqa: E402

FORWARD_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
GRAD_TOL = {torch.float32: 1e-3, torch.bfloat16: 3e-2}
EDGE_PX = 1e-3
# The former gate: forward and gradients alike, of 1 + max |expected|.
FORMER_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
GRAD_NAMES = ("image", "params", "theta")


def forward_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to 1 + max |expected|."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float((a - e).abs().max() / (1.0 + e.abs().max()))


def grad_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to max |expected| (absolute when expected is all zero)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    scale = float(e.abs().max())
    return float((a - e).abs().max()) / (scale if scale > 0 else 1.0)


def near_pixel_edge(params: torch.Tensor, theta: Optional[torch.Tensor], in_size: Sequence[int],
                    out_size: Sequence[int], kind: str, align_corners: bool = False,
                    px: float = EDGE_PX) -> torch.Tensor:
    """(B, Ho, Wo) True where the float64 sampling point of local_warp lies
    within px pixels of a pixel edge (an integer pixel coordinate, where
    bilinear sampling and the border clamp change their derivative)."""
    grid = reference.local_warp_grid(params.double(), out_size, None if theta is None else theta.double(),
                                     kind=kind, align_corners=align_corners)
    near = torch.zeros(grid.shape[:3], dtype=torch.bool, device=grid.device)
    for axis, size in ((0, in_size[1]), (1, in_size[0])):
        s = grid[..., axis]
        x = (s + 1) / 2 * (size - 1) if align_corners else ((s + 1) * size - 1) / 2
        near |= (x - x.round()).abs() < px
    return near


class WarpCase(NamedTuple):
    """One local_warp case of the gate: B images 3 x size x size, K warps, theta = 0.9 I."""
    dtype: torch.dtype
    kind: str
    K: int = 4
    out_size: Optional[Tuple[int, int]] = None
    deterministic: bool = False  # run twice under use_deterministic_algorithms: must repeat bit for bit
    B: int = 8
    size: int = 64

    @property
    def name(self) -> str:
        out = f" -> {self.out_size[0]}x{self.out_size[1]}" if self.out_size else ""
        return (f"{str(self.dtype)[6:]} {self.kind} B={self.B} {self.size}x{self.size}{out} K={self.K}"
                + (" deterministic" if self.deterministic else ""))


def warp_cases(dry_run: bool = False):
    """The gate's local_warp cases: both dtypes and kinds; an output of another
    size, not a multiple of any block (the backward's tails); twice the warps
    in deterministic mode (the backward's block reduction flushes more than once)."""
    small = dict(B=2, size=16) if dry_run else {}
    return [WarpCase(dtype, kind, **small) for dtype in (torch.float32, torch.bfloat16)
            for kind in ("translate", "gaussian")] + [
        WarpCase(torch.float32, "translate", out_size=(12, 14) if dry_run else (60, 70), **small),
        WarpCase(torch.float32, "translate", K=8, deterministic=True, **small)]


def warp_inputs(case: WarpCase, seed: int, device) -> dict:
    """The case's float64 inputs (values exact in case.dtype), the oracle's
    output and gradients, and the edge-masked upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(case.B, 3, case.size, case.size, generator=g, dtype=torch.float64)
    params = cwarp.sample_local_warps(case.B, case.K, generator=g).double()
    theta = torch.eye(2, 3, dtype=torch.float64).repeat(case.B, 1, 1) * 0.9
    image, params, theta = (t.to(case.dtype).double().to(device) for t in (image, params, theta))
    out_size = case.out_size or (case.size, case.size)
    leaves = [t.clone().requires_grad_() for t in (image, params, theta)]
    expected = reference.local_warp(*leaves, out_size=out_size, kind=case.kind)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64).to(device)
    raw_grads = torch.autograd.grad(expected, leaves, grad_out, retain_graph=True)
    edge = near_pixel_edge(params, theta, (case.size, case.size), out_size, case.kind)
    masked = grad_out.masked_fill(edge[:, None], 0.0).to(case.dtype).double()
    grads = torch.autograd.grad(expected, leaves, masked)
    return dict(image=image, params=params, theta=theta, out_size=out_size, expected=expected.detach(),
                grad_out=grad_out, raw_grads=raw_grads, masked_grad_out=masked, grads=grads,
                masked_fraction=float(edge.double().mean()))


def run_warp(fn: Callable, case: WarpCase, inputs: dict, grad_out: torch.Tensor):
    """fn(image, params, theta, out_size=, kind=) on case.dtype leaves: (output, grads)."""
    leaves = [inputs[n].to(case.dtype).requires_grad_() for n in GRAD_NAMES]
    out = fn(*leaves, out_size=inputs["out_size"], kind=case.kind)
    grads = torch.autograd.grad(out, leaves, grad_out.to(case.dtype))
    return out, grads


def check_warp(fn: Callable, case: WarpCase, inputs: dict) -> Dict[str, float]:
    """The gate's figures for fn: {"forward": err, "grad image": err, ...}
    (and "repeats bitwise": 1 or 0 for a deterministic case)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(case.deterministic)
    try:
        out, grads = run_warp(fn, case, inputs, inputs["masked_grad_out"])
        again = run_warp(fn, case, inputs, inputs["masked_grad_out"]) if case.deterministic else None
    finally:
        torch.use_deterministic_algorithms(before)
    figures = {"forward": forward_err(out, inputs["expected"])}
    for name, a, e in zip(GRAD_NAMES, grads, inputs["grads"]):
        figures[f"grad {name}"] = grad_err(a, e)
    if again is not None:
        figures["repeats bitwise"] = float(all(torch.equal(a, b) for a, b in zip((out, *grads), (again[0], *again[1]))))
    return figures


def former_gate_err(fn: Callable, case: WarpCase, inputs: dict) -> float:
    """The former gate's figure: forward and unmasked gradients, all relative to 1 + max |expected|."""
    out, grads = run_warp(fn, case, inputs, inputs["grad_out"])
    return max(forward_err(out, inputs["expected"]), *(forward_err(a, e) for a, e in zip(grads, inputs["raw_grads"])))


def loss_inputs(in_batch: bool, seed: int, device, dry_run: bool = False) -> dict:
    """contrastive_loss inputs (float32 values, in float64), the oracle's loss and gradients."""
    g = torch.Generator().manual_seed(seed)
    B, D, N = (8, 32, 3) if dry_run else (64, 256, 8)
    leaves = [torch.randn(shape, generator=g, dtype=torch.float64).float().double().to(device).requires_grad_()
              for shape in ((B, D), (B, D), (B, N, D))]
    expected = reference.contrastive_loss(*leaves, in_batch=in_batch)
    return dict(inputs=[t.detach() for t in leaves], in_batch=in_batch, expected=expected.detach(),
                grads=torch.autograd.grad(expected, leaves))


def check_loss(fn: Callable, inputs: dict) -> Dict[str, float]:
    """The gate's figures for fn(p, z, negatives, in_batch=) in float32."""
    leaves = [t.float().requires_grad_() for t in inputs["inputs"]]
    loss = fn(*leaves, in_batch=inputs["in_batch"])
    grads = torch.autograd.grad(loss, leaves)
    figures = {"forward": forward_err(loss, inputs["expected"])}
    for name, a, e in zip(("p", "z", "negatives"), grads, inputs["grads"]):
        figures[f"grad {name}"] = grad_err(a, e)
    return figures


def view_inputs(seed: int, dry_run: bool = False):
    """A uint8 batch and the arguments of augment_views for V=3 views of it:
    mild affines, two warps per view, a colour jitter."""
    from cwarp._constants import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(seed)
    B, V, K, size = (2 if dry_run else 16), 3, 2, 32
    src = torch.randint(0, 256, (B, 3, 48, 48), generator=g, dtype=torch.uint8)
    theta = (torch.eye(2, 3).repeat(B, V, 1, 1) * 0.9 + 0.05 * torch.randn(B, V, 2, 3, generator=g))
    warps = torch.cat([torch.rand(B, V, K, 2, generator=g) - 0.5, torch.full((B, V, K, 1), 0.4),
                       0.1 * torch.randn(B, V, K, 2, generator=g)], dim=-1)
    color = torch.stack([1 + 0.2 * torch.randn(B, V, generator=g), 1 + 0.2 * torch.randn(B, V, generator=g),
                         1 + 0.2 * torch.randn(B, V, generator=g), 0.05 * torch.randn(B, V, generator=g),
                         (torch.rand(B, V, generator=g) < 0.2).float()], dim=-1)
    return src, (theta, warps, color, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD), size)


def check_views(backend: str, device, seed: int = 0, dry_run: bool = False) -> Dict[str, float]:
    """The gate's figure for augment_views (uint8 -> float32, forward only) on backend."""
    from cwarp.ops import augment_views

    src, args = view_inputs(seed, dry_run)
    expected = reference.augment_views(src, *args)
    out = augment_views(src.to(device), *(a.to(device) if torch.is_tensor(a) else a for a in args),
                        backend=backend)
    return {"forward": forward_err(out, expected)}


def tolerance(figure: str, dtype: torch.dtype) -> float:
    return FORWARD_TOL[dtype] if figure == "forward" else GRAD_TOL[dtype]


def backend_fn(backend: str) -> Callable:
    return lambda *args, **kw: cwarp.local_warp(*args, backend=backend, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="cpp", choices=["cpp", "triton"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seeds", type=int, default=12, help="seeds 0 .. N-1 (12)")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.backend == "triton" and args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    fn = backend_fn(args.backend)
    print(f"local_warp {args.backend} on {args.device}, float32, B=8 3x64x64 K=4 theta=0.9 I; "
          f"gate: forward <= {FORWARD_TOL[torch.float32]:g}, gradients <= {GRAD_TOL[torch.float32]:g} of their "
          f"size (upstream gradient zero within {EDGE_PX:g} px of a pixel edge); former gate: all <= "
          f"{FORMER_TOL[torch.float32]:g} of 1 + size")
    head = ["seed", "kind", "former err", "former", "masked %", "forward", "grad image", "grad params", "grad theta",
            "margin", "gate"]
    rows, misses, former_misses = [], 0, 0
    for seed in range(args.seeds):
        for kind in ("translate", "gaussian"):
            case = WarpCase(torch.float32, kind)
            inputs = warp_inputs(case, seed, args.device)
            former = former_gate_err(fn, case, inputs)
            figs = check_warp(fn, case, inputs)
            margin = min(tolerance(k, case.dtype) / max(v, 1e-30) for k, v in figs.items())
            ok = margin >= 1.0
            misses += not ok
            former_misses += former > FORMER_TOL[case.dtype]
            rows.append([seed, kind, f"{former:.2e}", "PASS" if former <= FORMER_TOL[case.dtype] else "FAIL",
                         f"{100 * inputs['masked_fraction']:.2f}"] + [f"{figs[k]:.2e}" for k in head[5:9]]
                        + [f"{margin:.0f}x", "PASS" if ok else "FAIL"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\nformer gate: {former_misses} of {len(rows)} cases missed; gate: {misses} of {len(rows)} missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
