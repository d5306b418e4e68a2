"""cwarp::contrastive_loss in Triton: forward and backward kernels (docs/api.md §3).

Mirrors csrc/ops/contrastive_loss/contrastive_math.h function by function (_inv_norm, _norm_mask,
_logit_grad, _positive_grad, _sim_grad_self) and the C++ kernels' plan: one
program per row reads p_i, zpos_i and its N negatives once; in-batch mode
sweeps z_pos in tiles of BLOCK_K rows with an online logsumexp, so no (B, B)
matrix exists. The backward recomputes each logit's gradient from the saved
logsumexp. One kernel serves both sides of the in-batch terms, as the CPU's
grad_tile does: the row pass (BY_ROW) gives each row of p a program that
sweeps z_pos; in-batch mode launches it again with the roles swapped, one
program per row of z_pos sweeping p (z_pos's gradient). Every program owns
the rows it writes: no atomics.

Registered with torch.library.triton_op (torch.ops.cwarp.contrastive_loss_triton_*),
so torch.compile sees the kernels; autograd comes from cwarp/ops/contrastive_loss/register.py.
On CPU tensors the kernels run under TRITON_INTERPRET=1 (set it before
importing triton), which is how CI tests them.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from cwarp.ops import _autocast, _checks, _triton_runtime
from cwarp.ops._checks import opmath
from cwarp.ops.contrastive_loss import register

__all__ = ["contrastive_loss_forward", "contrastive_loss_backward"]

_EPS = tl.constexpr(1e-12)  # F.normalize's eps


@triton.jit
def _inv_norm(sumsq):
    # 1 / max(|x|, eps), as F.normalize divides; NaN stays NaN (n < eps is false).
    n = tl.sqrt(sumsq)
    return 1.0 / tl.where(n < _EPS, _EPS, n)


@triton.jit
def _norm_mask(inv):
    # 0 where the norm was clamped to eps (then inv is exactly inv_norm(0)).
    return tl.where(inv >= _inv_norm(inv * 0.0), 0.0, 1.0)


@triton.jit
def _logit_grad(s, lse, inv_tau, g_nce):
    return g_nce * tl.exp(s * inv_tau - lse) * inv_tau


@triton.jit
def _positive_grad(s, lse, inv_tau, g_nce, g_s):
    return g_nce * (tl.exp(s * inv_tau - lse) - 1.0) * inv_tau + g_s


@triton.jit
def _sim_grad_self(a, t):
    return -a * a * _norm_mask(a) * t


@triton.jit
def _load_row(ptr, offs, dmask, COMPUTE: tl.constexpr):
    """One D-vector (the row at ptr), in the compute type."""
    return tl.load(ptr + offs, mask=dmask, other=0.0).to(COMPUTE)


@triton.jit
def _load_tile(ptr, k0, B, stride, offs, dmask, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows k0 .. k0 + BLOCK_K of a (B, D) matrix: (row indices, their mask, the tile)."""
    ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
    kmask = ks < B
    tile = tl.load(ptr + ks[:, None] * stride + offs[None, :], mask=kmask[:, None] & dmask[None, :],
                   other=0.0).to(COMPUTE)
    return ks, kmask, tile


@triton.jit
def _inverse_temperature(inv_tau_arg, inv_tau_ptr, COMPUTE: tl.constexpr):
    """1 / tau in the compute type. A Python float reaches a kernel as fp32:
    the float64 kernels read it from a one-element float64 tensor instead."""
    inv_tau = inv_tau_arg
    if COMPUTE == tl.float64:
        inv_tau = tl.load(inv_tau_ptr)
    return inv_tau


