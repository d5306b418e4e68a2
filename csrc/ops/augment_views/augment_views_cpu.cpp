// cwarp::augment_views on the CPU: every view of a batch in one pass.
//
// Output (B, V, C, S, S). A task is output row i of every view of image b;
// at::parallel_for spreads the B * S tasks over the threads.
// For a row, the loops below run over its S pixels, each doing one job, so
// the compiler can vectorize them:
//   1. q = p - sum_k w_k(p) d_k          (warp_math.h weights)
//   2. s = theta q, padding, the four bilinear corners (warp_math.h)
//   3. gather the corners of every channel straight from the uint8 / float
//      source into float row buffers in [0, 1]
//   4. brightness, contrast, saturation, hue, grayscale (color_math.h)
//   5. normalize and store, float32 or bfloat16.
// The source is read once per output pixel (four corners) and the output is
// written once; nothing larger than a few rows of scratch is allocated.
//
// Speed without -march=native: CWARP_CPU_MULTIVERSION compiles the row
// functions for AVX-512, AVX2 and baseline x86-64; the loader picks one.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "host_utils.h"
#include "color_math.h"
#include "cwarp.h"
#include "warp_math.h"

namespace cwarp {
namespace cpu {
// Named (not anonymous) so that the multiversioned functions keep external
// linkage for their ifunc resolvers, and apart from warp_kernel.cpp's names.
namespace augment {

constexpr const char* kOp = "cwarp::augment_views";

struct AugmentConfig {
  int64_t B, V, C, H, W, S, K;
  WarpKind kind;
  Padding padding;
};

struct AugmentArgs {
  const void* src;
  void* out;
  const float* theta;      // (B, V, 6)
  const float* warps;      // (B, V, K, 5)
  const float* color;      // (B, V, 5)
  const float* mean_gray;  // (B,), from mean_gray_prepass
  float mean[3], std[3];
  int64_t sb, sc, sh, sw;  // source strides (elements)
  AugmentConfig cfg;
};

template <typename index_t>
struct RowScratch {
  std::vector<float> px, qx, qy, ix, iy, w00, w01, w10, w11, ch0, ch1, ch2;
  std::vector<index_t> o00, o01, o10, o11;
  explicit RowScratch(int64_t n)
      : px(n), qx(n), qy(n), ix(n), iy(n), w00(n), w01(n), w10(n), w11(n), ch0(n), ch1(n), ch2(n), o00(n),
        o01(n), o10(n), o11(n) {}
  float* channel(int64_t c) { return c == 0 ? ch0.data() : (c == 1 ? ch1.data() : ch2.data()); }
};

// Step 1. Warps with zero displacement change nothing (w * 0 = 0 for the
// finite weights of r > 0), so they are skipped: that is how views without
// local warps (pos1, pos2) pad their rows. A translate warp whose disc the
// row misses has w = 0 on the whole row (rho2 >= ey^2 >= r^2).
template <typename index_t>
CWARP_CPU_MULTIVERSION void warp_row(const AugmentConfig& cfg, const float* prm, float py, int64_t j0, int64_t n,
                                     RowScratch<index_t>& s) {
  float* __restrict qx = s.qx.data() + j0;
  float* __restrict qy = s.qy.data() + j0;
  const float* __restrict px = s.px.data() + j0;
  for (int64_t j = 0; j < n; ++j) {
    qx[j] = px[j];
    qy[j] = py;
  }
  for (int64_t k = 0; k < cfg.K; ++k) {
    const float* w5 = prm + 5 * k;
    const float cx = w5[0], cy = w5[1], r = w5[2], dx = w5[3], dy = w5[4];
    if (dx == 0.f && dy == 0.f) continue;
    const float r2 = r * r, m2 = dx * dx + dy * dy;
    const float ey = py - cy, ey2 = ey * ey;
    if (cfg.kind == WarpKind::Translate) {
      if (!(ey2 < r2) && std::isfinite(ey2) && std::isfinite(r2)) continue;
      for (int64_t j = 0; j < n; ++j) {
        const float ex = px[j] - cx;
        const float w = translate_weight(ex * ex + ey2, r2, m2);
        qx[j] -= w * dx;
        qy[j] -= w * dy;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const float ex = px[j] - cx;
        const float w = gaussian_weight(ex * ex + ey2, r2);
        qx[j] -= w * dx;
        qy[j] -= w * dy;
      }
    }
  }
}

// Step 2. A corner outside the source gets weight 0 and offset `none`, 0 (a
// valid address), so the gather below needs no branch: it reads as 0, as in
// grid_sample. That holds while the pixel at offset 0 is finite; for an image
// where it is not (NaN * 0 is NaN), `none` is -1 and the gather masks those
// corners instead (gather_row's `masked`). A NaN position keeps its NaN
// weights (masked_corner_weight), so that it samples NaN.
// Two loops, source coordinates then corners, each taking its arrays as
// __restrict parameters: GCC vectorizes each of them, not their fusion (the
// fused loop ran scalar and cost more than the gather). The padding mode is a
// template argument so that, once source_index is inlined, its branches fold
// away and the loop runs branch-free in vector registers.
template <Padding P>
CWARP_CPU_MULTIVERSION void source_loop(const Affine<float>& A_, int64_t W, int64_t H, const float* __restrict qx,
                                        const float* __restrict qy, float* __restrict ix, float* __restrict iy,
                                        int64_t n) {
  const Affine<float> A = A_;
  for (int64_t j = 0; j < n; ++j) {
    float sx, sy, gx, gy;
    apply_affine(A, qx[j], qy[j], &sx, &sy);
    ix[j] = source_index(sx, W, P, false, &gx);
    iy[j] = source_index(sy, H, P, false, &gy);
  }
}

template <typename index_t>
CWARP_CPU_MULTIVERSION void corners_loop(int64_t W, int64_t H, index_t sh, index_t sw, index_t none,
                                         const float* __restrict ix, const float* __restrict iy,
                                         float* __restrict w00, float* __restrict w01, float* __restrict w10,
                                         float* __restrict w11, index_t* __restrict o00, index_t* __restrict o01,
                                         index_t* __restrict o10, index_t* __restrict o11, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const Bilinear<index_t, float> b = bilinear<index_t>(ix[j], iy[j], W, H);
    // `&` rather than `&&`: no short-circuit branches in the vectorized loop.
    const bool v00 = b.vx0 & b.vy0, v01 = b.vx1 & b.vy0, v10 = b.vx0 & b.vy1, v11 = b.vx1 & b.vy1;
    w00[j] = masked_corner_weight(v00, b.wx0 * b.wy0);
    w01[j] = masked_corner_weight(v01, b.wx1 * b.wy0);
    w10[j] = masked_corner_weight(v10, b.wx0 * b.wy1);
    w11[j] = masked_corner_weight(v11, b.wx1 * b.wy1);
    const index_t base = corner_base_offset(b, W, H, sh, sw);
    o00[j] = v00 ? base : none;
    o01[j] = v01 ? base + sw : none;
    o10[j] = v10 ? base + sh : none;
    o11[j] = v11 ? base + sh + sw : none;
  }
}

template <Padding P, typename index_t>
void corners_row(const AugmentConfig& cfg, const Affine<float>& A, index_t sh, index_t sw, index_t none, int64_t j0,
                 int64_t n, RowScratch<index_t>& s) {
  source_loop<P>(A, cfg.W, cfg.H, s.qx.data() + j0, s.qy.data() + j0, s.ix.data() + j0, s.iy.data() + j0, n);
  corners_loop(cfg.W, cfg.H, sh, sw, none, s.ix.data() + j0, s.iy.data() + j0, s.w00.data() + j0, s.w01.data() + j0,
               s.w10.data() + j0, s.w11.data() + j0, s.o00.data() + j0, s.o01.data() + j0, s.o10.data() + j0,
               s.o11.data() + j0, n);
}

template <typename index_t>
void corners_row_any(const AugmentConfig& cfg, const Affine<float>& A, index_t sh, index_t sw, index_t none,
                     int64_t j0, int64_t n, RowScratch<index_t>& s) {
  switch (cfg.padding) {
    case Padding::Zeros: return corners_row<Padding::Zeros>(cfg, A, sh, sw, none, j0, n, s);
    case Padding::Border: return corners_row<Padding::Border>(cfg, A, sh, sw, none, j0, n, s);
    case Padding::Reflection: return corners_row<Padding::Reflection>(cfg, A, sh, sw, none, j0, n, s);
  }
}

// Step 3. uint8 values become [0, 1] by one multiply after the bilinear sum
// (the sum is linear, so this equals sampling x / 255). The clamp to [0, 1]
// is a no-op for valid images; it saturates float input outside [0, 1].
template <typename src_t, typename index_t>
CWARP_CPU_MULTIVERSION void gather_row(const AugmentConfig& cfg, const src_t* src_b, int64_t sc, float scale,
                                       bool masked, int64_t j0, int64_t n, RowScratch<index_t>& s) {
  const float* __restrict w00 = s.w00.data() + j0;
  const float* __restrict w01 = s.w01.data() + j0;
  const float* __restrict w10 = s.w10.data() + j0;
  const float* __restrict w11 = s.w11.data() + j0;
  const index_t* __restrict o00 = s.o00.data() + j0;
  const index_t* __restrict o01 = s.o01.data() + j0;
  const index_t* __restrict o10 = s.o10.data() + j0;
  const index_t* __restrict o11 = s.o11.data() + j0;
  for (int64_t c = 0; c < cfg.C; ++c) {
    const src_t* __restrict src = src_b + c * sc;
    float* __restrict dst = s.channel(c) + j0;
    if (masked) {  // offsets of -1 mark the corners outside the source
      for (int64_t j = 0; j < n; ++j) {
        const float v = corner_value<float>(src, o00[j]) * w00[j] + corner_value<float>(src, o01[j]) * w01[j] +
                        corner_value<float>(src, o10[j]) * w10[j] + corner_value<float>(src, o11[j]) * w11[j];
        dst[j] = clamp01(v * scale);
      }
      continue;
    }
    for (int64_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(src[o00[j]]) * w00[j] + static_cast<float>(src[o01[j]]) * w01[j] +
                      static_cast<float>(src[o10[j]]) * w10[j] + static_cast<float>(src[o11[j]]) * w11[j];
      dst[j] = clamp01(v * scale);
    }
  }
}

// Step 4, one op per loop; ops whose factor is the identity are skipped
// (they would change no bit: x * 1 and 1 * x + 0 * m are x).
CWARP_CPU_MULTIVERSION void color_row(int64_t n, int64_t C, const float* col, float mean_gray, float* __restrict r,
                                      float* __restrict g, float* __restrict b) {
  const float fb = col[kBrightness], fc = col[kContrast], fs = col[kSaturation], hue = col[kHue];
  const bool gray = col[kGrayscale] != 0.f;
  float* chans[3] = {r, g, b};
  if (fb != 1.f) {
    for (int64_t c = 0; c < C; ++c) {
      float* __restrict x = chans[c];
      for (int64_t j = 0; j < n; ++j) x[j] = adjust_brightness(x[j], fb);
    }
  }
  if (fc != 1.f) {
    const float m = contrast_mean(mean_gray, fb);
    for (int64_t c = 0; c < C; ++c) {
      float* __restrict x = chans[c];
      for (int64_t j = 0; j < n; ++j) x[j] = adjust_contrast(x[j], fc, m);
    }
  }
  if (C != 3) return;  // saturation, hue and grayscale leave one channel as it is (torchvision, PIL)
  if (fs != 1.f) {
    for (int64_t j = 0; j < n; ++j) adjust_saturation(&r[j], &g[j], &b[j], fs);
  }
  if (hue != 0.f) {
    for (int64_t j = 0; j < n; ++j) adjust_hue(&r[j], &g[j], &b[j], hue);
  }
  if (gray) {
    for (int64_t j = 0; j < n; ++j) to_grayscale(&r[j], &g[j], &b[j]);
  }
}

// Step 5.
template <typename out_t>
CWARP_CPU_MULTIVERSION void store_row(int64_t n, const float* __restrict x, float mean, float std,
                                      out_t* __restrict dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<out_t>(normalize_value(x[j], mean, std));
}

// Views that share a global transform. A view u "covers" view v of image b
// when u comes first, has v's theta and colour, and no active local warp
// (all of pos1 / pos2 are such views; every negative shares pos2's theta and
// colour). Then wherever v's own warps have weight 0, q = p exactly and v's
// pixel is u's pixel, bit for bit, so v copies u's row and renders only the
// columns its warps can move. Returns u, or -1.
int64_t covering_view(const AugmentArgs& a, int64_t b, int64_t v) {
  const AugmentConfig& cfg = a.cfg;
  const float* tv = a.theta + 6 * (b * cfg.V + v);
  const float* cv = a.color + 5 * (b * cfg.V + v);
  for (int64_t u = 0; u < v; ++u) {
    const int64_t bu = b * cfg.V + u;
    if (!std::equal(tv, tv + 6, a.theta + 6 * bu) || !std::equal(cv, cv + 5, a.color + 5 * bu)) continue;
    const float* w = a.warps + bu * cfg.K * 5;
    bool still = true;
    for (int64_t k = 0; k < cfg.K; ++k) still = still && w[5 * k + 3] == 0.f && w[5 * k + 4] == 0.f;
    if (still) return u;
  }
  return -1;
}

// Columns [*j0, *j1) of the row at height py where some active warp of
// `prm` can have a non-zero weight (empty when none). Translate weights are
// exactly 0 outside the disc; the range is padded by two pixels against
// rounding. Gaussian weights (and non-finite parameters) reach everywhere.
void active_columns(const AugmentConfig& cfg, const float* prm, float py, int64_t* j0, int64_t* j1) {
  const int64_t S = cfg.S;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (int64_t k = 0; k < cfg.K; ++k) {
    const float* w5 = prm + 5 * k;
    if (w5[3] == 0.f && w5[4] == 0.f) continue;
    bool finite = true;
    for (int t = 0; t < 5; ++t) finite = finite && std::isfinite(w5[t]);
    if (cfg.kind != WarpKind::Translate || !finite) {
      *j0 = 0;
      *j1 = S;
      return;
    }
    const float ey = py - w5[1];
    const float h2 = w5[2] * w5[2] - ey * ey;
    if (!(h2 > 0.f)) continue;
    const float half = std::sqrt(h2);
    lo = std::min(lo, w5[0] - half);
    hi = std::max(hi, w5[0] + half);
  }
  if (!(lo <= hi)) {
    *j0 = *j1 = 0;
    return;
  }
  // Inverse of base_coord (align_corners = False): position -> fractional column.
  const float flo = ((lo + 1.f) * S - 1.f) * 0.5f - 2.f;
  const float fhi = ((hi + 1.f) * S - 1.f) * 0.5f + 3.f;
  *j0 = static_cast<int64_t>(std::floor(std::min(std::max(flo, 0.f), static_cast<float>(S))));
  *j1 = static_cast<int64_t>(std::ceil(std::min(std::max(fhi, 0.f), static_cast<float>(S))));
}

// One task = row i of every view of image b, views in order, so a covering
// view's row is written before the views it covers read it.
template <typename src_t, typename out_t, typename index_t>
void render_rows(const AugmentArgs& a, int64_t begin, int64_t end) {
  const AugmentConfig& cfg = a.cfg;
  const int64_t S = cfg.S, C = cfg.C;
  RowScratch<index_t> s(S);
  for (int64_t j = 0; j < S; ++j) s.px[j] = base_coord<float>(j, S, false);
  const float scale = std::is_same<src_t, uint8_t>::value ? 1.f / 255.f : 1.f;
  out_t* out = static_cast<out_t*>(a.out);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / S, i = task % S;
    const src_t* src_b = static_cast<const src_t*>(a.src) + b * a.sb;
    // Step 2's address-0 stand-in is exact unless the image's first pixel is not finite.
    bool masked = false;
    for (int64_t c = 0; c < C; ++c) masked = masked || !std::isfinite(static_cast<float>(src_b[c * a.sc]));
    const index_t none = masked ? index_t(-1) : index_t(0);
    const float py = base_coord<float>(i, S, false);
    for (int64_t v = 0; v < cfg.V; ++v) {
      const int64_t bv = b * cfg.V + v;
      out_t* out_row = out + (bv * C * S + i) * S;
      const float* prm = a.warps + bv * cfg.K * 5;
      int64_t j0 = 0, j1 = S;
      const int64_t u = covering_view(a, b, v);
      if (u >= 0) {
        const out_t* ref_row = out + ((b * cfg.V + u) * C * S + i) * S;
        for (int64_t c = 0; c < C; ++c) std::copy(ref_row + c * S * S, ref_row + c * S * S + S, out_row + c * S * S);
        active_columns(cfg, prm, py, &j0, &j1);
        if (j0 >= j1) continue;
      }
      const int64_t n = j1 - j0;
      const float* t = a.theta + 6 * bv;
      warp_row(cfg, prm, py, j0, n, s);
      corners_row_any(cfg, Affine<float>{t[0], t[1], t[2], t[3], t[4], t[5]}, static_cast<index_t>(a.sh),
                      static_cast<index_t>(a.sw), none, j0, n, s);
      gather_row(cfg, src_b, a.sc, scale, masked, j0, n, s);
      color_row(n, C, a.color + 5 * bv, a.mean_gray[b], s.ch0.data() + j0, s.ch1.data() + j0, s.ch2.data() + j0);
      for (int64_t c = 0; c < C; ++c) {
        store_row(n, s.channel(c) + j0, a.mean[c], a.std[c], out_row + c * S * S + j0);
      }
    }
  }
}

// The contrast pre-pass: mean gray value in [0, 1] of each whole source
// image, as the luma-weighted sum of its channel means (gray is linear).
// Rows are summed in int32 for uint8 (exact, and it vectorizes) or float,
// images in double.
template <typename src_t>
CWARP_CPU_MULTIVERSION float source_mean_gray(const src_t* src_b, int64_t C, int64_t H, int64_t W, int64_t sc,
                                              int64_t sh, int64_t sw) {
  const float weights[3] = {kGrayR, kGrayG, kGrayB};
  double total = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0.0;
    for (int64_t y = 0; y < H; ++y) {
      const src_t* __restrict row = src_b + c * sc + y * sh;
      using acc_t = typename std::conditional<std::is_same<src_t, uint8_t>::value, int32_t, float>::type;
      acc_t r = 0;
      for (int64_t x = 0; x < W; ++x) r += static_cast<acc_t>(row[x * sw]);
      acc += static_cast<double>(r);
    }
    total += (C == 3 ? weights[c] : 1.0) * acc;
  }
  const double scale = std::is_same<src_t, uint8_t>::value ? 1.0 / 255.0 : 1.0;
  return static_cast<float>(total * scale / static_cast<double>(H * W));
}

