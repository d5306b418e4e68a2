// The math of cwarp::warp_points, written once: where a source point lands in
// the output of local_warp with the same parameters.
//
// local_warp samples output position p at s = theta (p - D(p)), with the warp
// field D(p) = sum_k w_k(p) d_k (csrc/warp_math.h). A source point s lands at
// every p with that sampling position: q = theta^-1 s, then p - D(p) = q. The
// translate warp folds near the rim its displacement points into (and
// overlapping warps can fold), so some q have three pre-images; the solver
// returns the one nearest q, the position the content moved least to (the
// contract is in docs/api.md, "warp_points").
//
// Candidates, each finished with Newton's method on F(p) = p - D(p) - q:
//   - q itself as the start;
//   - for each warp k, the first sign change of G_k(t) = <F(q + t d_k), d_k>
//     over t >= 0, bisected. Under one warp F is parallel to d_k and
//     G_k(t) = (t - w_k(q + t d_k)) |d_k|^2, so its first root is the
//     pre-image nearest q; where several warps act on a point the candidates
//     are still exact pre-images, and the nearest of those found is returned.
// Where several warps overlap, no candidate may converge (Newton's method
// stalls on a fold); then a fallback grid of starts covering every reachable
// pre-image (|p - q| <= sum_j |d_j|) gives the kPointGridStarts starts of
// smallest residual, in order, and the nearest of those that converge wins.
// A point for which that fails too comes out NaN.
//
// The functions take plain scalars and are C10_HOST_DEVICE, as warp_math.h's;
// cwarp/ops/warp_points/reference.py mirrors them step for step, with the same
// constants, in PyTorch.
#pragma once

#include <c10/macros/Macros.h>

#include <limits>

#include "warp_math.h"

