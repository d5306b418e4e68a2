// cwarp::local_warp on the CPU: forward (floating or uint8 images) and backward
// (floating images).
//
// Work is done one output row at a time. For a row, the warp field is
// computed into small per-thread buffers with loops over the row's pixels
// (the loops the compiler vectorizes), then the image is gathered (forward) or
// scattered into (backward) using the corner offsets and weights of that row.
// No grid tensor is ever built: beyond its output, the forward allocates
// O(threads x Wo) scratch.
//
// Speed without -march=native: the row kernels are compiled for AVX-512,
// AVX2 and baseline x86-64 (CWARP_CPU_MULTIVERSION) and the loader picks one.
//
// Determinism: the backward runs one image per task, so each thread owns its
// slice of every gradient and sums in a fixed order. No atomics; the result
// does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#define CWARP_PAIR_LOADS 1
#else
#define CWARP_PAIR_LOADS 0
#endif
// The x86-64-v3 two-pixel uint8 path needs GCC / clang's target attribute
// and runtime CPU check, like CWARP_CPU_MULTIVERSION.
#if CWARP_PAIR_LOADS && defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(CWARP_NO_MULTIVERSION)
#define CWARP_V3_PAIRS 1
#else
#define CWARP_V3_PAIRS 0
#endif

#include "checks.h"
#include "cwarp.h"
#include "host_utils.h"
#include "warp_math.h"

namespace cwarp {
namespace cpu {

struct WarpConfig {
  int64_t C, H, W, Ho, Wo, K;
  WarpKind kind;
  Padding padding;
  bool align_corners;
};

// Element strides of a tensor indexed (B, C, H, W).
struct Strides {
  int64_t b, c, h, w;
  explicit Strides(const at::Tensor& t) : b(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
};

template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* in;
  scalar_t* out;
  const compute_t<scalar_t>* params;  // (B, K, 5), contiguous
  const compute_t<scalar_t>* theta;   // (B, 6), contiguous, or null
  WarpConfig cfg;
  Strides in_s, out_s;
};

template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* grad_out;
  const scalar_t* in;
  at::opmath_type<scalar_t>* grad_in;  // same strides as `in`, or null
  const at::opmath_type<scalar_t>* params;
  const at::opmath_type<scalar_t>* theta;
  double* grad_params;  // (B, K, 5) accumulators, or null
  double* grad_theta;   // (B, 6) accumulators, or null
  WarpConfig cfg;
  Strides go_s, in_s;
};

// Validity bits of a pixel's four bilinear corners (RowScratch::mask).
constexpr int kCorner00 = 1, kCorner01 = 2, kCorner10 = 4, kCorner11 = 8, kAllCorners = 15;

// Per-thread buffers for one output row. A pixel's corners are addressed by
// one offset (its top-left corner, `base`) and the image's row and column
// strides, plus a 4-bit mask of the corners inside the image.
template <typename T, typename index_t>
struct RowScratch {
  std::vector<T> px, qx, qy, ix, iy, gmx, gmy, w00, w01, w10, w11, gsx, gsy;
  std::vector<index_t> base, mask;
  explicit RowScratch(int64_t n)
      : px(n), qx(n), qy(n), ix(n), iy(n), gmx(n), gmy(n), w00(n), w01(n), w10(n), w11(n), gsx(n),
        gsy(n), base(n), mask(n) {}
};

template <typename T>
inline Affine<T> load_affine(const T* theta, int64_t b) {
  if (theta == nullptr) return identity_affine<T>();
  const T* t = theta + 6 * b;
  return Affine<T>{t[0], t[1], t[2], t[3], t[4], t[5]};
}

// Columns [*j0, *j1) of an output row at height py that can fall inside the
// disc of a translate warp. Outside the disc translate_weight is exactly 0, so
// skipping those pixels changes no bit of the result; the range is padded by
// two pixels against rounding. Returns false when the row misses the disc:
// then r2 - |p - c|^2 <= r2 - ey2 <= 0 for every pixel (rounding is
// monotonic). Non-finite parameters take the whole row, so the NaN they make
// lands where the reference puts it.
template <typename T>
C10_ALWAYS_INLINE bool disc_columns(const T* w5, T py, int64_t wo, bool align_corners, int64_t* j0,
                                    int64_t* j1) {
  *j0 = 0;
  *j1 = wo;
  bool finite = true;
  for (int i = 0; i < 5; ++i) finite = finite && std::isfinite(w5[i]);
  if (!finite || wo <= 1) return true;
  const T ey = py - w5[1];
  const T h2 = w5[2] * w5[2] - ey * ey;
  if (!(h2 > T(0))) return false;
  const T half = std::sqrt(h2);
  // Inverse of base_coord: position -> fractional column.
  const T scale = align_corners ? T(wo - 1) / T(2) : T(wo) / T(2);
  const T shift = align_corners ? T(0) : T(-0.5);
  const T lo = (w5[0] - half + T(1)) * scale + shift - T(2);
  const T hi = (w5[0] + half + T(1)) * scale + shift + T(3);
  // Clamp in floating point before casting: a finite 1e30 must not overflow.
  *j0 = static_cast<int64_t>(std::floor(std::min(std::max(lo, T(0)), T(wo))));
  *j1 = static_cast<int64_t>(std::ceil(std::min(std::max(hi, T(0)), T(wo))));
  return *j0 < *j1;
}

// One warp's contribution q -= w(p) d over columns [j0, j1) of a row.
template <WarpKind KIND, typename T>
CWARP_CPU_MULTIVERSION void warp_loop(const T* __restrict px, T* __restrict qx, T* __restrict qy, T cx, T ey2,
                                      T r2, T m2, T dx, T dy, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    const T ex = px[j] - cx;
    const T w = warp_weight(KIND, ex * ex + ey2, r2, m2);
    qx[j] -= w * dx;
    qy[j] -= w * dy;
  }
}

