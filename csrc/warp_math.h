// The math of cwarp::local_warp, written once.
//
// Every function here is a C10_HOST_DEVICE inline function of plain scalars,
// so the CPU kernel (csrc/ops/local_warp/local_warp_cpu.cpp) and the CUDA kernel
// (csrc/ops/local_warp/local_warp_cuda.cu) include this header unchanged and the Triton
// kernel (cwarp/ops/local_warp/triton_kernels.py) mirrors it function by function, by name.
// The oracle is cwarp/reference.py: the warp field built with PyTorch ops,
// then F.grid_sample. Where the formulas below follow ATen's grid sampler
// (unnormalize, clip, reflect, the int-range guard) they do so on purpose,
// so that the fused kernels sample exactly like grid_sample.
//
// `T` is the compute type (compute_t): float for float/half/bfloat16/uint8
// inputs, double for double inputs.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CWARP_FLOOR ::floor
#define CWARP_CEIL ::ceil
#define CWARP_SQRT ::sqrt
#define CWARP_EXP ::exp
#define CWARP_ISFINITE ::isfinite
#else
#define CWARP_FLOOR std::floor
#define CWARP_CEIL std::ceil
#define CWARP_SQRT std::sqrt
#define CWARP_EXP std::exp
#define CWARP_ISFINITE std::isfinite
#endif

namespace cwarp {

enum class WarpKind : int { Translate = 0, Gaussian = 1 };
enum class Padding : int { Zeros = 0, Border = 1, Reflection = 2 };

// ---------------------------------------------------------------------------
// Element types: what the kernels compute in, and how a result is stored.
// ---------------------------------------------------------------------------

// ATen's opmath type, except for uint8 images, which are sampled in float
// (at::opmath_type<uint8_t> is uint8_t itself).
template <typename scalar_t>
struct ComputeType {
  using type = at::opmath_type<scalar_t>;
};
template <>
struct ComputeType<uint8_t> {
  using type = float;
};
template <typename scalar_t>
using compute_t = typename ComputeType<scalar_t>::type;

// A float sample -> uint8 as torchvision's resampling stores it
// (`float_img.round_().to(torch.uint8)`): rounded half to even. The clamp
// keeps the cast defined; a bilinear sample of bytes never leaves [0, 255]
// by more than rounding, so it changes nothing torchvision would keep.
// Adding 2^23 leaves the float sum no fraction bits, so the addition rounds
// to an integer, half to even (the IEEE default mode); subtracting 2^23 is
// then exact. Two adds, no libm call, and the same bits on every backend.
C10_HOST_DEVICE C10_ALWAYS_INLINE uint8_t round_to_uint8(float v) {
  const float c = v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f;
  return static_cast<uint8_t>((c + 8388608.0f) - 8388608.0f);
}

// A computed sample -> the output's element type.
template <typename scalar_t, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE scalar_t store_value(T v) {
  if constexpr (std::is_same_v<scalar_t, uint8_t>) {
    return round_to_uint8(v);
  } else {
    return static_cast<scalar_t>(v);
  }
}

// ---------------------------------------------------------------------------
// Output pixel -> normalized position p (the base grid of F.affine_grid).
// ---------------------------------------------------------------------------

// Position of pixel `i` of an axis of `size` pixels. Mirrors ATen's
// linspace_from_neg_one: a size-1 axis sits at 0 for both conventions.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T base_coord(int64_t i, int64_t size, bool align_corners) {
  if (size <= 1) return T(0);
  if (align_corners) return T(-1) + T(2) * T(i) / T(size - 1);
  return (T(2) * T(i) + T(1)) / T(size) - T(1);
}

// ---------------------------------------------------------------------------
// Local warp weights. One warp: centre c, radius r, displacement d.
// rho2 = |p - c|^2, r2 = r^2, m2 = |d|^2.
// ---------------------------------------------------------------------------

