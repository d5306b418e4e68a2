"""Plain-PyTorch oracle of warp_points: the point solver, and its derivative.

``solve`` mirrors csrc/ops/warp_points/point_solver.h step for step (same
candidates, same constants, same order), vectorized over the points, in
float64. ``warp_points`` returns its result with the derivative of implicit
differentiation attached: at a pre-image p of q (p - D(p) = q),
dp = J^-1 (dD/dparams dparams + dq) with J = I - dD/dp. ``implicit_correction``
builds that derivative as a tensor whose value is 0; the compiled op's
autograd (register.py) differentiates the same function.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from cwarp._constants import WARP_POINTS_MAX_WARPS

__all__ = ["warp_points", "sampling_map", "invert_affine", "solve", "implicit_correction", "warp_displacement",
           "MAX_WARPS", "SCAN_STEPS", "SCAN_SAMPLES", "BISECT_STEPS", "GRID_SIDE", "GRID_STARTS", "NEWTON_STEPS", "BACKTRACK_STEPS", "RESIDUAL_TOL"]

# The constants of point_solver.h (kPoint*), by the same names.
MAX_WARPS = WARP_POINTS_MAX_WARPS
SCAN_STEPS = 32
SCAN_SAMPLES = 256
BISECT_STEPS = 24
GRID_SIDE = 17
GRID_STARTS = 8
NEWTON_STEPS = 30
BACKTRACK_STEPS = 12
RESIDUAL_TOL = 1e-13


def _weight_slope(kind: str, rho2: torch.Tensor, r2: torch.Tensor, m2: torch.Tensor):
    """warp_weight_slope of warp_math.h: the weight and d w / d rho2."""
    if kind == "translate":
        u = r2 - rho2
        inside = ~(u <= 0)   # outside_disc: a NaN u is not outside
        v = torch.where(inside, u + m2, 1.0)
        t = torch.where(inside, u / v, 0.0)
        return t * t, torch.where(inside, -2 * t * m2 / (v * v), 0.0)
    r2s = torch.where(r2 == 0, 1.0, r2)      # nonzero_r2: radius 0 weighs 0
    w = torch.where(r2 == 0, 0.0, torch.exp(-rho2 / (2 * r2s)))
    return w, -w / (2 * r2s)


def warp_displacement(p: torch.Tensor, params: torch.Tensor, kind: str,
                      jacobian: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """D(p) = sum_k w_k(p) d_k (B, ..., 2) and its Jacobian dD/dp (B, ..., 2, 2)
    (None unless ``jacobian``) for positions p (B, ..., 2) and params (B, K, 5)."""
    extra = p.dim() - 2
    prm = params.reshape(params.shape[0], *([1] * extra), params.shape[1], 5)     # (B, 1.., K, 5)
    e = p.unsqueeze(-2) - prm[..., 0:2]                                           # (B, .., K, 2)
    d = prm[..., 3:5]
    w, slope = _weight_slope(kind, (e * e).sum(-1), prm[..., 2] ** 2, (d * d).sum(-1))
    disp = (w.unsqueeze(-1) * d).sum(-2)
    if not jacobian:
        return disp, None
    grad_w = 2 * slope.unsqueeze(-1) * e                                          # (B, .., K, 2)
    jac = (d.unsqueeze(-1) * grad_w.unsqueeze(-2)).sum(-3)                        # (B, .., 2, 2)
    return disp, jac


def _residual(p, q, params, kind):
    disp, jac = warp_displacement(p, params, kind)
    f = p - disp - q
    return f, (f * f).sum(-1), jac


def _newton(p: torch.Tensor, q: torch.Tensor, params: torch.Tensor, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """newton_preimage of point_solver.h for every point at once: (p, converged)."""
    tol2 = RESIDUAL_TOL * RESIDUAL_TOL
    f, res2, jac = _residual(p, q, params, kind)
    running = ~(res2 <= tol2)
    failed = torch.zeros_like(running)
    for _ in range(NEWTON_STEPS):
        if not bool(running.any()):
            break
        a, b = 1 - jac[..., 0, 0], -jac[..., 0, 1]
        c, d = -jac[..., 1, 0], 1 - jac[..., 1, 1]
        det = a * d - b * c
        step = torch.stack([(d * f[..., 0] - b * f[..., 1]) / det, (a * f[..., 1] - c * f[..., 0]) / det], -1)
        bad = running & ~torch.isfinite(step).all(-1)
        failed |= bad
        running &= ~bad
        moved = torch.zeros_like(running)
        scale = 1.0
        for _ in range(BACKTRACK_STEPS):
            trying = running & ~moved
            if not bool(trying.any()):
                break
            np_ = p - scale * step
            nf, nres2, njac = _residual(np_, q, params, kind)
            take = trying & (nres2 < res2)
            p = torch.where(take[..., None], np_, p)
            f = torch.where(take[..., None], nf, f)
            jac = torch.where(take[..., None, None], njac, jac)
            res2 = torch.where(take, nres2, res2)
            moved |= take
            scale *= 0.5
        running &= moved & ~(res2 <= tol2)
    return p, (res2 <= tol2) & ~failed


def _scan_lengths(kind: str, q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """warp_scan_length of point_solver.h for every point and warp: (B, N, K), 0 where warp k cannot move q."""
    prm = params[:, None]                                                        # (B, 1, K, 5)
    c, r, d = prm[..., 0:2], prm[..., 2], prm[..., 3:5]
    m2 = (d * d).sum(-1)
    moves = m2 > 0
    reach = d.norm(dim=-1).sum(-1, keepdim=True)
    length = torch.where(moves, reach / torch.where(moves, m2, 1.0).sqrt(), 0.0).expand(q.shape[0], q.shape[1], -1)
    if kind != "translate":
        return length
    qk = q.unsqueeze(-2)                                                         # (B, N, 1, 2)
    t = torch.minimum((((c - qk) * d).sum(-1) / torch.where(moves, m2, 1.0)).clamp_min(0.0), length)
    e = qk + t.unsqueeze(-1) * d - c
    return torch.where((e * e).sum(-1) < r * r, length, 0.0)


# The most (candidate, sample, warp) triples one step of the reference holds
# at once: the scans and the fallback grid run in chunks of candidates that
# fit, so its memory stays bounded (about 1 GB) whatever B, P and K are.
CHUNK_ELEMENTS = 1 << 21


def _chunks(m: int, per_item: int):
    """Slices of range(m) whose items times per_item stay within CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    return [slice(s, min(m, s + step)) for s in range(0, m, step)]


