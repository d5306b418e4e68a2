"""cwarp.local_warp in Triton: kernels, host wrappers and the custom ops.

Ops (torch.library.triton_op, so torch.compile sees the kernels):
  cwarp::local_warp_triton(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)
  cwarp::local_warp_backward_triton(grad_out, image, params, theta, kind, padding_mode,
                                    align_corners, output_mask) -> (grad_image, grad_params, grad_theta)
with the semantics of docs/api.md §2 and of the C++ ops cwarp::local_warp /
cwarp::local_warp_backward (same argument order, same empty results for the
gradients output_mask does not ask for).

Work layout, as in csrc/ops/local_warp/local_warp_cuda.cu: program `pid` handles BLOCK output
pixels of image pid // cdiv(Ho * Wo, BLOCK), so every program belongs to one
image and reduces the parameter / theta gradients of its pixels to one
partial per component. The partials are summed in a fixed order on the host
side (torch.sum), so those gradients are always deterministic; the image
gradient uses float atomics, or 64-bit fixed-point integer atomics (order
independent, hence deterministic) when torch.are_deterministic_algorithms_enabled().

When and how the kernels can run (the interpreter, CPU tensors) is
cwarp/ops/_triton_runtime.py's.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from cwarp.ops import _autocast, _checks, _triton_runtime
from cwarp.ops._checks import opmath
from cwarp.ops._triton_runtime import INTERPRETED, register_op
from cwarp.ops.local_warp import register
from cwarp.ops.triton_math import (KINDS, PADDINGS, bilinear_coord_grad, load_warp, sample_setup, store_value,
                                   warp_param_grad)

__all__ = ["local_warp", "local_warp_forward", "local_warp_backward"]

_FWD_OP = "cwarp::local_warp_triton"
_BWD_OP = "cwarp::local_warp_backward_triton"
_MIN_BLOCK = 64 if INTERPRETED else 128


def _configs():
    if INTERPRETED:
        # The interpreter runs each program in numpy: one small fixed block.
        return [triton.Config({"BLOCK": _MIN_BLOCK}, num_warps=1)]
    return [triton.Config({"BLOCK": block}, num_warps=warps)
            for block, warps in ((128, 4), (256, 4), (256, 8), (512, 4), (512, 8), (1024, 8))]


_AUTOTUNE_KEY = ["C", "H", "W", "Ho", "Wo", "K"]
# Sizes are never specialized: an int argument equal to 1 would become a constexpr.
_SIZES = ["C", "H", "W", "Ho", "Wo", "K"]


@triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY)
@triton.jit(do_not_specialize=_SIZES)
def _local_warp_fwd_kernel(
    in_ptr, out_ptr, prm_ptr, th_ptr,
    C, H, W, Ho, Wo, K,
    in_sb, in_sc, in_sh, in_sw, out_sb, out_sc, out_sh, out_sw,
    KIND: tl.constexpr, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, HAS_THETA: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK: tl.constexpr,
):
    CT = prm_ptr.dtype.element_ty
    # Unpacked level by level: Triton 3.6's dependency scan (its cache key)
    # fails on a nested assignment target.
    pix, _q, _affine, _gm, corner, _wxy, masks, weights = \
        sample_setup(tl.program_id(0).to(tl.int64), prm_ptr, th_ptr, H, W, Ho, Wo, K,
                     KIND, PADDING, ALIGN_CORNERS, HAS_THETA, INDEX64, False, BLOCK)
    b, i, j, live = pix
    x0, y0 = corner
    m00, m01, m10, m11 = masks
    w00, w01, w10, w11 = weights
    src = in_ptr + b * in_sb + y0 * in_sh + x0 * in_sw
    dst = out_ptr + b * out_sb + i * out_sh + j * out_sw
    for ch in range(C):
        s = src + ch * in_sc
        v = (tl.load(s, mask=m00, other=0.0).to(CT) * w00
             + tl.load(s + in_sw, mask=m01, other=0.0).to(CT) * w01
             + tl.load(s + in_sh, mask=m10, other=0.0).to(CT) * w10
             + tl.load(s + in_sh + in_sw, mask=m11, other=0.0).to(CT) * w11)
        tl.store(dst + ch * out_sc, store_value(v, out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _scatter(gimg_ptr, gfix_ptr, off, v, mask, scale, DETERMINISTIC: tl.constexpr):
    if DETERMINISTIC:
        fixed = tl.floor(v.to(tl.float64) * scale + 0.5).to(tl.int64)
        tl.atomic_add(gfix_ptr + off, fixed, mask=mask, sem="relaxed")
    else:
        tl.atomic_add(gimg_ptr + off, v, mask=mask, sem="relaxed")


@triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY,
                 # Autotuning runs the kernel several times: start every run from zero.
                 reset_to_zero=["gimg_ptr", "gfix_ptr", "part_ptr"])
@triton.jit(do_not_specialize=_SIZES)
def _local_warp_bwd_kernel(
    go_ptr, in_ptr, prm_ptr, th_ptr, gimg_ptr, gfix_ptr, scale_ptr, part_ptr,
    C, H, W, Ho, Wo, K, n_slots,
    go_sb, go_sc, go_sh, go_sw, in_sb, in_sc, in_sh, in_sw,
    KIND: tl.constexpr, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, HAS_THETA: tl.constexpr,
    NEED_IMAGE: tl.constexpr, NEED_PARAMS: tl.constexpr, NEED_THETA: tl.constexpr,
    DETERMINISTIC: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr,
):
    CT = prm_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    pix, pq, affine, gm, corner, wxy, masks, weights = sample_setup(
        pid, prm_ptr, th_ptr, H, W, Ho, Wo, K, KIND, PADDING, ALIGN_CORNERS, HAS_THETA, INDEX64, False, BLOCK)
    b, i, j, live = pix  # level by level, as in the forward
    px, py, qx, qy = pq
    a, bb, c, d, e, f = affine
    gmx, gmy = gm
    x0, y0 = corner
    wx0, wx1, wy0, wy1 = wxy
    m00, m01, m10, m11 = masks
    w00, w01, w10, w11 = weights
    prm_b = prm_ptr + b * K * 5
    base = b * in_sb + y0 * in_sh + x0 * in_sw
    scale = 1.0
    if DETERMINISTIC:
        scale = tl.load(scale_ptr)
    go = go_ptr + b * go_sb + i * go_sh + j * go_sw
    d_ix = tl.zeros([BLOCK], CT)
    d_iy = tl.zeros([BLOCK], CT)
    for ch in range(C):
        g = tl.load(go + ch * go_sc, mask=live, other=0.0).to(CT)
        off = base + ch * in_sc
        if NEED_IMAGE:
            _scatter(gimg_ptr, gfix_ptr, off, w00 * g, m00, scale, DETERMINISTIC)
            _scatter(gimg_ptr, gfix_ptr, off + in_sw, w01 * g, m01, scale, DETERMINISTIC)
            _scatter(gimg_ptr, gfix_ptr, off + in_sh, w10 * g, m10, scale, DETERMINISTIC)
            _scatter(gimg_ptr, gfix_ptr, off + in_sh + in_sw, w11 * g, m11, scale, DETERMINISTIC)
        if NEED_PARAMS or NEED_THETA:
            v00 = tl.load(in_ptr + off, mask=m00, other=0.0).to(CT)
            v01 = tl.load(in_ptr + off + in_sw, mask=m01, other=0.0).to(CT)
            v10 = tl.load(in_ptr + off + in_sh, mask=m10, other=0.0).to(CT)
            v11 = tl.load(in_ptr + off + in_sh + in_sw, mask=m11, other=0.0).to(CT)
            gx, gy = bilinear_coord_grad(wx0, wx1, wy0, wy1, m00, m01, m10, m11, v00, v01, v10, v11)
            d_ix += g * gx
            d_iy += g * gy

    if NEED_PARAMS or NEED_THETA:
        # Pixels past the end must add nothing, even where q is NaN.
        gsx = tl.where(live, d_ix * gmx, 0.0)
        gsy = tl.where(live, d_iy * gmy, 0.0)
        # Partials: (B, n_slots, 5 K + 6), this program's slot = pid % cdiv(Ho Wo, BLOCK).
        n_comp = 5 * K + 6
        part = part_ptr + (b * n_slots + pid % tl.cdiv(Ho * Wo, BLOCK)) * n_comp
        if NEED_THETA:
            qxm = tl.where(live, qx, 0.0)
            qym = tl.where(live, qy, 0.0)
            tl.store(part + 5 * K, tl.sum(gsx * qxm, axis=0))
            tl.store(part + 5 * K + 1, tl.sum(gsx * qym, axis=0))
            tl.store(part + 5 * K + 2, tl.sum(gsx, axis=0))
            tl.store(part + 5 * K + 3, tl.sum(gsy * qxm, axis=0))
            tl.store(part + 5 * K + 4, tl.sum(gsy * qym, axis=0))
            tl.store(part + 5 * K + 5, tl.sum(gsy, axis=0))
        if NEED_PARAMS:
            # dL/dq = A^T dL/ds
            gqx = a * gsx + d * gsy
            gqy = bb * gsx + e * gsy
            for k in range(K):
                cx, cy, r, dx, dy = load_warp(prm_b, k)
                g_cx, g_cy, g_r, g_dx, g_dy = warp_param_grad(KIND, px - cx, py - cy, r, dx, dy, gqx, gqy)
                # gq is 0 past the end, but 0 * NaN is not: mask the products too.
                tl.store(part + 5 * k, tl.sum(tl.where(live, g_cx, 0.0), axis=0))
                tl.store(part + 5 * k + 1, tl.sum(tl.where(live, g_cy, 0.0), axis=0))
                tl.store(part + 5 * k + 2, tl.sum(tl.where(live, g_r, 0.0), axis=0))
                tl.store(part + 5 * k + 3, tl.sum(tl.where(live, g_dx, 0.0), axis=0))
                tl.store(part + 5 * k + 4, tl.sum(tl.where(live, g_dy, 0.0), axis=0))


# ----------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------

def _fits_int32(t: torch.Tensor, n_pix: int) -> bool:
    # Largest in-image offset plus the out-of-range slack of the corners
    # (|x0|, |y0| <= 101 past the edge before the mask applies), as in C++.
    max_off = sum((t.shape[d] - 1) * t.stride(d) for d in range(1, 4))
    slack = 128 * (t.stride(2) + t.stride(3))
    return max_off + slack < 2**31 - 1 and n_pix < 2**31 - 1024


def local_warp_forward(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                       out_w: int, kind: str, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """Launches the forward kernel (the body of cwarp::local_warp_triton)."""
    register.check_local_warp_args(_FWD_OP, image, params, theta, kind, padding_mode)
    _checks.check_out_size(_FWD_OP, out_h, out_w)
    B, C, H, W = image.shape
    out = register.empty_like_format(image, (B, C, out_h, out_w))
    if out.numel() == 0:
        return out
    _triton_runtime.require_runnable(_FWD_OP, image.device)
    ct = opmath(image.dtype)
    prm = params.to(ct).contiguous()
    th = theta.to(ct).reshape(B, 6).contiguous() if theta is not None else prm
    n_pix = out_h * out_w
    index64 = not (_fits_int32(image, n_pix) and _fits_int32(out, n_pix))
    grid = lambda meta: (B * triton.cdiv(n_pix, meta["BLOCK"]),)  # noqa: E731
    with _triton_runtime.launch_device(image.device):
        _triton_runtime.launcher(_local_warp_fwd_kernel)[grid](
            image, out, prm, th,
            C, H, W, out_h, out_w, params.shape[1],
            *image.stride(), *out.stride(),
            KIND=KINDS[kind], PADDING=PADDINGS[padding_mode], ALIGN_CORNERS=bool(align_corners),
            HAS_THETA=theta is not None, INDEX64=index64,
        )
    return out


def _fixed_point_scale(grad_out: torch.Tensor, n_pix: int) -> torch.Tensor:
    """Power-of-two scale (a device scalar, no host sync) for the fixed-point
    image gradient: |a pixel's sum| <= Ho Wo max|grad_out| stays below 2**62.
    0 when grad_out is not finite (then the image gradient comes out NaN)."""
    # max|grad_out| as one reduction, without a full-size |grad_out| temporary.
    bound = torch.linalg.vector_norm(grad_out, float("inf")).to(torch.float64) * n_pix + 1.0
    _, exp = torch.frexp(bound)
    scale = torch.ldexp(torch.ones_like(bound), 62 - exp)
    return torch.where(torch.isfinite(bound), scale, torch.zeros_like(scale)).reshape(1)


def local_warp_backward(grad_out: torch.Tensor, image: torch.Tensor, params: torch.Tensor,
                        theta: Optional[torch.Tensor], kind: str, padding_mode: str, align_corners: bool,
                        output_mask: Sequence[bool]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the backward kernel (the body of cwarp::local_warp_backward_triton)."""
    register.check_local_warp_args(_BWD_OP, image, params, theta, kind, padding_mode, backward=True)
    _checks.check_local_warp_grad_out(_BWD_OP, grad_out, image)
    B, C, H, W = image.shape
    K = params.shape[1]
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    n_pix = out_h * out_w
    ct = opmath(image.dtype)
    want_image = bool(output_mask[0])
    want_params = bool(output_mask[1])
    want_theta = bool(output_mask[2]) and theta is not None
    deterministic = torch.are_deterministic_algorithms_enabled()
    # The image gradient shares the image's strides: one offset addresses both.
    image = image.contiguous(memory_format=suggest_memory_format(image))

    gimg = torch.zeros_like(image, dtype=ct) if want_image and not deterministic else None
    gfix = torch.zeros_like(image, dtype=torch.int64) if want_image and deterministic else None
    n_slots = triton.cdiv(n_pix, _MIN_BLOCK)  # programs per image at the smallest block
    n_comp = 5 * K + 6
    need_coord = (want_params and K > 0) or want_theta
    part = image.new_zeros((B, n_slots, n_comp), dtype=ct) if need_coord else None

    if B > 0 and C > 0 and (want_image or need_coord):
        _triton_runtime.require_runnable(_BWD_OP, image.device)
        prm = params.to(ct).contiguous()
        th = theta.to(ct).reshape(B, 6).contiguous() if theta is not None else prm
        scale = _fixed_point_scale(grad_out, n_pix) if gfix is not None else prm
        dummy = prm  # a valid pointer for the arguments this launch does not use
        index64 = not (_fits_int32(image, n_pix) and _fits_int32(grad_out, n_pix))
        grid = lambda meta: (B * triton.cdiv(n_pix, meta["BLOCK"]),)  # noqa: E731
        with _triton_runtime.launch_device(image.device):
            _triton_runtime.launcher(_local_warp_bwd_kernel)[grid](
                grad_out, image, prm, th,
                gimg if gimg is not None else dummy.new_zeros(1),
                gfix if gfix is not None else dummy.new_zeros(1, dtype=torch.int64),
                scale,
                part if part is not None else dummy.new_zeros(1),
                C, H, W, out_h, out_w, K, n_slots,
                *grad_out.stride(), *image.stride(),
                KIND=KINDS[kind], PADDING=PADDINGS[padding_mode], ALIGN_CORNERS=bool(align_corners),
                HAS_THETA=theta is not None, NEED_IMAGE=want_image, NEED_PARAMS=want_params and K > 0,
                NEED_THETA=want_theta, DETERMINISTIC=gfix is not None, INDEX64=index64,
            )
        if gfix is not None:
            gimg = torch.where(scale > 0, gfix.to(torch.float64) / scale, torch.nan).to(ct)
    elif want_image:
        gimg = torch.zeros_like(image, dtype=ct)

    grad_image = gimg.to(image.dtype) if want_image else image.new_empty((0,))
    if want_params:
        if part is not None and K > 0:
            grad_params = part[:, :, :5 * K].sum(dim=1, dtype=torch.float64).reshape(B, K, 5).to(params.dtype)
        else:
            grad_params = torch.zeros_like(params)
    else:
        grad_params = params.new_empty((0,))
    if want_theta:
        grad_theta = part[:, :, 5 * K:].sum(dim=1, dtype=torch.float64).reshape(B, 2, 3).to(theta.dtype)
    else:
        grad_theta = params.new_empty((0,))
    return grad_image, grad_params, grad_theta