// q = p - sum_k w_k(p) d_k for the row at height py.
template <typename T, typename index_t>
void warp_row(const WarpConfig& cfg, const T* prm, T py, RowScratch<T, index_t>& s) {
  const int64_t wo = cfg.Wo;
  std::copy(s.px.begin(), s.px.end(), s.qx.begin());
  std::fill(s.qy.begin(), s.qy.end(), py);
  for (int64_t k = 0; k < cfg.K; ++k) {
    const T* w5 = prm + 5 * k;
    const WarpConstants<T> c = warp_constants(w5[0], w5[1], w5[2], w5[3], w5[4]);
    const T ey = py - c.cy, ey2 = ey * ey;
    if (cfg.kind == WarpKind::Translate) {
      int64_t j0, j1;
      if (!disc_columns(w5, py, wo, cfg.align_corners, &j0, &j1)) continue;
      warp_loop<WarpKind::Translate>(s.px.data(), s.qx.data(), s.qy.data(), c.cx, ey2, c.r2, c.m2, c.dx, c.dy, j0,
                                     j1);
    } else {
      warp_loop<WarpKind::Gaussian>(s.px.data(), s.qx.data(), s.qy.data(), c.cx, ey2, c.r2, c.m2, c.dx, c.dy,
                                    int64_t(0), wo);
    }
  }
}

// Source coordinates and their derivatives for a row whose q is in the
// scratch. The padding mode is a template argument so that the selects of
// the chosen mode are all that is left in the loop. The loops take their
// arrays as __restrict parameters: that, not restrict locals, is what lets
// GCC vectorize them without aliasing checks. The derivatives are stored
// only when kGrad (the backward's coordinate gradients need them).
template <Padding P, bool kGrad, typename T>
CWARP_CPU_MULTIVERSION void source_loop(const Affine<T>& A_, int64_t W, int64_t H, bool ac,
                                        const T* __restrict qx, const T* __restrict qy, T* __restrict ix,
                                        T* __restrict iy, T* __restrict gmx, T* __restrict gmy, int64_t n) {
  const Affine<T> A = A_;
  for (int64_t j = 0; j < n; ++j) {
    T sx, sy, gx, gy;
    apply_affine(A, qx[j], qy[j], &sx, &sy);
    ix[j] = source_index(sx, W, P, ac, &gx);
    iy[j] = source_index(sy, H, P, ac, &gy);
    if (kGrad) {
      gmx[j] = gx;
      gmy[j] = gy;
    }
  }
}

template <Padding P, bool kGrad, typename T, typename index_t>
C10_ALWAYS_INLINE void source_row(const WarpConfig& cfg, const Affine<T>& A, RowScratch<T, index_t>& s) {
  source_loop<P, kGrad>(A, cfg.W, cfg.H, cfg.align_corners, s.qx.data(), s.qy.data(), s.ix.data(), s.iy.data(),
                 s.gmx.data(), s.gmy.data(), cfg.Wo);
}

// The four corners' weights, the offset of the top-left corner and the mask
// of the corners inside the image, for each pixel of the row. A corner outside
// contributes nothing, as in grid_sample.
// (A separate loop from source_loop: GCC 12 vectorizes each, not their fusion.)
template <typename T, typename index_t>
CWARP_CPU_MULTIVERSION void corners_loop(int64_t W, int64_t H, index_t sh, index_t sw, const T* __restrict ix,
                                         const T* __restrict iy, T* __restrict w00, T* __restrict w01,
                                         T* __restrict w10, T* __restrict w11, index_t* __restrict base,
                                         index_t* __restrict mask, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const Bilinear<index_t, T> b = bilinear<index_t>(ix[j], iy[j], W, H);
    w00[j] = b.wx0 * b.wy0;
    w01[j] = b.wx1 * b.wy0;
    w10[j] = b.wx0 * b.wy1;
    w11[j] = b.wx1 * b.wy1;
    base[j] = corner_base_offset(b, W, H, sh, sw);  // offsets_fit_int32 leaves room for the overhang
    mask[j] = index_t(b.vx0 & b.vy0) | (index_t(b.vx1 & b.vy0) << 1) | (index_t(b.vx0 & b.vy1) << 2) |
              (index_t(b.vx1 & b.vy1) << 3);
  }
}

template <typename T, typename index_t>
C10_ALWAYS_INLINE void corners_row(const WarpConfig& cfg, index_t sh, index_t sw, RowScratch<T, index_t>& s) {
  corners_loop(cfg.W, cfg.H, sh, sw, s.ix.data(), s.iy.data(), s.w00.data(), s.w01.data(), s.w10.data(),
               s.w11.data(), s.base.data(), s.mask.data(), cfg.Wo);
}

// A pixel's four corner values. All four inside (the mask is kAllCorners for
// all but the pixels at the image's edge) is the fast case: four plain loads
// from one offset. Otherwise a corner outside reads as 0 and is never loaded,
// so a NaN in the image cannot leak into a pixel whose corner lies outside
// (as multiplying by a zero weight would let it).
template <typename T>
struct Corners {
  T v00, v01, v10, v11;
};