namespace cwarp {

// The most warps per image: a point's work grows as K^2 (each warp's scan
// evaluates every warp at each sample). cwarp/_constants.py's
// WARP_POINTS_MAX_WARPS is the same number.
constexpr int kPointMaxWarps = 64;
// Samples per unit of t in the scan of a warp for a first root, and their cap.
constexpr int kPointScanSteps = 32;
constexpr int kPointScanSamples = 256;
// Halvings of the bracketing interval; Newton's method finishes the root.
constexpr int kPointBisectSteps = 24;
// The fallback grid: kPointGridSide^2 starts, the kPointGridStarts best tried.
constexpr int kPointGridSide = 17;
constexpr int kPointGridStarts = 8;
// Newton iterations per candidate, and step halvings per iteration.
constexpr int kPointNewtonSteps = 30;
constexpr int kPointBacktrackSteps = 12;
// |p - D(p) - q| below which a candidate is a pre-image (normalized units:
// the image spans 2).
constexpr double kPointResidualTol = 1e-13;

// D(p) and its Jacobian dD/dp (jxy = d D_x / d p_y).
template <typename T>
struct WarpDisplacement {
  T x, y, jxx, jxy, jyx, jyy;
};

// `prm` holds K rows (cx, cy, r, dx, dy).
template <typename T>
C10_HOST_DEVICE inline WarpDisplacement<T> warp_displacement(WarpKind kind, const T* prm, int K, T px, T py) {
  WarpDisplacement<T> D{T(0), T(0), T(0), T(0), T(0), T(0)};
  for (int k = 0; k < K; ++k) {
    const T* row = prm + 5 * k;
    const T ex = px - row[0], ey = py - row[1];
    const T r = row[2], dx = row[3], dy = row[4];
    T slope;
    const T w = warp_weight_slope(kind, ex * ex + ey * ey, r * r, dx * dx + dy * dy, &slope);
    // grad w = dw/drho2 * 2 (p - c)
    const T gx = T(2) * slope * ex, gy = T(2) * slope * ey;
    D.x += w * dx;
    D.y += w * dy;
    D.jxx += dx * gx;
    D.jxy += dx * gy;
    D.jyx += dy * gx;
    D.jyy += dy * gy;
  }
  return D;
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE bool is_finite_value(T x) {
  return x - x == T(0);  // false for NaN and for the infinities (inf - inf is NaN)
}

// Newton's method on F(p) = p - D(p) - q from (*px, *py); each step is halved
// until |F| decreases. True when |F| <= kPointResidualTol at the end; (*px,
// *py) then holds the pre-image.
template <typename T>
C10_HOST_DEVICE inline bool newton_preimage(WarpKind kind, const T* prm, int K, T qx, T qy, T* px, T* py) {
  const T tol2 = T(kPointResidualTol) * T(kPointResidualTol);
  WarpDisplacement<T> D = warp_displacement(kind, prm, K, *px, *py);
  T fx = *px - D.x - qx, fy = *py - D.y - qy;
  T res2 = fx * fx + fy * fy;
  for (int it = 0; it < kPointNewtonSteps && !(res2 <= tol2); ++it) {
    // J = I - dD/dp; the step solves J s = F.
    const T a = T(1) - D.jxx, b = -D.jxy, c = -D.jyx, d = T(1) - D.jyy;
    const T det = a * d - b * c;
    const T sx = (d * fx - b * fy) / det, sy = (a * fy - c * fx) / det;
    if (!(is_finite_value(sx) && is_finite_value(sy))) return false;
    bool moved = false;
    T step = T(1);
    for (int halving = 0; halving < kPointBacktrackSteps && !moved; ++halving, step *= T(0.5)) {
      const T nx = *px - step * sx, ny = *py - step * sy;
      const WarpDisplacement<T> nD = warp_displacement(kind, prm, K, nx, ny);
      const T nfx = nx - nD.x - qx, nfy = ny - nD.y - qy;
      const T nres2 = nfx * nfx + nfy * nfy;
      if (nres2 < res2) {
        *px = nx;
        *py = ny;
        D = nD;
        fx = nfx;
        fy = nfy;
        res2 = nres2;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return res2 <= tol2;
}

// G_k(t) = <F(q + t d), d> for warp k's displacement d.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T scan_value(WarpKind kind, const T* prm, int K, T qx, T qy, T dx, T dy, T t) {
  const T x = qx + t * dx, y = qy + t * dy;
  const WarpDisplacement<T> D = warp_displacement(kind, prm, K, x, y);
  return (x - D.x - qx) * dx + (y - D.y - qy) * dy;
}

// Upper end T_k of warp k's scan. The weights lie in [0, 1], so |D(p)| is at
// most S = sum_j |d_j| and G_k(t) >= t |d_k|^2 - S |d_k| > 0 beyond
// t = S / |d_k|: every root of G_k in t >= 0 lies below T_k = S / |d_k| (1
// for a lone warp). 0 for a warp that cannot move q: no displacement, or a
// translate warp whose disc the segment q + t d_k, t in [0, T_k], misses
// (the Gaussian weight is nowhere 0).
template <typename T>
C10_HOST_DEVICE inline T warp_scan_length(WarpKind kind, const T* prm, int K, int k, T qx, T qy) {
  const T* row = prm + 5 * k;
  const T dx = row[3], dy = row[4];
  const T m2 = dx * dx + dy * dy;
  if (!(m2 > T(0))) return T(0);
  T reach = T(0);
  for (int j = 0; j < K; ++j) reach += CWARP_SQRT(prm[5 * j + 3] * prm[5 * j + 3] + prm[5 * j + 4] * prm[5 * j + 4]);
  const T length = reach / CWARP_SQRT(m2);
  if (kind != WarpKind::Translate) return length;
  // The point of the segment nearest the centre.
  T t = ((row[0] - qx) * dx + (row[1] - qy) * dy) / m2;
  t = t < T(0) ? T(0) : (t > length ? length : t);
  const T ex = qx + t * dx - row[0], ey = qy + t * dy - row[1];
  return ex * ex + ey * ey < row[2] * row[2] ? length : T(0);
}

// Samples of the scan over [0, length]: kPointScanSteps per unit of t, at most kPointScanSamples.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE int warp_scan_samples(T length) {
  const T n = CWARP_CEIL(length * T(kPointScanSteps));
  return n < T(1) ? 1 : (n > T(kPointScanSamples) ? kPointScanSamples : static_cast<int>(n));
}

// The first root of G_k on [0, length]: the first sign change over
// warp_scan_samples(length) samples, bisected. False when G_k keeps its sign.
template <typename T>
C10_HOST_DEVICE inline bool first_root_along_warp(WarpKind kind, const T* prm, int K, int k, T length, T qx, T qy,
                                                  T* px, T* py) {
  const T dx = prm[5 * k + 3], dy = prm[5 * k + 4];
  const int samples = warp_scan_samples(length);
  T t0 = T(0);
  const bool neg0 = scan_value(kind, prm, K, qx, qy, dx, dy, t0) < T(0);
  for (int i = 1; i <= samples; ++i) {
    T t1 = length * T(i) / T(samples);
    if ((scan_value(kind, prm, K, qx, qy, dx, dy, t1) < T(0)) != neg0) {
      for (int j = 0; j < kPointBisectSteps; ++j) {
        const T mid = T(0.5) * (t0 + t1);
        if ((scan_value(kind, prm, K, qx, qy, dx, dy, mid) < T(0)) == neg0) {
          t0 = mid;
        } else {
          t1 = mid;
        }
      }
      const T t = T(0.5) * (t0 + t1);
      *px = qx + t * dx;
      *py = qy + t * dy;
      return true;
    }
    t0 = t1;
  }
  return false;
}

// The fallback: the grid's kPointGridStarts starts of smallest |F| (the
// earlier grid point first among equals), each finished with Newton's method;
// the nearest converged one, or false.
template <typename T>
C10_HOST_DEVICE inline bool grid_preimage(WarpKind kind, const T* prm, int K, T qx, T qy, T* out_x, T* out_y) {
  T reach = T(0);
  for (int j = 0; j < K; ++j) reach += CWARP_SQRT(prm[5 * j + 3] * prm[5 * j + 3] + prm[5 * j + 4] * prm[5 * j + 4]);
  T best_res[kPointGridStarts];
  int best_idx[kPointGridStarts];
  int kept = 0;
  for (int i = 0; i < kPointGridSide * kPointGridSide; ++i) {
    const T x = qx + reach * (T(2) * T(i % kPointGridSide) / T(kPointGridSide - 1) - T(1));
    const T y = qy + reach * (T(2) * T(i / kPointGridSide) / T(kPointGridSide - 1) - T(1));
    const WarpDisplacement<T> D = warp_displacement(kind, prm, K, x, y);
    const T fx = x - D.x - qx, fy = y - D.y - qy;
    const T res2 = fx * fx + fy * fy;
    if (!(res2 == res2)) continue;
    // Insertion into the sorted list of the best starts.
    int pos = kept < kPointGridStarts ? kept : kPointGridStarts;
    while (pos > 0 && res2 < best_res[pos - 1]) --pos;
    if (pos >= kPointGridStarts) continue;
    for (int j = (kept < kPointGridStarts ? kept : kPointGridStarts - 1); j > pos; --j) {
      best_res[j] = best_res[j - 1];
      best_idx[j] = best_idx[j - 1];
    }
    best_res[pos] = res2;
    best_idx[pos] = i;
    if (kept < kPointGridStarts) ++kept;
  }
  bool found = false;
  T best_d2 = std::numeric_limits<T>::infinity();
  for (int s = 0; s < kept; ++s) {
    const int i = best_idx[s];
    T px = qx + reach * (T(2) * T(i % kPointGridSide) / T(kPointGridSide - 1) - T(1));
    T py = qy + reach * (T(2) * T(i / kPointGridSide) / T(kPointGridSide - 1) - T(1));
    if (!newton_preimage(kind, prm, K, qx, qy, &px, &py)) continue;
    const T d2 = (px - qx) * (px - qx) + (py - qy) * (py - qy);
    if (d2 < best_d2) {
      *out_x = px;
      *out_y = py;
      best_d2 = d2;
      found = true;
    }
  }
  return found;
}

// The pre-image nearest q among the candidates (see the top of this file),
// or NaN when none converges (and for a non-finite q).
template <typename T>
C10_HOST_DEVICE inline void solve_preimage(WarpKind kind, const T* prm, int K, T qx, T qy, T* out_x, T* out_y) {
  T best_x = std::numeric_limits<T>::quiet_NaN(), best_y = best_x;
  T best_d2 = std::numeric_limits<T>::infinity();
  T px = qx, py = qy;
  if (newton_preimage(kind, prm, K, qx, qy, &px, &py)) {
    best_x = px;
    best_y = py;
    best_d2 = (px - qx) * (px - qx) + (py - qy) * (py - qy);
  }
  for (int k = 0; k < K; ++k) {
    const T length = warp_scan_length(kind, prm, K, k, qx, qy);
    if (!(length > T(0))) continue;
    if (!first_root_along_warp(kind, prm, K, k, length, qx, qy, &px, &py)) continue;
    if (!newton_preimage(kind, prm, K, qx, qy, &px, &py)) continue;
    const T d2 = (px - qx) * (px - qx) + (py - qy) * (py - qy);
    if (d2 < best_d2) {
      best_x = px;
      best_y = py;
      best_d2 = d2;
    }
  }
  if (!(best_d2 < std::numeric_limits<T>::infinity()) && is_finite_value(qx) && is_finite_value(qy)) {
    grid_preimage(kind, prm, K, qx, qy, &best_x, &best_y);
  }
  *out_x = best_x;
  *out_y = best_y;
}

}  // namespace cwarp