def _first_roots(q: torch.Tensor, params: torch.Tensor, kind: str, length: torch.Tensor):
    """first_root_along_warp of point_solver.h for every warp that can move its
    point (length > 0): positions (B, N, K, 2) and found (B, N, K)."""
    batch, n, k = length.shape
    starts = q.unsqueeze(-2).expand(batch, n, k, 2).clone()
    found = torch.zeros(batch, n, k, dtype=torch.bool, device=q.device)
    b, i, j = (length > 0).nonzero(as_tuple=True)
    for part in _chunks(len(b), (SCAN_SAMPLES + 1) * k):
        bp, ip, jp = b[part], i[part], j[part]
        starts[bp, ip, jp], found[bp, ip, jp] = _first_roots_of(q[bp, ip], params[bp], params[bp, jp, 3:5],
                                                                length[bp, ip, jp], kind)
    return starts, found


def _first_roots_of(qm: torch.Tensor, prm: torch.Tensor, d: torch.Tensor, lm: torch.Tensor, kind: str):
    """The first root along d (M, 2) from qm (M, 2) within lm (M,), for params prm (M, K, 5): (positions, found)."""

    def g(t):                                                                    # t (M, S) -> (M, S)
        x = qm[:, None] + t.unsqueeze(-1) * d[:, None]
        disp, _ = warp_displacement(x, prm, kind, jacobian=False)
        return ((x - disp - qm[:, None]) * d[:, None]).sum(-1)

    samples = (lm * SCAN_STEPS).ceil().clamp(1, SCAN_SAMPLES)                   # (M,)
    steps = torch.arange(SCAN_SAMPLES + 1, dtype=qm.dtype, device=qm.device)
    ts = lm[:, None] * steps / samples[:, None]                                  # (M, S + 1)
    neg = g(ts) < 0
    change = (neg[:, 1:] != neg[:, :1]) & (steps[1:] <= samples[:, None])
    hit = change.any(-1)
    first = change.to(torch.int8).argmax(-1, keepdim=True)                       # the bracket [t_first, t_first+1]
    t0, t1 = ts.gather(-1, first).squeeze(-1), ts.gather(-1, first + 1).squeeze(-1)
    neg0 = neg[:, 0]
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (t0 + t1)
        left = (g(mid[:, None])[:, 0] < 0) == neg0
        t0, t1 = torch.where(left, mid, t0), torch.where(left, t1, mid)
    t = 0.5 * (t0 + t1)
    return qm + t[:, None] * d, hit