template <typename T, typename scalar_t, typename index_t>
C10_ALWAYS_INLINE Corners<T> load_corners(const scalar_t* src, index_t o, index_t m, index_t sh, index_t sw) {
  if (C10_LIKELY(m == kAllCorners)) {
    return {static_cast<T>(src[o]), static_cast<T>(src[o + sw]), static_cast<T>(src[o + sh]),
            static_cast<T>(src[o + sh + sw])};
  }
  return {(m & kCorner00) ? static_cast<T>(src[o]) : T(0), (m & kCorner01) ? static_cast<T>(src[o + sw]) : T(0),
          (m & kCorner10) ? static_cast<T>(src[o + sh]) : T(0),
          (m & kCorner11) ? static_cast<T>(src[o + sh + sw]) : T(0)};
}

// out[c, j] for one pixel and all its channels.
template <int kC, typename T, typename scalar_t, typename index_t>
C10_ALWAYS_INLINE void gather_pixel(const scalar_t* src, index_t sc, index_t sh, index_t sw, int64_t nc,
                                    scalar_t* out, int64_t oc, T a, T b, T c, T d, index_t o, index_t m) {
  for (int64_t ch = 0; ch < (kC > 0 ? kC : nc); ++ch) {
    const Corners<T> v = load_corners<T>(src + ch * sc, o, m, sh, sw);
    out[ch * oc] = store_value<scalar_t>(v.v00 * a + v.v01 * b + v.v10 * c + v.v11 * d);
  }
}

#if CWARP_PAIR_LOADS
// [p[0], p[1], q[0], q[1]]: two corner pairs, one 64-bit load each.
C10_ALWAYS_INLINE __m128 load_two_pairs(const float* p, const float* q) {
  return _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(reinterpret_cast<const double*>(p)),
                                    reinterpret_cast<const double*>(q)));
}

// Bilinear samples of four pixels of one float plane whose columns are
// adjacent (column stride 1) and whose corners are all inside: a pixel's
// corners (x0, x0 + 1) are a 64-bit pair in row y0 and another in row y0 + 1,
// so 8 loads and 4 shuffles replace 16 scalar loads. The arithmetic is the
// scalar expression, lane-wise, in the same order (and contracted to FMAs in
// the same clones), so the result is bitwise that of gather_pixel.
template <typename index_t>
C10_ALWAYS_INLINE __m128 sample4_adjacent(const float* s, const index_t* o, index_t sh, __m128 a, __m128 b,
                                          __m128 c, __m128 d) {
  const __m128 t01 = load_two_pairs(s + o[0], s + o[1]), t23 = load_two_pairs(s + o[2], s + o[3]);
  const __m128 u01 = load_two_pairs(s + o[0] + sh, s + o[1] + sh);
  const __m128 u23 = load_two_pairs(s + o[2] + sh, s + o[3] + sh);
  const __m128 v00 = _mm_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0));
  const __m128 v01 = _mm_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1));
  const __m128 v10 = _mm_shuffle_ps(u01, u23, _MM_SHUFFLE(2, 0, 2, 0));
  const __m128 v11 = _mm_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 1, 3, 1));
  return v00 * a + v01 * b + v10 * c + v11 * d;
}

// The three channels of one pixel of a float image whose channels are
// adjacent (channels_last): a corner's values are one 4-float load, whose
// fourth lane (the next value in memory) is computed and thrown away. Same
// expression as gather_pixel, lane-wise, so the same bits.
template <typename index_t>
C10_ALWAYS_INLINE __m128 sample_rgb_adjacent(const float* s, index_t o, index_t sh, index_t sw, float a, float b,
                                             float c, float d) {
  const __m128 v00 = _mm_loadu_ps(s + o), v01 = _mm_loadu_ps(s + o + sw);
  const __m128 v10 = _mm_loadu_ps(s + o + sh), v11 = _mm_loadu_ps(s + o + sh + sw);
  return v00 * _mm_set1_ps(a) + v01 * _mm_set1_ps(b) + v10 * _mm_set1_ps(c) + v11 * _mm_set1_ps(d);
}

// Four bytes from p as four floats (SSE2 widening: the baseline clone has no
// pmovzx).
C10_ALWAYS_INLINE __m128 load_4_bytes(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  const __m128i zero = _mm_setzero_si128();
  return _mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(v), zero), zero));
}

// The uint8 twin of sample_rgb_adjacent: a corner's three channels (and the
// next byte) as one 32-bit load, the same float expression lane-wise, then
// round_to_uint8's clamp and rounding, lane-wise and in its order, so the
// bytes are those of gather_pixel. Returns the four bytes as one int.
template <typename index_t>
C10_ALWAYS_INLINE int32_t sample_rgb_adjacent_u8(const uint8_t* s, index_t o, index_t sh, index_t sw, float a,
                                                 float b, float c, float d) {
  const __m128 v00 = load_4_bytes(s + o), v01 = load_4_bytes(s + o + sw);
  const __m128 v10 = load_4_bytes(s + o + sh), v11 = load_4_bytes(s + o + sh + sw);
  const __m128 v = v00 * _mm_set1_ps(a) + v01 * _mm_set1_ps(b) + v10 * _mm_set1_ps(c) + v11 * _mm_set1_ps(d);
  const __m128 clamped = _mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(255.0f));
  const __m128 magic = _mm_set1_ps(8388608.0f);
  const __m128i r = _mm_cvttps_epi32((clamped + magic) - magic);
  const __m128i w16 = _mm_packs_epi32(r, r);
  return _mm_cvtsi128_si32(_mm_packus_epi16(w16, w16));
}