// Whether a point lies outside a translate warp's disc (u = r2 - rho2 <= 0),
// where the weight is exactly 0. A NaN u (a NaN radius or centre) is not
// outside: its weight is NaN, so that the NaN parameter shows in the output
// instead of silently moving nothing.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE bool outside_disc(T rho2, T r2) {
  return r2 - rho2 <= T(0);
}

// One warp's row of params (cx, cy, r, dx, dy) with the two squares every
// weight of it needs, r2 and m2, computed once per warp rather than once per
// pixel (same expressions, so the same values).
template <typename T>
struct WarpConstants {
  T cx, cy, r, dx, dy, r2, m2;
};

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE WarpConstants<T> warp_constants(T cx, T cy, T r, T dx, T dy) {
  return WarpConstants<T>{cx, cy, r, dx, dy, r * r, dx * dx + dy * dy};
}

// Gustafsson's local translation: ((r2 - rho2) / (r2 - rho2 + m2))^2 inside
// the disc, 0 outside. Written without branches so loops over pixels vectorize.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T translate_weight(T rho2, T r2, T m2) {
  const T u = r2 - rho2;
  const T t = u / (u + m2);
  return outside_disc(rho2, r2) ? T(0) : t * t;
}

// d w / d u (u = r2 - rho2) and d w / d m2 of translate_weight, inside the disc.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void translate_weight_grad(T rho2, T r2, T m2, T* dw_du, T* dw_dm2) {
  const T u = r2 - rho2;
  const T v = u + m2;
  const T t = u / v;
  const T two_t_over_v2 = T(2) * t / (v * v);
  const bool inside = !outside_disc(rho2, r2);
  *dw_du = inside ? two_t_over_v2 * m2 : T(0);
  *dw_dm2 = inside ? -two_t_over_v2 * u : T(0);
}

// r2 where it divides: 1 for a warp of radius 0, whose Gaussian weight and
// slopes are 0 and must not be computed as 0 / 0.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T nonzero_r2(T r2) {
  return r2 == T(0) ? T(1) : r2;
}

// Gaussian falloff exp(-rho2 / (2 r2)). A warp of radius 0 weighs 0
// everywhere, as a translate warp of radius 0 does: the limit away from its
// centre, and at the centre itself, where the formula is 0 / 0 and which
// pixel sits exactly there is a matter of rounding. A NaN r2 stays NaN.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T gaussian_weight(T rho2, T r2) {
  return r2 == T(0) ? T(0) : CWARP_EXP(-rho2 / (T(2) * r2));
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T warp_weight(WarpKind kind, T rho2, T r2, T m2) {
  return kind == WarpKind::Translate ? translate_weight(rho2, r2, m2) : gaussian_weight(rho2, r2);
}

// The weight and its slope d w / d rho2 at one position, for maps that need
// the Jacobian of the warp field (the point solver of cwarp::warp_points).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T warp_weight_slope(WarpKind kind, T rho2, T r2, T m2, T* dw_drho2) {
  if (kind == WarpKind::Translate) {
    T dw_du, dw_dm2;
    translate_weight_grad(rho2, r2, m2, &dw_du, &dw_dm2);
    *dw_drho2 = -dw_du;
    return translate_weight(rho2, r2, m2);
  }
  const T w = gaussian_weight(rho2, r2);
  *dw_drho2 = -w / (T(2) * nonzero_r2(r2));
  return w;
}

