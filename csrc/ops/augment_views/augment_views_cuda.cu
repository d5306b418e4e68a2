// cwarp::augment_views on CUDA: every view of a batch in one launch.
//
// One thread per output pixel (b, v, i, j), computing all C channels: the
// warp field and the bilinear corners once, then C gathers from the uint8 /
// float32 source, the colour ops of view (b, v) (color_math.h) and one
// normalized store per channel. The warp and sampling math is
// csrc/warp_math.h's, unchanged. The contrast pre-pass (mean gray value of
// each source image) is one ATen reduction before the launch.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "checks.h"
#include "color_math.h"
#include "host_utils.h"
#include "warp_math.h"

namespace cwarp {
namespace cuda {
namespace augment {

constexpr const char* kOp = "cwarp::augment_views";
constexpr int kThreads = 256;

struct Params {
  const float* theta;      // (B, V, 6)
  const float* warps;      // (B, V, K, 5)
  const float* color;      // (B, V, 5)
  const float* mean_gray;  // (B,)
  const float* mean;       // (C,)
  const float* std;        // (C,)
  int64_t sb, sc, sh, sw;
  int64_t V, C, H, W, S, K;
  WarpKind kind;
  Padding padding;
  float scale;  // 1 / 255 for uint8 sources
};

template <typename src_t, typename index_t>
__device__ __forceinline__ float sample_channel(const src_t* __restrict__ src, index_t o00, index_t o01, index_t o10,
                                                index_t o11, float w00, float w01, float w10, float w11,
                                                float scale) {
  // A corner outside the source has offset -1 (corner_value reads it as 0).
  const float v = corner_value<float>(src, o00) * w00 + corner_value<float>(src, o01) * w01 +
                  corner_value<float>(src, o10) * w10 + corner_value<float>(src, o11) * w11;
  return clamp01(v * scale);
}

template <typename src_t, typename out_t, typename index_t>
__global__ void __launch_bounds__(kThreads) augment_views_kernel(const src_t* __restrict__ src, out_t* __restrict__ out,
                                                                 const Params p, const index_t total) {
  const index_t idx = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= total) return;
  const index_t S = static_cast<index_t>(p.S);
  const index_t j = idx % S;
  const index_t i = (idx / S) % S;
  const index_t bv = idx / (S * S);
  const index_t b = bv / static_cast<index_t>(p.V);

  const float px = base_coord<float>(j, p.S, false);
  const float py = base_coord<float>(i, p.S, false);
  float qx = px, qy = py;
  const float* w5 = p.warps + static_cast<int64_t>(bv) * p.K * 5;
  for (int64_t k = 0; k < p.K; ++k, w5 += 5) {
    const float cx = w5[0], cy = w5[1], r = w5[2], dx = w5[3], dy = w5[4];
    if (dx == 0.f && dy == 0.f) continue;  // zero displacement: no effect (pos1 / pos2 padding rows)
    const float ex = px - cx, ey = py - cy;
    const float w = warp_weight(p.kind, ex * ex + ey * ey, r * r, dx * dx + dy * dy);
    qx -= w * dx;
    qy -= w * dy;
  }
  const float* t = p.theta + static_cast<int64_t>(bv) * 6;
  const Affine<float> A{t[0], t[1], t[2], t[3], t[4], t[5]};
  float sx, sy, gx, gy;
  apply_affine(A, qx, qy, &sx, &sy);
  const float ix = source_index(sx, p.W, p.padding, false, &gx);
  const float iy = source_index(sy, p.H, p.padding, false, &gy);
  const Bilinear<index_t, float> bl = bilinear<index_t>(ix, iy, p.W, p.H);
  const bool v00 = bl.vx0 && bl.vy0, v01 = bl.vx1 && bl.vy0, v10 = bl.vx0 && bl.vy1, v11 = bl.vx1 && bl.vy1;
  const float w00 = masked_corner_weight(v00, bl.wx0 * bl.wy0), w01 = masked_corner_weight(v01, bl.wx1 * bl.wy0);
  const float w10 = masked_corner_weight(v10, bl.wx0 * bl.wy1), w11 = masked_corner_weight(v11, bl.wx1 * bl.wy1);
  const index_t sh = static_cast<index_t>(p.sh), sw = static_cast<index_t>(p.sw);
  const index_t base = corner_base_offset(bl, p.W, p.H, sh, sw);
  const index_t o00 = v00 ? base : -1, o01 = v01 ? base + sw : -1;
  const index_t o10 = v10 ? base + sh : -1, o11 = v11 ? base + sh + sw : -1;
  const src_t* src_b = src + static_cast<int64_t>(b) * p.sb;