// The uint8 twin of sample4_adjacent: four pixels of one uint8 plane with
// adjacent columns, all corners inside. A pixel's corners (x0, x0 + 1) are
// one 16-bit load per row; widened, the four pairs of a row are four 32-bit
// lanes x0 | (x0 + 1) << 16, which a mask and a shift split into the two
// corner columns. Then gather_pixel's expression and round_to_uint8, lane-wise
// and in their order, so the same bytes. Returns the four bytes as one int.
template <typename index_t>
C10_ALWAYS_INLINE int32_t sample4_adjacent_u8(const uint8_t* s, const index_t* o, index_t sh, __m128 a, __m128 b,
                                              __m128 c, __m128 d) {
  const __m128i zero = _mm_setzero_si128(), low16 = _mm_set1_epi32(0xffff);
  auto pairs = [&](index_t row) {  // 32-bit lanes: [x0 | (x0 + 1) << 16] of pixels 0..3
    uint16_t p[4];
    for (int k = 0; k < 4; ++k) std::memcpy(&p[k], s + o[k] + row, sizeof(uint16_t));
    const int32_t lo = int32_t(p[0]) | (int32_t(p[1]) << 16), hi = int32_t(p[2]) | (int32_t(p[3]) << 16);
    return _mm_unpacklo_epi8(_mm_unpacklo_epi32(_mm_cvtsi32_si128(lo), _mm_cvtsi32_si128(hi)), zero);
  };
  const __m128i top = pairs(0), bottom = pairs(sh);
  const __m128 v00 = _mm_cvtepi32_ps(_mm_and_si128(top, low16)), v01 = _mm_cvtepi32_ps(_mm_srli_epi32(top, 16));
  const __m128 v10 = _mm_cvtepi32_ps(_mm_and_si128(bottom, low16));
  const __m128 v11 = _mm_cvtepi32_ps(_mm_srli_epi32(bottom, 16));
  const __m128 v = v00 * a + v01 * b + v10 * c + v11 * d;
  const __m128 clamped = _mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(255.0f));
  const __m128 magic = _mm_set1_ps(8388608.0f);
  const __m128i r = _mm_cvttps_epi32((clamped + magic) - magic);
  const __m128i w16 = _mm_packs_epi32(r, r);
  return _mm_cvtsi128_si32(_mm_packus_epi16(w16, w16));
}

#if CWARP_V3_PAIRS
// The x86-64-v3 (AVX2 + FMA) twin of gather_row's uint8 RGB loop: two pixels per 256-bit
// vector (pixel j in lanes 0-3, j + 1 in lanes 4-7), one pmovzxbd per corner
// pair. A separate function with its own target rather than a clone of
// gather_row, because the default clone cannot hold AVX2 intrinsics;
// gather_row calls it where the CPU runs x86-64-v3, which is where the
// loader picks the v3 or v4 clone, so its scalar edge pixels contract the
// same FMAs. Same expression and rounding as gather_pixel, lane-wise, so the
// same bytes. Returns the first pixel it left to the caller.
#define CWARP_TARGET_V3 __attribute__((target("arch=x86-64-v3")))

CWARP_TARGET_V3 C10_ALWAYS_INLINE __m256 load_4_bytes_pair(const uint8_t* p, const uint8_t* q) {
  int32_t a, b;
  std::memcpy(&a, p, sizeof(a));
  std::memcpy(&b, q, sizeof(b));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_insert_epi32(_mm_cvtsi32_si128(a), b, 1)));
}

// [w[0] x 4, w[1] x 4]
CWARP_TARGET_V3 C10_ALWAYS_INLINE __m256 pair_weights(const float* w) {
  const __m128 two = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w)));
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

template <typename index_t>
CWARP_TARGET_V3 int64_t gather_rgb_u8_v3(const uint8_t* __restrict src, index_t sh, index_t sw,
                                         uint8_t* __restrict dst, const float* __restrict w00,
                                         const float* __restrict w01, const float* __restrict w10,
                                         const float* __restrict w11, const index_t* __restrict base,
                                         const index_t* __restrict mask, int64_t n, int64_t max_off) {
  int64_t j = 0;
  const __m256 zero = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f), magic = _mm256_set1_ps(8388608.0f);
  for (; j + 2 < n; j += 2) {
    const index_t o0 = base[j], o1 = base[j + 1];
    if (C10_UNLIKELY((mask[j] & mask[j + 1]) != kAllCorners || o0 + sh + sw + 3 > max_off ||
                     o1 + sh + sw + 3 > max_off)) {
      for (int64_t k = j; k < j + 2; ++k) {
        gather_pixel<3, float>(src, index_t(1), sh, sw, 3, dst + 3 * k, 1, w00[k], w01[k], w10[k], w11[k], base[k],
                               mask[k]);
      }
      continue;
    }
    const __m256 v00 = load_4_bytes_pair(src + o0, src + o1);
    const __m256 v01 = load_4_bytes_pair(src + o0 + sw, src + o1 + sw);
    const __m256 v10 = load_4_bytes_pair(src + o0 + sh, src + o1 + sh);
    const __m256 v11 = load_4_bytes_pair(src + o0 + sh + sw, src + o1 + sh + sw);
    const __m256 v = v00 * pair_weights(w00 + j) + v01 * pair_weights(w01 + j) + v10 * pair_weights(w10 + j) +
                     v11 * pair_weights(w11 + j);
    const __m256 c = _mm256_min_ps(_mm256_max_ps(v, zero), hi);
    const __m256i r = _mm256_cvttps_epi32((c + magic) - magic);
    const __m256i w16 = _mm256_packs_epi32(r, r);           // per 128-bit lane
    const __m256i bytes = _mm256_packus_epi16(w16, w16);    // lane 0: pixel j, lane 1: pixel j + 1
    const int32_t p0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes));
    const int32_t p1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(bytes, 1));
    std::memcpy(dst + 3 * j, &p0, sizeof(p0));
    std::memcpy(dst + 3 * j + 3, &p1, sizeof(p1));  // after p0: its first byte is pixel j + 1's
  }
  return j;
}
#endif  // CWARP_V3_PAIRS
#endif