def _grid_preimage(q: torch.Tensor, params: torch.Tensor, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """grid_preimage of point_solver.h: (p, found) for q (M, 1, 2) and params (M, K, 5)."""
    reach = params[..., 3:5].norm(dim=-1).sum(-1)[:, None, None]                 # (M, 1, 1)
    i = torch.arange(GRID_SIDE * GRID_SIDE, device=q.device)
    unit = torch.stack([2 * (i % GRID_SIDE).to(q.dtype) / (GRID_SIDE - 1) - 1,
                        2 * torch.div(i, GRID_SIDE, rounding_mode="floor").to(q.dtype) / (GRID_SIDE - 1) - 1], -1)
    starts = q + reach * unit                                                    # (M, G, 2)
    _, res2, _ = _residual(starts, q, params, kind)
    finite = ~torch.isnan(res2)
    order = torch.sort(torch.where(finite, res2, torch.inf), dim=-1, stable=True).indices[:, :GRID_STARTS]
    kept = torch.gather(finite, 1, order)
    best = torch.gather(starts, 1, order[..., None].expand(-1, -1, 2))           # (M, S, 2)
    p, ok = _newton(best, q.expand_as(best), params, kind)
    ok &= kept
    d2 = torch.where(ok, ((p - q) ** 2).sum(-1), torch.inf)
    pick = d2.argmin(-1, keepdim=True)
    return torch.gather(p, 1, pick[..., None].expand(-1, -1, 2)), ok.any(-1, keepdim=True)


@torch.no_grad()
def solve(q: torch.Tensor, params: torch.Tensor, kind: str) -> torch.Tensor:
    """solve_preimage of point_solver.h: the pre-image nearest q (B, N, 2) of
    p - D(p) = q, NaN where no candidate converges. float64 in, float64 out."""
    batch, n, k = q.shape[0], q.shape[1], params.shape[1]
    p0, ok0 = _newton(q, q, params, kind)
    candidates, valid = [p0.unsqueeze(-2)], [ok0.unsqueeze(-1)]
    if k > 0 and n > 0 and batch > 0:
        pk, found = _first_roots(q, params, kind, _scan_lengths(kind, q, params))  # (B, N, K, 2)
        b, i, j = found.nonzero(as_tuple=True)
        if len(b):
            polished, converged = _newton(pk[b, i, j][:, None], q[b, i][:, None], params[b], kind)
            pk[b, i, j] = polished[:, 0]
            found[b, i, j] = converged[:, 0]
        candidates.append(pk)
        valid.append(found)
    cand = torch.cat(candidates, -2)                                             # (B, N, 1 + K, 2)
    ok = torch.cat(valid, -1)
    d2 = torch.where(ok, ((cand - q.unsqueeze(-2)) ** 2).sum(-1), torch.inf)
    best = d2.argmin(-1)                                                         # first of the nearest
    p = torch.gather(cand, -2, best[..., None, None].expand(-1, -1, 1, 2)).squeeze(-2)
    p = torch.where(ok.any(-1, keepdim=True), p, torch.nan)
    stuck = (~ok.any(-1) & torch.isfinite(q).all(-1)).nonzero()
    for part in _chunks(len(stuck), GRID_SIDE * GRID_SIDE * k):
        b, i = stuck[part, 0], stuck[part, 1]
        fallback, found = _grid_preimage(q[b, i][:, None], params[b], kind)
        p[b, i] = torch.where(found, fallback, torch.nan)[:, 0]
    return p


def _affine_parts(theta: Optional[torch.Tensor], like: torch.Tensor):
    if theta is None:
        return None, None
    th = theta.to(like.dtype)
    return th[:, None, :, :2], th[:, None, :, 2]                                 # (B, 1, 2, 2), (B, 1, 2)


def invert_affine(points: torch.Tensor, theta: Optional[torch.Tensor]) -> torch.Tensor:
    """q = theta^-1 s, as invert_affine of warp_math.h (non-finite for a singular theta)."""
    if theta is None:
        return points
    a, t = _affine_parts(theta, points)
    x, y = points[..., 0] - t[..., 0], points[..., 1] - t[..., 1]
    a11, a12, a21, a22 = a[..., 0, 0], a[..., 0, 1], a[..., 1, 0], a[..., 1, 1]
    det = a11 * a22 - a12 * a21
    return torch.stack([(a22 * x - a12 * y) / det, (a11 * y - a21 * x) / det], -1)


def sampling_map(points: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor] = None, *,
                 kind: str = "translate") -> torch.Tensor:
    """Where local_warp's output position p (B, P, 2) samples the source:
    s = theta (p - D(p)), computed in float64 and returned in float64. The
    map warp_points inverts."""
    p = points.to(torch.float64)
    prm = params.to(torch.float64)
    disp, _ = warp_displacement(p, prm, kind)
    q = p - disp
    if theta is None:
        return q
    a, t = _affine_parts(theta, q)
    return (a @ q.unsqueeze(-1)).squeeze(-1) + t