template <typename src_t>
void mean_gray_prepass(const at::Tensor& src, float* out) {
  const int64_t C = src.size(1), H = src.size(2), W = src.size(3);
  const src_t* base = static_cast<const src_t*>(src.const_data_ptr());
  at::parallel_for(0, src.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      out[b] = source_mean_gray(base + b * src.stride(0), C, H, W, src.stride(1), src.stride(2), src.stride(3));
    }
  });
}

template <typename src_t, typename out_t>
void launch(const AugmentArgs& a, bool i32) {
  const AugmentConfig& cfg = a.cfg;
  // A task is one row of all V views; about 16k output values per chunk
  // keeps the scheduling cost negligible.
  const int64_t grain = std::max<int64_t>(1, 16384 / (cfg.S * cfg.C * std::max<int64_t>(cfg.V, 1)));
  at::parallel_for(0, cfg.B * cfg.S, grain, [&](int64_t begin, int64_t end) {
    if (i32) {
      render_rows<src_t, out_t, int32_t>(a, begin, end);
    } else {
      render_rows<src_t, out_t, int64_t>(a, begin, end);
    }
  });
}

at::Tensor augment_views_cpu(const at::Tensor& src, const at::Tensor& theta, const at::Tensor& warps,
                             const at::Tensor& color, const at::Tensor& mean, const at::Tensor& std,
                             int64_t size, c10::string_view kind,
                             c10::string_view padding_mode, c10::ScalarType out_dtype) {
  check_augment_views_inputs(kOp, src, theta, warps, color, mean, std, size, out_dtype);
  const WarpKind k = parse_kind(kOp, kind);
  const Padding pad = parse_padding(kOp, padding_mode);
  const int64_t B = src.size(0), C = src.size(1), V = theta.size(1);
  at::Tensor out = at::empty({B, V, C, size, size}, src.options().dtype(out_dtype));
  if (out.numel() == 0) return out;

  const at::Tensor th = theta.contiguous(), wp = warps.contiguous(), col = color.contiguous();
  const at::Tensor mu = mean.contiguous(), sd = std.contiguous();
  const bool u8 = src.scalar_type() == at::kByte;
  at::Tensor mg = at::empty({B}, theta.options());
  u8 ? mean_gray_prepass<uint8_t>(src, mg.mutable_data_ptr<float>())
     : mean_gray_prepass<float>(src, mg.mutable_data_ptr<float>());
  AugmentArgs a{};
  a.src = src.const_data_ptr();
  a.out = out.mutable_data_ptr();
  a.theta = th.const_data_ptr<float>();
  a.warps = wp.const_data_ptr<float>();
  a.color = col.const_data_ptr<float>();
  a.mean_gray = mg.const_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    a.mean[c] = mu.const_data_ptr<float>()[c];
    a.std[c] = sd.const_data_ptr<float>()[c];
  }
  a.sb = src.stride(0);
  a.sc = src.stride(1);
  a.sh = src.stride(2);
  a.sw = src.stride(3);
  a.cfg = AugmentConfig{B, V, C, src.size(2), src.size(3), size, warps.size(2), k, pad};
  const bool i32 = offsets_fit_int32(src);
  if (out_dtype == at::kFloat) {
    u8 ? launch<uint8_t, float>(a, i32) : launch<float, float>(a, i32);
  } else {
    u8 ? launch<uint8_t, c10::BFloat16>(a, i32) : launch<float, c10::BFloat16>(a, i32);
  }
  return out;
}

}  // namespace augment
}  // namespace cpu

TORCH_LIBRARY_IMPL(cwarp, CPU, m) { m.impl("augment_views", &cpu::augment::augment_views_cpu); }

}  // namespace cwarp