// Adjoint of one warp's contribution q -= w * d. Given g = dL/dq at p, adds
// dL/d(cx, cy, r, dx, dy) of this warp into grad[0..4].
// ex, ey = p - c.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void warp_param_grad(
    WarpKind kind, T ex, T ey, T r, T dx, T dy, T gx, T gy, T* grad) {
  const T rho2 = ex * ex + ey * ey;
  const T r2 = r * r;
  const T m2 = dx * dx + dy * dy;
  // dL/dw = -<g, d>
  const T gw = -(gx * dx + gy * dy);
  T w, dw_drho2, dw_dr2, dw_dm2;
  if (kind == WarpKind::Translate) {
    T dw_du;
    translate_weight_grad(rho2, r2, m2, &dw_du, &dw_dm2);
    w = translate_weight(rho2, r2, m2);
    dw_drho2 = -dw_du;
    dw_dr2 = dw_du;
  } else {
    w = gaussian_weight(rho2, r2);
    const T r2s = nonzero_r2(r2);
    const T inv_2r2 = T(1) / (T(2) * r2s);
    dw_drho2 = -w * inv_2r2;
    dw_dr2 = w * rho2 * inv_2r2 / r2s;
    dw_dm2 = T(0);
  }
  // rho2 = |p - c|^2  =>  d rho2 / d c = -2 (p - c);  r2 = r^2;  m2 = |d|^2.
  const T g_rho2 = gw * dw_drho2;
  grad[0] += T(-2) * g_rho2 * ex;
  grad[1] += T(-2) * g_rho2 * ey;
  grad[2] += T(2) * gw * dw_dr2 * r;
  // The Gaussian weight does not depend on m2: no m2 term at all (rather than
  // gw * 0, which is NaN where gw is), as in the reference's autograd.
  if (kind == WarpKind::Translate) {
    grad[3] += T(2) * gw * dw_dm2 * dx - w * gx;
    grad[4] += T(2) * gw * dw_dm2 * dy - w * gy;
  } else {
    grad[3] -= w * gx;
    grad[4] -= w * gy;
  }
}

// warp_param_grad of a translate warp adds exactly zero at a point outside
// its disc (rho2 >= r2) when rho2 and <g, d> are finite: every term is then a
// finite number times the exact zero that translate_weight(_grad) select
// there (<g, d> finite implies g and d are). A caller may skip the call in
// that case and only then: with a non-finite operand the call must run, so
// that the NaN reaches the gradient as it does in the reference.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE bool translate_param_grad_vanishes(T ex, T ey, T r, T dx, T dy, T gx, T gy) {
  const T rho2 = ex * ex + ey * ey;
  return rho2 >= r * r && CWARP_ISFINITE(rho2) && CWARP_ISFINITE(gx * dx + gy * dy);
}
// ---------------------------------------------------------------------------
// Sampling: normalized coordinate -> pixel coordinate, padding, corners.
// Same formulas as ATen's GridSampler so that results match grid_sample.
// ---------------------------------------------------------------------------

// [-1, 1] -> pixel index space; *scale receives d(pixel)/d(normalized).
// ATen writes ((x + 1) / 2) (size - 1) with align_corners and
// ((x + 1) size - 1) / 2 without; both are x * scale + (size - 1) / 2, one
// multiply-add with no branch, which keeps pixel loops vectorizable.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T unnormalize(T coord, int64_t size, bool align_corners, T* scale) {
  *scale = (align_corners ? T(size - 1) : T(size)) / T(2);
  return coord * *scale + T(size - 1) / T(2);
}

// Clamp to [0, size - 1]; *grad receives d(out)/d(in). NaN stays NaN (see
// safe_coord below); an infinity goes to the edge it points at. Written with selects, not early returns, so
// that CPU loops over pixels if-convert and vectorize.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T clip_coord(T in, int64_t size, T* grad) {
  const T hi = T(size - 1);
  *grad = ((in > T(0)) & (in < hi)) ? T(1) : T(0);
  return in <= T(0) ? T(0) : (in >= hi ? hi : in);
}

// Reflect `in` into [twice_low / 2, twice_high / 2]; *grad receives the sign.
// Non-finite input comes out NaN (inf - inf): an infinity has no fold.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T reflect_coord(T in, int64_t twice_low, int64_t twice_high, T* grad) {
  if (twice_low == twice_high) {
    *grad = T(0);
    return T(0);
  }
  const T lo = T(twice_low) / T(2);
  const T span = T(twice_high - twice_low) / T(2);
  const T shifted = in - lo;
  const T sign = shifted < T(0) ? T(-1) : T(1);
  const T x = shifted < T(0) ? -shifted : shifted;
  // x - flips * span rather than fmod: fmod is a called routine on the GPU
  // (a stack frame, spills in the double kernels) and a libm call on the CPU
  // (no vectorization). Where x / span rounds across an integer the two
  // differ by a rounding error, and the reflection is continuous at that fold,
  // so the result moves by no more than that error.
  const T flips = CWARP_FLOOR(x / span);
  const T extra = x - flips * span;
  // Parity from the float itself (casting a huge float to int would
  // overflow), without a second fmod: flips is integer-valued, so halving,
  // flooring and doubling it are exact.
  const bool even = CWARP_FLOOR(flips * T(0.5)) * T(2) == flips;
  *grad = even ? sign : -sign;
  return even ? extra + lo : span - extra + lo;
}