// out[c, j] = bilinear sample of channel c, for every pixel j of the row.
// Pixel-major whatever the layout: a pixel's offset, mask and weights are
// loaded once for all its channels. kC > 0 fixes the channel count at compile
// time (1 and 3, the common ones) so the channel loop unrolls; kC = 0 reads C.
// float and uint8 planes with adjacent columns (NCHW) take four pixels at a
// time with pair loads; 3-channel float and uint8 images with adjacent channels
// (channels_last) take a pixel's channels as one vector (uint8: two pixels
// per vector on x86-64-v3). `max_off` is the largest offset of the image:
// the vector loads stay at or below it. The rest is scalar on
// purpose: hardware gathers (AVX2 and AVX-512) are slower than the scalar
// loads on the CPUs this targets, and GCC's emulated ones slower still.
template <int kC, typename T, typename scalar_t, typename index_t>
CWARP_CPU_MULTIVERSION CWARP_NO_VECTORIZE void gather_row(
    const scalar_t* __restrict src, index_t sc, index_t sh, index_t sw, int64_t C, scalar_t* __restrict dst,
    int64_t oc, int64_t ow, const T* __restrict w00, const T* __restrict w01, const T* __restrict w10,
    const T* __restrict w11, const index_t* __restrict base, const index_t* __restrict mask, int64_t n,
    int64_t max_off) {
  int64_t j = 0;
#if CWARP_PAIR_LOADS
  if constexpr (std::is_same_v<scalar_t, float> && kC == 3) {
    if (sc == 1 && oc == 1 && ow == 3) {
      // The 4-lane store spills into pixel j + 1's first channel, which that
      // pixel then overwrites; the row's last pixel is stored by the scalar loop.
      for (; j + 1 < n; ++j) {
        const index_t o = base[j], m = mask[j];
        if (C10_LIKELY(m == kAllCorners && o + sh + sw + 3 <= max_off)) {
          _mm_storeu_ps(dst + 3 * j, sample_rgb_adjacent(src, o, sh, sw, w00[j], w01[j], w10[j], w11[j]));
        } else {
          gather_pixel<kC, T>(src, sc, sh, sw, C, dst + 3 * j, oc, w00[j], w01[j], w10[j], w11[j], o, m);
        }
      }
    }
  }
  if constexpr (std::is_same_v<scalar_t, uint8_t> && kC == 3) {
    if (sc == 1 && oc == 1 && ow == 3) {
#if CWARP_V3_PAIRS
      static const bool v3 = __builtin_cpu_supports("x86-64-v3");
      if (v3) j = gather_rgb_u8_v3(src, sh, sw, dst, w00, w01, w10, w11, base, mask, n, max_off);
#endif
      // As for float: the 4-byte store spills into pixel j + 1's first channel.
      for (; j + 1 < n; ++j) {
        const index_t o = base[j], m = mask[j];
        if (C10_LIKELY(m == kAllCorners && o + sh + sw + 3 <= max_off)) {
          const int32_t px = sample_rgb_adjacent_u8(src, o, sh, sw, w00[j], w01[j], w10[j], w11[j]);
          std::memcpy(dst + 3 * j, &px, sizeof(px));
        } else {
          gather_pixel<kC, T>(src, sc, sh, sw, C, dst + 3 * j, oc, w00[j], w01[j], w10[j], w11[j], o, m);
        }
      }
    }
  }
  if constexpr (std::is_same_v<scalar_t, uint8_t> || std::is_same_v<scalar_t, float>) {
    if (sw == 1 && ow == 1) {
      for (; j + 4 <= n; j += 4) {
        const index_t* m = mask + j;
        if (C10_UNLIKELY((m[0] & m[1] & m[2] & m[3]) != kAllCorners)) {  // the image's edge
          for (int64_t k = j; k < j + 4; ++k) {
            gather_pixel<kC, T>(src, sc, sh, sw, C, dst + k, oc, w00[k], w01[k], w10[k], w11[k], base[k], mask[k]);
          }
          continue;
        }
        const __m128 a = _mm_loadu_ps(w00 + j), b = _mm_loadu_ps(w01 + j), c = _mm_loadu_ps(w10 + j),
                     d = _mm_loadu_ps(w11 + j);
        for (int64_t ch = 0; ch < (kC > 0 ? kC : C); ++ch) {
          if constexpr (std::is_same_v<scalar_t, uint8_t>) {
            const int32_t px = sample4_adjacent_u8(src + ch * sc, base + j, sh, a, b, c, d);
            std::memcpy(dst + ch * oc + j, &px, sizeof(px));
          } else {
            _mm_storeu_ps(dst + ch * oc + j, sample4_adjacent(src + ch * sc, base + j, sh, a, b, c, d));
          }
        }
      }
    }
  }
#endif
  for (; j < n; ++j) {
    gather_pixel<kC, T>(src, sc, sh, sw, C, dst + j * ow, oc, w00[j], w01[j], w10[j], w11[j], base[j], mask[j]);
  }
}