  const float* col = p.color + static_cast<int64_t>(bv) * kColorSlots;
  const float fb = col[kBrightness], fc = col[kContrast], fs = col[kSaturation], hue = col[kHue];
  const bool gray = col[kGrayscale] != 0.f;
  const float m = contrast_mean(p.mean_gray[b], fb);
  out_t* out_px = out + static_cast<int64_t>(bv) * p.C * p.S * p.S + static_cast<int64_t>(i) * p.S + j;
  const int64_t plane = p.S * p.S;
  if (p.C == 3) {
    float r = sample_channel(src_b, o00, o01, o10, o11, w00, w01, w10, w11, p.scale);
    float g = sample_channel(src_b + p.sc, o00, o01, o10, o11, w00, w01, w10, w11, p.scale);
    float bb = sample_channel(src_b + 2 * p.sc, o00, o01, o10, o11, w00, w01, w10, w11, p.scale);
    if (fb != 1.f) {
      r = adjust_brightness(r, fb);
      g = adjust_brightness(g, fb);
      bb = adjust_brightness(bb, fb);
    }
    if (fc != 1.f) {
      r = adjust_contrast(r, fc, m);
      g = adjust_contrast(g, fc, m);
      bb = adjust_contrast(bb, fc, m);
    }
    if (fs != 1.f) adjust_saturation(&r, &g, &bb, fs);
    if (hue != 0.f) adjust_hue(&r, &g, &bb, hue);
    if (gray) to_grayscale(&r, &g, &bb);
    out_px[0] = static_cast<out_t>(normalize_value(r, p.mean[0], p.std[0]));
    out_px[plane] = static_cast<out_t>(normalize_value(g, p.mean[1], p.std[1]));
    out_px[2 * plane] = static_cast<out_t>(normalize_value(bb, p.mean[2], p.std[2]));
  } else {
    float x = sample_channel(src_b, o00, o01, o10, o11, w00, w01, w10, w11, p.scale);
    if (fb != 1.f) x = adjust_brightness(x, fb);
    if (fc != 1.f) x = adjust_contrast(x, fc, m);
    out_px[0] = static_cast<out_t>(normalize_value(x, p.mean[0], p.std[0]));
  }
}

bool fits_int32(const at::Tensor& src, int64_t total) {
  return offsets_fit_int32(src) && total < std::numeric_limits<int32_t>::max() - kThreads;
}

template <typename src_t, typename out_t>
void launch(const at::Tensor& src, at::Tensor& out, const Params& p, int64_t total, bool i32) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (i32) {
    augment_views_kernel<src_t, out_t, int32_t><<<blocks, kThreads, 0, stream>>>(
        src.const_data_ptr<src_t>(), out.mutable_data_ptr<out_t>(), p, static_cast<int32_t>(total));
  } else {
    augment_views_kernel<src_t, out_t, int64_t><<<blocks, kThreads, 0, stream>>>(
        src.const_data_ptr<src_t>(), out.mutable_data_ptr<out_t>(), p, total);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor augment_views_cuda(const at::Tensor& src, const at::Tensor& theta, const at::Tensor& warps,
                              const at::Tensor& color, const at::Tensor& mean, const at::Tensor& std, int64_t size,
                              c10::string_view kind, c10::string_view padding_mode, c10::ScalarType out_dtype) {
  check_augment_views_inputs(kOp, src, theta, warps, color, mean, std, size, out_dtype);
  const WarpKind k = parse_kind(kOp, kind);
  const Padding pad = parse_padding(kOp, padding_mode);
  const c10::cuda::CUDAGuard guard(src.device());
  const int64_t B = src.size(0), C = src.size(1), V = theta.size(1);
  at::Tensor out = at::empty({B, V, C, size, size}, src.options().dtype(out_dtype));
  if (out.numel() == 0) return out;

  const at::Tensor th = theta.contiguous(), wp = warps.contiguous(), col = color.contiguous();
  // The contrast pre-pass: luma-weighted channel means of each whole source
  // (gray is linear), one reduction; values in [0, 1].
  at::Tensor chan_mean = src.sum({2, 3}, /*keepdim=*/false, at::kFloat) / static_cast<double>(src.size(2) * src.size(3));
  if (src.scalar_type() == at::kByte) chan_mean = chan_mean / 255.0;
  at::Tensor mean_gray = C == 3 ? chan_mean.select(1, 0) * kGrayR + chan_mean.select(1, 1) * kGrayG +
                                       chan_mean.select(1, 2) * kGrayB
                                 : chan_mean.select(1, 0);
  mean_gray = mean_gray.contiguous();
  const at::Tensor mu = mean.contiguous(), sd = std.contiguous();  // read on the device: no host sync

  Params p{};
  p.theta = th.const_data_ptr<float>();
  p.warps = wp.const_data_ptr<float>();
  p.color = col.const_data_ptr<float>();
  p.mean_gray = mean_gray.const_data_ptr<float>();
  p.mean = mu.const_data_ptr<float>();
  p.std = sd.const_data_ptr<float>();
  p.sb = src.stride(0);
  p.sc = src.stride(1);
  p.sh = src.stride(2);
  p.sw = src.stride(3);
  p.V = V;
  p.C = C;
  p.H = src.size(2);
  p.W = src.size(3);
  p.S = size;
  p.K = warps.size(2);
  p.kind = k;
  p.padding = pad;
  p.scale = src.scalar_type() == at::kByte ? 1.f / 255.f : 1.f;
  const int64_t total = B * V * size * size;
  const bool i32 = fits_int32(src, total);
  const bool u8 = src.scalar_type() == at::kByte;
  if (out_dtype == at::kFloat) {
    u8 ? launch<uint8_t, float>(src, out, p, total, i32) : launch<float, float>(src, out, p, total, i32);
  } else {
    u8 ? launch<uint8_t, c10::BFloat16>(src, out, p, total, i32)
       : launch<float, c10::BFloat16>(src, out, p, total, i32);
  }
  return out;
}

}  // namespace augment
}  // namespace cuda

TORCH_LIBRARY_IMPL(cwarp, CUDA, m) { m.impl("augment_views", &cuda::augment::augment_views_cuda); }

}  // namespace cwarp