// ATen's safe_downgrade_to_int_range, but for NaN: infinities and values
// beyond the int range become -100, a position whose four corners are all
// outside the image, so they sample zeros, get zero gradient, and never reach
// a float -> int cast that would be undefined. NaN stays NaN: bilinear()
// gives it no corner inside the image and NaN weights, so a NaN position
// samples NaN (ATen's kernels disagree with each other there: its CPU kernel
// returns NaN with zeros padding and the first pixel with border, its CUDA
// kernel 0 and the first pixel).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T safe_coord(T x) {
  const T limit = T(2147483646.0);
  return (((x > -limit) & (x < limit)) | (x != x)) ? x : T(-100);
}

// Normalized coordinate -> padded pixel coordinate, with d(out)/d(in).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T source_index(
    T coord, int64_t size, Padding padding, bool align_corners, T* grad) {
  T scale;
  T x = unnormalize(coord, size, align_corners, &scale);
  T g = T(1);
  if (padding == Padding::Border) {
    x = clip_coord(x, size, &g);
  } else if (padding == Padding::Reflection) {
    T g_reflect, g_clip;
    x = align_corners ? reflect_coord(x, int64_t(0), 2 * (size - 1), &g_reflect)
                      : reflect_coord(x, int64_t(-1), 2 * size - 1, &g_reflect);
    x = clip_coord(x, size, &g_clip);
    g = g_reflect * g_clip;
  }
  const T safe = safe_coord(x);
  *grad = safe == x ? g * scale : T(0);
  return safe;
}

// The four bilinear corners of a padded coordinate (ix, iy): x0 = floor(ix),
// weights as ATen writes them ((x1 - ix) rather than 1 - fx), and whether
// each corner lies inside the image. `ix`, `iy` have passed safe_coord, so
// floor(ix) fits in 32 bits and the casts are defined, except for NaN: a NaN
// coordinate gets corner -100 (no corner inside, no cast of NaN) and NaN
// weights, so that its sample (0 from each outside corner times a NaN
// weight) is NaN. Validity is decided on the floats, which keeps the CPU
// loops free of 64-bit conversions.
template <typename index_t, typename T>
struct Bilinear {
  index_t x0, y0;
  T wx0, wx1, wy0, wy1;  // weight of column x0 / x0 + 1, row y0 / y0 + 1
  bool vx0, vx1, vy0, vy1;
};

template <typename index_t, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Bilinear<index_t, T> bilinear(T ix, T iy, int64_t w, int64_t h) {
  Bilinear<index_t, T> b;
  const T fx0 = CWARP_FLOOR(ix);
  const T fy0 = CWARP_FLOOR(iy);
  b.x0 = static_cast<index_t>(fx0 == fx0 ? fx0 : T(-100));
  b.y0 = static_cast<index_t>(fy0 == fy0 ? fy0 : T(-100));
  b.wx0 = fx0 + T(1) - ix;
  b.wx1 = ix - fx0;
  b.wy0 = fy0 + T(1) - iy;
  b.wy1 = iy - fy0;
  // `&` rather than `&&`: no short-circuit branches in vectorized loops.
  const T fw = T(w), fh = T(h);
  b.vx0 = (fx0 >= T(0)) & (fx0 < fw);
  b.vx1 = (fx0 >= T(-1)) & (fx0 + T(1) < fw);
  b.vy0 = (fy0 >= T(0)) & (fy0 < fh);
  b.vy1 = (fy0 >= T(-1)) & (fy0 + T(1) < fh);
  return b;
}