template <typename T, typename scalar_t, typename index_t>
void gather_row_any_c(const WarpConfig& cfg, const scalar_t* in_b, const Strides& in_s, scalar_t* out_row,
                      int64_t oc, int64_t ow, const RowScratch<T, index_t>& s) {
  const index_t sc = static_cast<index_t>(in_s.c), sh = static_cast<index_t>(in_s.h),
                sw = static_cast<index_t>(in_s.w);
  const int64_t max_off = (cfg.C - 1) * in_s.c + (cfg.H - 1) * in_s.h + (cfg.W - 1) * in_s.w;
  auto run = [&](auto kc) {
    gather_row<decltype(kc)::value>(in_b, sc, sh, sw, cfg.C, out_row, oc, ow, s.w00.data(), s.w01.data(),
                                    s.w10.data(), s.w11.data(), s.base.data(), s.mask.data(), cfg.Wo, max_off);
  };
  if (cfg.C == 3) {
    run(std::integral_constant<int, 3>{});
  } else if (cfg.C == 1) {
    run(std::integral_constant<int, 1>{});
  } else {
    run(std::integral_constant<int, 0>{});
  }
}

// grad_image[c] += w * grad_out[c] at the row's four corners: the adjoint of
// gather_row, one channel plane at a time, pixels in order.
//
// Neighbouring pixels mostly share corners: pixel j's right corners are pixel
// j + 1's left ones when base[j + 1] == base[j] + 1. A plain read-modify-write
// would then chain every pixel to the previous one's store through memory
// (store-to-load forwarding, about twice the FMA's latency). Instead the two
// right corners stay in registers (`carry`) and the next pixel adds to them
// there; they are written back before any other access could read them. Each
// gradient element still receives the same additions in the same order, so
// the result is bitwise that of the plain loop. Scalar because a vectorized
// scatter-add would have to resolve pixels that share a corner.
template <typename T, typename scalar_t, typename index_t>
CWARP_CPU_MULTIVERSION CWARP_NO_VECTORIZE void scatter_plane(
    const scalar_t* __restrict go, int64_t gw, T* __restrict dst, index_t sh, index_t sw,
    const T* __restrict w00, const T* __restrict w01, const T* __restrict w10, const T* __restrict w11,
    const index_t* __restrict base, const index_t* __restrict mask, int64_t n) {
  bool carrying = false;
  index_t carry_at = 0;  // offset of the carried top corner; the bottom one is carry_at + sh
  T carry_top = T(0), carry_bottom = T(0);
#define CWARP_FLUSH_CARRY()               \
  if (carrying) {                         \
    dst[carry_at] = carry_top;            \
    dst[carry_at + sh] = carry_bottom;    \
    carrying = false;                     \
  }
  for (int64_t j = 0; j < n; ++j) {
    const T g = static_cast<T>(go[j * gw]);
    const index_t o = base[j], m = mask[j];
    if (C10_LIKELY(m == kAllCorners)) {
      T top, bottom;
      if (carrying && carry_at == o) {
        top = carry_top;
        bottom = carry_bottom;
      } else {
        CWARP_FLUSH_CARRY();
        top = dst[o];
        bottom = dst[o + sh];
      }
      dst[o] = top + w00[j] * g;
      dst[o + sh] = bottom + w10[j] * g;
      carry_top = dst[o + sw] + w01[j] * g;
      carry_bottom = dst[o + sh + sw] + w11[j] * g;
      carry_at = o + sw;
      carrying = true;
      continue;
    }
    CWARP_FLUSH_CARRY();
    if (m & kCorner00) dst[o] += w00[j] * g;
    if (m & kCorner01) dst[o + sw] += w01[j] * g;
    if (m & kCorner10) dst[o + sh] += w10[j] * g;
    if (m & kCorner11) dst[o + sh + sw] += w11[j] * g;
  }
  CWARP_FLUSH_CARRY();
#undef CWARP_FLUSH_CARRY
}

template <typename T, typename index_t>
void fill_px(const WarpConfig& cfg, RowScratch<T, index_t>& s) {
  for (int64_t j = 0; j < cfg.Wo; ++j) s.px[j] = base_coord<T>(j, cfg.Wo, cfg.align_corners);
}

// ----------------------------------------------------------------------------
// Forward
// ----------------------------------------------------------------------------

template <typename scalar_t, typename index_t, Padding P>
void forward_rows(const ForwardArgs<scalar_t>& a, int64_t row_begin, int64_t row_end) {
  using T = compute_t<scalar_t>;
  const WarpConfig& cfg = a.cfg;
  RowScratch<T, index_t> s(cfg.Wo);
  fill_px(cfg, s);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / cfg.Ho, i = row % cfg.Ho;
    warp_row(cfg, a.params + b * cfg.K * 5, base_coord<T>(i, cfg.Ho, cfg.align_corners), s);
    source_row<P, false>(cfg, load_affine(a.theta, b), s);
    corners_row(cfg, static_cast<index_t>(a.in_s.h), static_cast<index_t>(a.in_s.w), s);
    const scalar_t* in_b = a.in + b * a.in_s.b;
    scalar_t* out_row = a.out + b * a.out_s.b + i * a.out_s.h;
    gather_row_any_c(cfg, in_b, a.in_s, out_row, a.out_s.c, a.out_s.w, s);
  }
}

// ----------------------------------------------------------------------------
// Backward: one image per call.
// ----------------------------------------------------------------------------