@triton.jit
def _contrastive_loss_fwd_kernel(p_ptr, z_ptr, zn_ptr, nce_ptr, s_pos_ptr, inv_p_ptr, inv_z_ptr, inv_n_ptr, lse_ptr,
                                 B, N, D, stride_p, stride_z, stride_nb, stride_nn, inv_tau_arg, inv_tau_ptr,
                                 COMPUTE: tl.constexpr, HAS_NEG: tl.constexpr, IN_BATCH: tl.constexpr,
                                 BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    dmask = offs < D
    x = _load_row(p_ptr + i * stride_p, offs, dmask, COMPUTE)
    y = _load_row(z_ptr + i * stride_z, offs, dmask, COMPUTE)
    a = _inv_norm(tl.sum(x * x, axis=0))
    b = _inv_norm(tl.sum(y * y, axis=0))
    s = a * b * tl.sum(x * y, axis=0)
    inv_tau = _inverse_temperature(inv_tau_arg, inv_tau_ptr, COMPUTE)
    m = s * inv_tau
    l = tl.exp(m - m)  # 1, or NaN for a NaN logit
    if HAS_NEG:
        for j in range(N):
            w = _load_row(zn_ptr + i * stride_nb + j * stride_nn, offs, dmask, COMPUTE)
            c = _inv_norm(tl.sum(w * w, axis=0))
            tl.store(inv_n_ptr + i * N + j, c)
            xj = a * c * tl.sum(x * w, axis=0) * inv_tau
            m_new = tl.maximum(m, xj)
            l = l * tl.exp(m - m_new) + tl.exp(xj - m_new)
            m = m_new
    if IN_BATCH:
        for k0 in range(0, B, BLOCK_K):
            ks, kmask, zt = _load_tile(z_ptr, k0, B, stride_z, offs, dmask, COMPUTE, BLOCK_K)
            bk = _inv_norm(tl.sum(zt * zt, axis=1))
            xk = a * bk * tl.sum(zt * x[None, :], axis=1) * inv_tau
            xk = tl.where(kmask & (ks != i), xk, float("-inf"))
            m_new = tl.maximum(m, tl.max(xk, axis=0))
            l = l * tl.exp(m - m_new) + tl.sum(tl.exp(xk - m_new), axis=0)
            m = m_new
    lse = m + tl.log(l)
    tl.store(nce_ptr + i, lse - s * inv_tau)
    tl.store(s_pos_ptr + i, s)
    tl.store(inv_p_ptr + i, a)
    tl.store(inv_z_ptr + i, b)
    tl.store(lse_ptr + i, lse)


@triton.jit
def _contrastive_loss_bwd_kernel(x_ptr, y_ptr, zn_ptr, g_nce_ptr, g_s_ptr, inv_x_ptr, inv_y_ptr, inv_n_ptr, lse_ptr,
                                 gx_ptr, gy_ptr, gzn_ptr,
                                 B, N, D, stride_x, stride_y, stride_nb, stride_nn, inv_tau_arg, inv_tau_ptr,
                                 COMPUTE: tl.constexpr, BY_ROW: tl.constexpr, HAS_NEG: tl.constexpr,
                                 IN_BATCH: tl.constexpr, NEED_X: tl.constexpr, NEED_Y: tl.constexpr,
                                 NEED_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    # Program i owns row i of x, whose partners are the rows of y. BY_ROW (the
    # row pass): x = p, y = z_pos; row i writes p_i's gradient, its negatives'
    # and, unless in-batch, z_pos_i's. Otherwise (the column pass, in-batch
    # only): x = z_pos, y = p; row i writes z_pos_i's gradient. lse and g_nce
    # belong to p's rows: row i's own in the row pass, each partner's in the
    # column pass.
    tl.static_assert(BY_ROW or (IN_BATCH and not HAS_NEG and not NEED_Y and not NEED_N))
    i = tl.program_id(0).to(tl.int64)
    inv_tau = _inverse_temperature(inv_tau_arg, inv_tau_ptr, COMPUTE)
    offs = tl.arange(0, BLOCK_D)
    dmask = offs < D
    x = _load_row(x_ptr + i * stride_x, offs, dmask, COMPUTE)
    y = _load_row(y_ptr + i * stride_y, offs, dmask, COMPUTE)
    a = tl.load(inv_x_ptr + i).to(COMPUTE)
    b = tl.load(inv_y_ptr + i).to(COMPUTE)
    lse = tl.load(lse_ptr + i).to(COMPUTE)
    gn = tl.load(g_nce_ptr + i).to(COMPUTE)
    gs = tl.load(g_s_ptr + i).to(COMPUTE)
    s = a * b * tl.sum(x * y, axis=0)
    g0 = _positive_grad(s, lse, inv_tau, gn, gs)
    acc = g0 * b * y
    t = g0 * s
    if HAS_NEG:
        for j in range(N):
            w = _load_row(zn_ptr + i * stride_nb + j * stride_nn, offs, dmask, COMPUTE)
            c = tl.load(inv_n_ptr + i * N + j).to(COMPUTE)
            sj = a * c * tl.sum(x * w, axis=0)
            gj = _logit_grad(sj, lse, inv_tau, gn)
            t += gj * sj
            acc += gj * c * w
            if NEED_N:
                gw = c * gj * a * x + _sim_grad_self(c, gj * sj) * w
                tl.store(gzn_ptr + (i * N + j) * D + offs, gw.to(gzn_ptr.dtype.element_ty), mask=dmask)
    if NEED_X:
        if IN_BATCH:
            for k0 in range(0, B, BLOCK_K):
                ks, kmask, yt = _load_tile(y_ptr, k0, B, stride_y, offs, dmask, COMPUTE, BLOCK_K)
                bk = tl.load(inv_y_ptr + ks, mask=kmask, other=0.0).to(COMPUTE)
                if BY_ROW:
                    lk, gnk = lse, gn
                else:
                    lk = tl.load(lse_ptr + ks, mask=kmask, other=0.0).to(COMPUTE)
                    gnk = tl.load(g_nce_ptr + ks, mask=kmask, other=0.0).to(COMPUTE)
                sk = a * bk * tl.sum(yt * x[None, :], axis=1)
                gk = tl.where(kmask & (ks != i), _logit_grad(sk, lk, inv_tau, gnk), 0.0)
                t += tl.sum(gk * sk, axis=0)
                acc += tl.sum((gk * bk)[:, None] * yt, axis=0)
        gx = a * acc + _sim_grad_self(a, t) * x
        tl.store(gx_ptr + i * D + offs, gx.to(gx_ptr.dtype.element_ty), mask=dmask)
    if NEED_Y:
        if not IN_BATCH:
            gy = b * g0 * a * x + _sim_grad_self(b, g0 * s) * y
            tl.store(gy_ptr + i * D + offs, gy.to(gy_ptr.dtype.element_ty), mask=dmask)


def _compute(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(d: int, dtype: torch.dtype) -> Tuple[int, int, int]:
    """(BLOCK_D, BLOCK_K, num_warps). A (BLOCK_K, BLOCK_D) tile of 2,048 values
    (512 in float64) is 16 (4) per thread at 4 warps: the kernels then stay in
    registers at every D (scripts/check_triton_kernels.py checks the cubins:
    tiles of 4,096 spilled at D = 128, the default projection size)."""
    block_d = max(16, triton.next_power_of_2(max(d, 1)))
    budget = 512 if dtype == torch.float64 else 2048
    block_k = max(1, min(128, budget // block_d))
    return block_d, block_k, 4 if block_d <= 512 else 8


def _inv_tau(tau: float, like: torch.Tensor) -> Tuple[float, torch.Tensor]:
    """The kernels' (inv_tau_arg, inv_tau_ptr): 1 / tau as a Python float (it
    reaches a kernel as fp32), and for float64 input as a one-element float64
    tensor, which keeps it exact (`like` stands in for the pointer otherwise)."""
    if like.dtype != torch.float64:
        return 1.0 / tau, like
    return 1.0 / tau, torch.full((1,), 1.0 / tau, dtype=torch.float64, device=like.device)


def _launch_inputs(op: str, p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor]):
    """What both launches take: dense rows, z_neg or a stand-in, N, z_neg's strides, has_neg."""
    _triton_runtime.require_runnable(op, p.device)
    p, z_pos = p.contiguous(), z_pos.contiguous()
    if z_neg is None:
        return p, z_pos, p, 0, (0, 0), False
    zn = z_neg.contiguous()
    return p, z_pos, zn, zn.shape[1], (zn.stride(0), zn.stride(1)), zn.shape[1] > 0


@triton_op("cwarp::contrastive_loss_triton_forward", mutates_args=())
def contrastive_loss_forward(p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor], tau: float,
                             in_batch: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                      torch.Tensor, torch.Tensor]:
    _checks.check_contrastive_inputs("cwarp::contrastive_loss_triton_forward", p, z_pos, z_neg, tau)
    B, D = p.shape
    N = z_neg.shape[1] if z_neg is not None else 0
    dt = opmath(p.dtype)
    nce, s_pos, inv_p, inv_z, lse = (p.new_empty((B,), dtype=dt) for _ in range(5))
    inv_n = p.new_empty((B, N), dtype=dt)
    if B == 0:
        return nce, s_pos, inv_p, inv_z, inv_n, lse
    p, z_pos, zn, N, zn_strides, has_neg = _launch_inputs("cwarp::contrastive_loss_triton_forward", p, z_pos, z_neg)
    block_d, block_k, warps = _blocks(D, p.dtype)
    with _triton_runtime.launch_device(p.device):
        _triton_runtime.launcher(_contrastive_loss_fwd_kernel)[(B,)](
            p, z_pos, zn, nce, s_pos, inv_p, inv_z, inv_n, lse,
            B, N, D, p.stride(0), z_pos.stride(0), *zn_strides, *_inv_tau(tau, p),
            COMPUTE=_compute(p.dtype), HAS_NEG=has_neg, IN_BATCH=bool(in_batch),
            BLOCK_D=block_d, BLOCK_K=block_k, num_warps=warps)
    return nce, s_pos, inv_p, inv_z, inv_n, lse


@triton_op("cwarp::contrastive_loss_triton_backward", mutates_args=())
def contrastive_loss_backward(grad_nce: torch.Tensor, grad_s_pos: torch.Tensor, p: torch.Tensor,
                              z_pos: torch.Tensor, z_neg: Optional[torch.Tensor], inv_p: torch.Tensor,
                              inv_z_pos: torch.Tensor, inv_z_neg: torch.Tensor, lse: torch.Tensor, tau: float,
                              in_batch: bool, output_mask: List[bool]) -> Tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
    _checks.check_contrastive_inputs("cwarp::contrastive_loss_triton_backward", p, z_pos, z_neg, tau)
    B, D = p.shape
    N = z_neg.shape[1] if z_neg is not None else 0
    need_p, need_z = bool(output_mask[0]), bool(output_mask[1])
    need_n = bool(output_mask[2]) and z_neg is not None
    gp = p.new_empty((B, D)) if need_p else p.new_empty((0,))
    gz = p.new_empty((B, D)) if need_z else p.new_empty((0,))
    gzn = p.new_empty((B, N, D)) if need_n else p.new_empty((0,))
    if B == 0 or not (need_p or need_z or need_n):
        return gp, gz, gzn
    dt = opmath(p.dtype)
    p, z_pos, zn, N, zn_strides, has_neg = _launch_inputs("cwarp::contrastive_loss_triton_backward", p, z_pos,
                                                          z_neg)
    gn, gs, ip, iz, inn, ls = (t.to(dt).contiguous() for t in (grad_nce, grad_s_pos, inv_p, inv_z_pos,
                                                                inv_z_neg, lse))
    block_d, block_k, warps = _blocks(D, p.dtype)
    common = dict(COMPUTE=_compute(p.dtype), IN_BATCH=bool(in_batch), BLOCK_D=block_d, BLOCK_K=block_k,
                  num_warps=warps)
    inv_tau = _inv_tau(tau, p)  # (inv_tau_arg, inv_tau_ptr), as _inv_tau says
    row_z = need_z and not in_batch  # z_pos's gradient in the row pass, else in the column pass
    with _triton_runtime.launch_device(p.device):
        if need_p or need_n or row_z:
            _triton_runtime.launcher(_contrastive_loss_bwd_kernel)[(B,)](
                p, z_pos, zn, gn, gs, ip, iz, inn, ls,
                gp if need_p else p, gz if row_z else p, gzn if need_n else p,
                B, N, D, p.stride(0), z_pos.stride(0), *zn_strides, *inv_tau,
                BY_ROW=True, HAS_NEG=has_neg, NEED_X=need_p, NEED_Y=row_z, NEED_N=need_n and N > 0, **common)
        if need_z and in_batch:
            _triton_runtime.launcher(_contrastive_loss_bwd_kernel)[(B,)](
                z_pos, p, p, gn, gs, iz, ip, inn, ls, gz, p, p,
                B, 0, D, z_pos.stride(0), p.stride(0), 0, 0, *inv_tau,
                BY_ROW=False, HAS_NEG=False, NEED_X=True, NEED_Y=False, NEED_N=False, **common)
    return gp, gz, gzn


register.register_contrastive_autograd("cwarp::contrastive_loss_triton_forward", contrastive_loss_backward)
_autocast.register("cwarp::contrastive_loss_triton_forward", _autocast.POLICY["contrastive_loss"])