// A top-left corner's column (or row) c clamped to [-1, n], n the image's
// width (or height). A corner inside the image has c in [-1, n - 1], which
// the clamp leaves as it is; a far-away pixel's (c up to 2^31) becomes small
// enough for the offset products below and for a block's footprint
// (local_warp_cuda.cu's CornerBounds).
template <typename index_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE index_t clamp_corner(index_t c, int64_t n) {
  const index_t in = static_cast<index_t>(n);
  return c < index_t(-1) ? index_t(-1) : (c > in ? in : c);
}

// Offset of the top-left corner (x0, y0) for the image strides (sh, sw), the
// corner clamped to [-1, W] x [-1, H] (clamp_corner): none of the offsets of
// a corner inside the image changes, and the product cannot overflow.
// Callers that use 32-bit offsets leave room for the one row and column of
// overhang.
template <typename index_t, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE index_t corner_base_offset(const Bilinear<index_t, T>& b, int64_t w, int64_t h,
                                                             index_t sh, index_t sw) {
  return clamp_corner(b.y0, h) * sh + clamp_corner(b.x0, w) * sw;
}

// The value at a corner's offset, or 0 for a corner outside the image
// (offset -1): such a corner reads as 0, as in grid_sample, whatever the
// pixel at offset 0 holds (0 * NaN would not be 0).
template <typename T, typename scalar_t, typename index_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE T corner_value(const scalar_t* src, index_t o) {
  return o >= 0 ? static_cast<T>(src[o]) : T(0);
}

// A corner's weight for kernels that give a corner outside the image a valid
// offset and weight 0, so that their gather needs no mask: 0 outside, but a
// NaN position keeps its NaN weights, so that its sample is NaN as in
// the kernels that mask their loads instead.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T masked_corner_weight(bool inside, T w) {
  return (inside | (w != w)) ? w : T(0);
}

// d(bilinear sample)/d(ix, iy) for corner values v00 (x0, y0), v01 (x0 + 1,
// y0), v10 (x0, y0 + 1), v11 (x0 + 1, y0 + 1); invalid corners pass 0.
// A position with no corner inside the image has zero gradient: selected
// rather than computed, because a NaN position's weights are NaN (for any
// other such position the formula gives that 0 too).
template <typename index_t, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void bilinear_coord_grad(
    const Bilinear<index_t, T>& b, T v00, T v01, T v10, T v11, T* d_ix, T* d_iy) {
  const bool some_inside = (b.vx0 | b.vx1) & (b.vy0 | b.vy1);
  *d_ix = some_inside ? (v01 - v00) * b.wy0 + (v11 - v10) * b.wy1 : T(0);
  *d_iy = some_inside ? (v10 - v00) * b.wx0 + (v11 - v01) * b.wx1 : T(0);
}

// ---------------------------------------------------------------------------
// The full map: output position p -> warped position q -> source s.
// ---------------------------------------------------------------------------

// theta as six scalars: s = [a b c; d e f] q.
template <typename T>
struct Affine {
  T a, b, c, d, e, f;
};

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Affine<T> identity_affine() {
  return Affine<T>{T(1), T(0), T(0), T(0), T(1), T(0)};
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void apply_affine(const Affine<T>& A, T qx, T qy, T* sx, T* sy) {
  *sx = A.a * qx + A.b * qy + A.c;
  *sy = A.d * qx + A.e * qy + A.f;
}

// The inverse of apply_affine: q with A q = s. A singular A gives
// non-finite q (a division by a zero determinant), which the callers pass on.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void invert_affine(const Affine<T>& A, T sx, T sy, T* qx, T* qy) {
  const T det = A.a * A.e - A.b * A.d;
  const T x = sx - A.c, y = sy - A.f;
  *qx = (A.e * x - A.b * y) / det;
  *qy = (A.a * y - A.d * x) / det;
}

}  // namespace cwarp