template <typename scalar_t, typename index_t, Padding P>
void backward_image(const BackwardArgs<scalar_t>& a, int64_t b) {
  using T = at::opmath_type<scalar_t>;
  const WarpConfig& cfg = a.cfg;
  const bool need_coord = a.grad_params != nullptr || a.grad_theta != nullptr;
  RowScratch<T, index_t> s(cfg.Wo);
  fill_px(cfg, s);
  const T* prm = a.params + b * cfg.K * 5;
  const Affine<T> A = load_affine(a.theta, b);
  const index_t sc = static_cast<index_t>(a.in_s.c), sh = static_cast<index_t>(a.in_s.h),
                sw = static_cast<index_t>(a.in_s.w);
  const scalar_t* in_b = a.in + b * a.in_s.b;
  T* gin_b = a.grad_in ? a.grad_in + b * a.in_s.b : nullptr;
  const scalar_t* go_b = a.grad_out + b * a.go_s.b;
  double* gprm = a.grad_params ? a.grad_params + b * cfg.K * 5 : nullptr;
  double* gth = a.grad_theta ? a.grad_theta + b * 6 : nullptr;

  for (int64_t i = 0; i < cfg.Ho; ++i) {
    const T py = base_coord<T>(i, cfg.Ho, cfg.align_corners);
    warp_row(cfg, prm, py, s);
    if (need_coord) {
      source_row<P, true>(cfg, A, s);
    } else {
      source_row<P, false>(cfg, A, s);
    }
    corners_row(cfg, sh, sw, s);
    const scalar_t* go_row = go_b + i * a.go_s.h;
    if (gin_b != nullptr) {
      for (int64_t c = 0; c < cfg.C; ++c) {
        scatter_plane(go_row + c * a.go_s.c, a.go_s.w, gin_b + c * sc, sh, sw, s.w00.data(), s.w01.data(),
                      s.w10.data(), s.w11.data(), s.base.data(), s.mask.data(), cfg.Wo);
      }
    }
    if (!need_coord) continue;
    for (int64_t j = 0; j < cfg.Wo; ++j) {
      const index_t o = s.base[j], m = s.mask[j];
      const Bilinear<index_t, T> bl = bilinear<index_t>(s.ix[j], s.iy[j], cfg.W, cfg.H);
      T d_ix = T(0), d_iy = T(0);
      for (int64_t c = 0; c < cfg.C; ++c) {
        const T g = static_cast<T>(go_row[c * a.go_s.c + j * a.go_s.w]);
        const scalar_t* src = in_b + c * sc;
        const Corners<T> v = load_corners<T>(src, o, m, sh, sw);
        T gx, gy;
        bilinear_coord_grad(bl, v.v00, v.v01, v.v10, v.v11, &gx, &gy);
        d_ix += g * gx;
        d_iy += g * gy;
      }
      s.gsx[j] = d_ix * s.gmx[j];
      s.gsy[j] = d_iy * s.gmy[j];
    }

    if (gth != nullptr) {
      T acc[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
      for (int64_t j = 0; j < cfg.Wo; ++j) {
        acc[0] += s.gsx[j] * s.qx[j];
        acc[1] += s.gsx[j] * s.qy[j];
        acc[2] += s.gsx[j];
        acc[3] += s.gsy[j] * s.qx[j];
        acc[4] += s.gsy[j] * s.qy[j];
        acc[5] += s.gsy[j];
      }
      for (int t = 0; t < 6; ++t) gth[t] += static_cast<double>(acc[t]);
    }
    if (gprm != nullptr) {
      // dL/dq = A^T dL/ds, kept in gsx / gsy.
      for (int64_t j = 0; j < cfg.Wo; ++j) {
        const T gx = s.gsx[j], gy = s.gsy[j];
        s.gsx[j] = A.a * gx + A.d * gy;
        s.gsy[j] = A.b * gx + A.e * gy;
      }
      for (int64_t k = 0; k < cfg.K; ++k) {
        const T* w5 = prm + 5 * k;
        int64_t j0 = 0, j1 = cfg.Wo;
        if (cfg.kind == WarpKind::Translate && !disc_columns(w5, py, cfg.Wo, cfg.align_corners, &j0, &j1))
          continue;
        T acc[5] = {T(0), T(0), T(0), T(0), T(0)};
        const T ey = py - w5[1];
        for (int64_t j = j0; j < j1; ++j) {
          warp_param_grad(cfg.kind, s.px[j] - w5[0], ey, w5[2], w5[3], w5[4], s.gsx[j], s.gsy[j], acc);
        }
        for (int t = 0; t < 5; ++t) gprm[5 * k + t] += static_cast<double>(acc[t]);
      }
    }
  }
}

// ----------------------------------------------------------------------------
// Host side
// ----------------------------------------------------------------------------

constexpr const char* kFwd = "cwarp::local_warp";
constexpr const char* kBwd = "cwarp::local_warp_backward";

// Calls f(index_t{}, std::integral_constant<Padding, P>{}) for the runtime
// choices: the kernels are compiled for each (offset width, padding mode).
template <typename F>
void with_sampling_types(bool i32, Padding pad, F&& f) {
  auto with_pad = [&](auto index_tag) {
    switch (pad) {
      case Padding::Zeros:
        return f(index_tag, std::integral_constant<Padding, Padding::Zeros>{});
      case Padding::Border:
        return f(index_tag, std::integral_constant<Padding, Padding::Border>{});
      case Padding::Reflection:
        return f(index_tag, std::integral_constant<Padding, Padding::Reflection>{});
    }
  };
  if (i32) {
    with_pad(int32_t{});
  } else {
    with_pad(int64_t{});
  }
}

WarpConfig make_config(const at::Tensor& image, int64_t K, int64_t out_h, int64_t out_w, WarpKind kind,
                       Padding padding, bool align_corners) {
  return WarpConfig{image.size(1), image.size(2), image.size(3), out_h, out_w, K, kind, padding, align_corners};
}

at::Tensor local_warp_cpu(const at::Tensor& image, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                          int64_t out_h, int64_t out_w, c10::string_view kind, c10::string_view padding_mode,
                          bool align_corners) {
  check_local_warp_inputs(kFwd, image, params, theta, /*allow_uint8=*/true);
  check_out_size(kFwd, out_h, out_w);
  const WarpKind k = parse_kind(kFwd, kind);
  const Padding pad = parse_padding(kFwd, padding_mode);
  const int64_t B = image.size(0), C = image.size(1);
  at::Tensor out = at::empty({B, C, out_h, out_w}, image.options().memory_format(image.suggest_memory_format()));
  if (out.numel() == 0) return out;
  const bool has_theta = theta.has_value() && theta->defined();

  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, image.scalar_type(), "cwarp_local_warp_cpu",
                                  [&] {
    using T = compute_t<scalar_t>;
    const at::Tensor prm = as_opmath<T>(params);
    const at::Tensor th = has_theta ? as_opmath<T>(theta->reshape({B, 6})) : at::Tensor();
    ForwardArgs<scalar_t> args{image.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                               prm.const_data_ptr<T>(), has_theta ? th.const_data_ptr<T>() : nullptr,
                               make_config(image, params.size(1), out_h, out_w, k, pad, align_corners),
                               Strides(image), Strides(out)};
    // About 32k output values per task keeps the scheduling cost negligible.
    const int64_t grain = std::max<int64_t>(1, 32768 / (out_w * C));
    const bool i32 = offsets_fit_int32(image);
    at::parallel_for(0, B * out_h, grain, [&](int64_t begin, int64_t end) {
      with_sampling_types(i32, pad, [&](auto index_tag, auto pad_tag) {
        forward_rows<scalar_t, decltype(index_tag), decltype(pad_tag)::value>(args, begin, end);
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_warp_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& image_in, const at::Tensor& params,
    const c10::optional<at::Tensor>& theta, c10::string_view kind, c10::string_view padding_mode,
    bool align_corners, std::array<bool, 3> output_mask) {
  check_local_warp_backward_inputs(kBwd, grad_out, image_in, params, theta);
  const WarpKind k = parse_kind(kBwd, kind);
  const Padding pad = parse_padding(kBwd, padding_mode);
  const bool has_theta = theta.has_value() && theta->defined();
  const int64_t B = image_in.size(0), K = params.size(1);
  const int64_t out_h = grad_out.size(2), out_w = grad_out.size(3);

  // The image gradient shares the image's strides, so one offset addresses
  // both: make the image dense in its own memory format first.
  const at::Tensor image = image_in.contiguous(image_in.suggest_memory_format());
  const at::ScalarType opmath = at::toOpMathType(image.scalar_type());
  at::Tensor grad_image_acc;
  if (output_mask[0]) grad_image_acc = at::zeros_like(image, image.options().dtype(opmath));
  at::Tensor grad_params_acc, grad_theta_acc;
  if (output_mask[1]) grad_params_acc = at::zeros({B, K, 5}, params.options().dtype(at::kDouble));
  const bool want_theta = output_mask[2] && has_theta;
  if (want_theta) grad_theta_acc = at::zeros({B, 6}, params.options().dtype(at::kDouble));

  if (B > 0 && image.size(1) > 0 && (output_mask[0] || output_mask[1] || want_theta)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "cwarp_local_warp_backward_cpu", [&] {
      using T = at::opmath_type<scalar_t>;
      const at::Tensor prm = as_opmath<T>(params);
      const at::Tensor th = has_theta ? as_opmath<T>(theta->reshape({B, 6})) : at::Tensor();
      BackwardArgs<scalar_t> args{
          grad_out.const_data_ptr<scalar_t>(),
          image.const_data_ptr<scalar_t>(),
          output_mask[0] ? grad_image_acc.mutable_data_ptr<T>() : nullptr,
          prm.const_data_ptr<T>(),
          has_theta ? th.const_data_ptr<T>() : nullptr,
          output_mask[1] ? grad_params_acc.mutable_data_ptr<double>() : nullptr,
          want_theta ? grad_theta_acc.mutable_data_ptr<double>() : nullptr,
          make_config(image, K, out_h, out_w, k, pad, align_corners),
          Strides(grad_out),
          Strides(image)};
      const bool i32 = offsets_fit_int32(image);
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          with_sampling_types(i32, pad, [&](auto index_tag, auto pad_tag) {
            backward_image<scalar_t, decltype(index_tag), decltype(pad_tag)::value>(args, b);
          });
        }
      });
    });
  }

  at::Tensor grad_image = output_mask[0] ? grad_image_acc.to(image.scalar_type()) : at::empty({0}, image.options());
  at::Tensor grad_params = output_mask[1] ? grad_params_acc.to(params.scalar_type()) : at::empty({0}, params.options());
  at::Tensor grad_theta = want_theta ? grad_theta_acc.to(theta->scalar_type()).view({B, 2, 3})
                                     : at::empty({0}, params.options());
  return {grad_image, grad_params, grad_theta};
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(cwarp, CPU, m) {
  m.impl("local_warp", &cpu::local_warp_cpu);
  m.impl("local_warp_backward", &cpu::local_warp_backward_cpu);
}

}  // namespace cwarp