def implicit_correction(solution: torch.Tensor, points: torch.Tensor, params: torch.Tensor,
                        theta: Optional[torch.Tensor], kind: str) -> torch.Tensor:
    """A (B, P, 2) float64 tensor whose value is 0 and whose derivative with
    respect to points, params and theta is that of the pre-image ``solution``
    (implicit differentiation, J held constant): J^-1 (D(p; params) + q(s, theta))
    minus its own value. Points without a finite solution get 0 and no
    gradient."""
    p = solution.detach().to(torch.float64)
    finite = torch.isfinite(p).all(-1, keepdim=True)
    p = torch.where(finite, p, 0.0)
    # Masked before any arithmetic: a NaN point times a zero gradient would
    # still be NaN in params' and theta's gradients.
    s = torch.where(finite, points.to(torch.float64), 0.0)
    prm = params.to(torch.float64)
    disp, _ = warp_displacement(p, prm, kind)
    with torch.no_grad():
        _, jac = warp_displacement(p, prm.detach(), kind)
        eye = torch.eye(2, dtype=torch.float64, device=p.device)
        inv_j = torch.linalg.inv_ex(eye - jac)[0]
    v = disp + invert_affine(s, theta)
    step = (inv_j @ v.unsqueeze(-1)).squeeze(-1)
    return torch.where(finite, step - step.detach(), 0.0)


def warp_points(points: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor] = None, *,
                kind: str = "translate") -> torch.Tensor:
    """Where source points (B, P, 2) land in ``local_warp``'s output for the
    same params, theta and kind: the pre-image of the sampling map nearest
    theta^-1 s, NaN where the solver finds none. Solved in float64, returned
    in the points' dtype; differentiable (implicitly) in points, params and theta."""
    if kind not in ("translate", "gaussian"):
        raise ValueError(f"cwarp.reference.warp_points(): unknown kind {kind!r}; expected 'translate' or 'gaussian'")
    prm = params.detach().to(torch.float64)
    q = invert_affine(points.detach().to(torch.float64), None if theta is None else theta.detach())
    p = solve(q, prm, kind)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (points, params, theta)):
        p = p + implicit_correction(p, points, params, theta, kind)
    return p.to(points.dtype)
