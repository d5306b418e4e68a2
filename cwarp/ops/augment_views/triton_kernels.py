"""cwarp::augment_views in Triton: the kernel, its host wrapper and the op.

Op: cwarp::augment_views_triton(src, theta, warps, color, mean, std, size,
kind, padding_mode, out_dtype) -> (B, V, C, size, size), the semantics of the
C++ op cwarp::augment_views (csrc/ops/augment_views/augment_views_cpu.cpp).

Program `pid` renders BLOCK output pixels of one view (b, v) of one image,
all C channels, so the view's parameters are scalars of the program. The warp
and sampling math is csrc/warp_math.h's, through its Triton mirror
cwarp/ops/triton_math.py; the colour math below mirrors csrc/ops/augment_views/color_math.h
function by function, by name. The contrast pre-pass (mean gray value of each
source) runs on the host as one torch reduction
(reference.source_mean_gray).

CPU tensors run only under TRITON_INTERPRET=1 set before triton is first
imported (cwarp/ops/_triton_runtime.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from cwarp.ops import _autocast, _triton_runtime
from cwarp.ops._triton_runtime import INTERPRETED, register_op
from cwarp.ops.augment_views import reference, register
from cwarp.ops.triton_math import KINDS, PADDINGS, sample_setup

__all__ = ["augment_views", "augment_views_forward"]

_OP = "cwarp::augment_views_triton"
_BLOCK = 64 if INTERPRETED else 256

# ------------------------------------------------------------ color_math.h


@triton.jit
def clamp01(x):
    return tl.where(x < 0.0, 0.0, tl.where(x > 1.0, 1.0, x))


@triton.jit
def gray_value(r, g, b):
    return 0.2989 * r + 0.587 * g + 0.114 * b


@triton.jit
def adjust_brightness(x, factor):
    return clamp01(x * factor)


@triton.jit
def blend(a, b, ratio):
    return clamp01(a * ratio + b * (1.0 - ratio))


@triton.jit
def adjust_contrast(x, factor, mean):
    return blend(x, mean, factor)


@triton.jit
def adjust_saturation(r, g, b, factor):
    lum = gray_value(r, g, b)
    return blend(r, lum, factor), blend(g, lum, factor), blend(b, lum, factor)


@triton.jit
def rgb_to_hsv(r, g, b):
    maxc = tl.maximum(tl.maximum(r, g), b)
    minc = tl.minimum(tl.minimum(r, g), b)
    eqc = maxc == minc
    rng = maxc - minc
    s = rng / tl.where(eqc, 1.0, maxc)
    div = tl.where(eqc, 1.0, rng)
    rc = (maxc - r) / div
    gc = (maxc - g) / div
    bc = (maxc - b) / div
    hh = tl.where(maxc == r, bc - gc, tl.where(maxc == g, rc + 2.0 - bc, gc + 4.0 - rc))
    x = hh * (1.0 / 6.0) + 1.0
    h = x - tl.floor(x)
    return h, s, maxc


@triton.jit
def hsv_to_rgb(h, s, v):
    h6 = h * 6.0
    fi = tl.floor(h6)
    f = h6 - fi
    im = fi - 6.0 * tl.floor(fi * (1.0 / 6.0))
    sxf = s * f
    q = clamp01((1.0 - sxf) * v)
    t = clamp01((sxf + (1.0 - s)) * v)
    p = clamp01((1.0 - s) * v)
    r = tl.where((im == 0.0) | (im == 5.0), v, tl.where(im == 1.0, q, tl.where(im == 4.0, t, p)))
    g = tl.where((im == 1.0) | (im == 2.0), v, tl.where(im == 0.0, t, tl.where(im == 3.0, q, p)))
    b = tl.where((im == 3.0) | (im == 4.0), v, tl.where(im == 2.0, t, tl.where(im == 5.0, q, p)))
    return r, g, b


@triton.jit
def adjust_hue(r, g, b, shift):
    h, s, v = rgb_to_hsv(r, g, b)
    hs = h + shift
    h = hs - tl.floor(hs)
    return hsv_to_rgb(h, s, v)


@triton.jit
def to_grayscale(r, g, b):
    lum = gray_value(r, g, b)
    return lum, lum, lum


@triton.jit
def normalize_value(x, mean, std):
    return (x - mean) / std


@triton.jit
def contrast_mean(mean_gray, brightness):
    return clamp01(mean_gray * brightness)


# ------------------------------------------------------------------ kernel


@triton.jit
def _sample(src_ptr, o00, o01, o10, o11, w00, w01, w10, w11, m00, m01, m10, m11, scale):
    v = (tl.load(src_ptr + o00, mask=m00, other=0).to(tl.float32) * w00
         + tl.load(src_ptr + o01, mask=m01, other=0).to(tl.float32) * w01
         + tl.load(src_ptr + o10, mask=m10, other=0).to(tl.float32) * w10
         + tl.load(src_ptr + o11, mask=m11, other=0).to(tl.float32) * w11)
    return clamp01(v * scale)


@triton.jit(do_not_specialize=["H", "W", "S", "V", "K"])
def _augment_views_kernel(
    src_ptr, out_ptr, th_ptr, wp_ptr, col_ptr, mg_ptr, mean_ptr, std_ptr,
    H, W, S, V, K, s_sb, s_sc, s_sh, s_sw, scale,
    C: tl.constexpr, KIND: tl.constexpr, PADDING: tl.constexpr, BLOCK: tl.constexpr,
):
    # One program per (image, view) pair's block of pixels: bv = b * V + v.
    # (The warps and affines are float32 (B, V, K, 5) and (B, V, 6): per pair.)
    # Unpacked level by level: Triton 3.6's dependency scan (its cache key)
    # fails on a nested assignment target.
    pix, _q, _affine, _gm, corner, _wxy, masks, weights = \
        sample_setup(tl.program_id(0).to(tl.int64), wp_ptr, th_ptr, H, W, S, S, K,
                     KIND, PADDING, False, True, False, True, BLOCK)
    bv, i, j, live = pix
    x0, y0 = corner
    m00, m01, m10, m11 = masks
    w00, w01, w10, w11 = weights
    b = bv // V
    base = y0.to(tl.int64) * s_sh + x0.to(tl.int64) * s_sw
    o00 = base
    o01 = base + s_sw
    o10 = base + s_sh
    o11 = base + s_sh + s_sw
    src_b = src_ptr + b * s_sb

    col = col_ptr + bv * 5
    fb = tl.load(col)
    fc = tl.load(col + 1)
    fs = tl.load(col + 2)
    hue = tl.load(col + 3)
    gray = tl.load(col + 4)
    m = contrast_mean(tl.load(mg_ptr + b), fb)
    out_v = out_ptr + bv * C * S * S + i * S + j
    if C == 3:
        r = _sample(src_b, o00, o01, o10, o11, w00, w01, w10, w11, m00, m01, m10, m11, scale)
        g = _sample(src_b + s_sc, o00, o01, o10, o11, w00, w01, w10, w11, m00, m01, m10, m11, scale)
        bl = _sample(src_b + 2 * s_sc, o00, o01, o10, o11, w00, w01, w10, w11, m00, m01, m10, m11, scale)
        # Identity factors change no bit of a finite value (x * 1, 1 * x + 0 * m),
        # so the ops run unconditionally; hue and grayscale are selected per
        # view, and so is contrast: it blends with the whole image's mean, and
        # at factor 1 it is skipped (as in the C++ kernels) so that a
        # non-finite pixel elsewhere does not reach this one through 0 * m.
        do_contrast = fc != 1.0
        r = adjust_brightness(r, fb)
        g = adjust_brightness(g, fb)
        bl = adjust_brightness(bl, fb)
        r = tl.where(do_contrast, adjust_contrast(r, fc, m), r)
        g = tl.where(do_contrast, adjust_contrast(g, fc, m), g)
        bl = tl.where(do_contrast, adjust_contrast(bl, fc, m), bl)
        r, g, bl = adjust_saturation(r, g, bl, fs)
        hr, hg, hb = adjust_hue(r, g, bl, hue)
        do_hue = hue != 0.0
        r = tl.where(do_hue, hr, r)
        g = tl.where(do_hue, hg, g)
        bl = tl.where(do_hue, hb, bl)
        lr, lg, lb = to_grayscale(r, g, bl)
        do_gray = gray != 0.0
        r = tl.where(do_gray, lr, r)
        g = tl.where(do_gray, lg, g)
        bl = tl.where(do_gray, lb, bl)
        ty = out_ptr.dtype.element_ty
        tl.store(out_v, normalize_value(r, tl.load(mean_ptr), tl.load(std_ptr)).to(ty), mask=live)
        tl.store(out_v + S * S, normalize_value(g, tl.load(mean_ptr + 1), tl.load(std_ptr + 1)).to(ty), mask=live)
        tl.store(out_v + 2 * S * S, normalize_value(bl, tl.load(mean_ptr + 2), tl.load(std_ptr + 2)).to(ty),
                 mask=live)
    else:
        x = _sample(src_b, o00, o01, o10, o11, w00, w01, w10, w11, m00, m01, m10, m11, scale)
        x = adjust_brightness(x, fb)
        x = tl.where(fc != 1.0, adjust_contrast(x, fc, m), x)  # skipped at factor 1, as above
        tl.store(out_v, normalize_value(x, tl.load(mean_ptr), tl.load(std_ptr)).to(out_ptr.dtype.element_ty),
                 mask=live)


def augment_views_forward(src, theta, warps, color, mean, std, size: int, kind: str, padding_mode: str,
                          out_dtype: torch.dtype) -> torch.Tensor:
    register.check_augment_views_args(_OP, src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)
    B, C, H, W = src.shape
    V, K = theta.shape[1], warps.shape[2]
    out = torch.empty(B, V, C, size, size, dtype=out_dtype, device=src.device)
    if out.numel() == 0:
        return out
    _triton_runtime.require_runnable(_OP, src.device)
    mean_gray = reference.source_mean_gray(src)
    grid = (B * V * triton.cdiv(size * size, _BLOCK),)
    with _triton_runtime.launch_device(src.device):
        _triton_runtime.launcher(_augment_views_kernel)[grid](
            src, out, theta.contiguous(), warps.contiguous(), color.contiguous(), mean_gray, mean.contiguous(),
            std.contiguous(), H, W, size, V, K, *src.stride(), 1.0 / 255.0 if src.dtype == torch.uint8 else 1.0,
            C=C, KIND=KINDS[kind], PADDING=PADDINGS[padding_mode], BLOCK=_BLOCK,
        )
    return out


# A triton_op on the GPU (Inductor sees the kernel), a plain custom op under
# the interpreter (see cwarp/ops/_triton_runtime.py).
@register_op(_OP, mutates_args=())
def augment_views_triton(src: torch.Tensor, theta: torch.Tensor, warps: torch.Tensor, color: torch.Tensor,
                         mean: torch.Tensor, std: torch.Tensor, size: int, kind: str, padding_mode: str,
                         out_dtype: torch.dtype) -> torch.Tensor:
    return augment_views_forward(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)


augment_views_triton.register_fake(register.augment_views_fake(_OP))
_autocast.register(_OP, _autocast.POLICY["augment_views"])


def augment_views(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype) -> torch.Tensor:
    """ContraWarpAugment(backend="triton"): the custom op."""
    return torch.ops.cwarp.augment_views_triton(src, theta, warps, color, mean, std, size, kind, padding_mode,
                                                out_dtype)