# ----------------------------------------------------------------------------
# Custom ops
# ----------------------------------------------------------------------------

# A triton_op on the GPU, a plain custom op under the interpreter (see
# cwarp/ops/_triton_runtime.py).
@register_op(_FWD_OP, mutates_args=())
def local_warp_triton(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                      out_w: int, kind: str, padding_mode: str, align_corners: bool) -> torch.Tensor:
    return local_warp_forward(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)


@register_op(_BWD_OP, mutates_args=())
def local_warp_backward_triton(grad_out: torch.Tensor, image: torch.Tensor, params: torch.Tensor,
                               theta: Optional[torch.Tensor], kind: str, padding_mode: str, align_corners: bool,
                               output_mask: List[bool]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return local_warp_backward(grad_out, image, params, theta, kind, padding_mode, align_corners, output_mask)


# triton_op registers the function itself as the fake kernel (wrap_triton
# makes the launches a no-op on fake tensors); custom_op registers none.
# Explicit fakes (shapes and checks only, shared with the C++ ops) serve both.
local_warp_triton.register_fake(register.local_warp_fake(_FWD_OP))
local_warp_backward_triton.register_fake(register.local_warp_backward_fake(_BWD_OP))
register.register_local_warp_autograd(_FWD_OP, local_warp_triton, local_warp_backward_triton)
_autocast.register(_FWD_OP, _autocast.POLICY["local_warp"])


def local_warp(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor], out_h: int, out_w: int,
               kind: str, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """cwarp.local_warp(..., backend="triton"): the custom op, after the device check."""
    _triton_runtime.require_runnable("cwarp.local_warp", image.device)
    return torch.ops.cwarp.local_warp_triton(image, params, theta, out_h, out_w, kind, padding_mode,
                                             align_corners)
