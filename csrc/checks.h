// Input validation for the cwarp ops: one check_*_inputs() per op, shared by
// the CPU and CUDA implementations, so that every backend rejects bad input
// with the same message. The messages name the op, the argument, what was
// expected and what was given; cwarp/ops/*/register.py mirrors them in the fake kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "warp_math.h"

namespace cwarp {

inline WarpKind parse_kind(const char* op, c10::string_view kind) {
  if (kind == "translate") return WarpKind::Translate;
  if (kind == "gaussian") return WarpKind::Gaussian;
  TORCH_CHECK_VALUE(false, op, "(): unknown kind '", std::string(kind),
                    "'; expected 'translate' or 'gaussian'");
}

inline Padding parse_padding(const char* op, c10::string_view mode) {
  if (mode == "zeros") return Padding::Zeros;
  if (mode == "border") return Padding::Border;
  if (mode == "reflection") return Padding::Reflection;
  TORCH_CHECK_VALUE(false, op, "(): unknown padding_mode '", std::string(mode),
                    "'; expected 'zeros', 'border' or 'reflection'");
}

inline bool is_float_type(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// params (B, K, 5) and theta (B, 2, 3) or undefined, floating, on `device`
// (`owner` names whose device it is in the messages).
inline void check_warp_params(const char* op, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                              int64_t batch, const c10::Device& device, const char* owner) {
  TORCH_CHECK_VALUE(params.dim() == 3 && params.size(2) == 5 && params.size(0) == batch, op,
                    "(): expected params of shape (B, K, 5) with B = ", batch, ", got ", params.sizes());
  TORCH_CHECK_TYPE(is_float_type(params.scalar_type()), op, "(): expected params of a floating dtype, got ",
                   params.scalar_type());
  TORCH_CHECK(params.device() == device, op, "(): expected params on ", owner, " device ", device, ", got ",
              params.device());
  if (theta.has_value() && theta->defined()) {
    const at::Tensor& t = *theta;
    TORCH_CHECK_VALUE(t.dim() == 3 && t.size(0) == batch && t.size(1) == 2 && t.size(2) == 3, op,
                      "(): expected theta of shape (B, 2, 3) with B = ", batch, ", got ", t.sizes());
    TORCH_CHECK_TYPE(is_float_type(t.scalar_type()), op, "(): expected theta of a floating dtype, got ",
                     t.scalar_type());
    TORCH_CHECK(t.device() == device, op, "(): expected theta on ", owner, " device ", device, ", got ",
                t.device());
  }
}

// image (B, C, H, W) floating, or uint8 where allow_uint8 (the forward);
// params (B, K, 5) floating; theta (B, 2, 3) floating or undefined; all on
// one device.
inline void check_local_warp_inputs(const char* op, const at::Tensor& image, const at::Tensor& params,
                                    const c10::optional<at::Tensor>& theta, bool allow_uint8) {
  TORCH_CHECK_VALUE(image.dim() == 4, op, "(): expected image of shape (B, C, H, W), got ",
                    image.sizes());
  if (allow_uint8) {
    TORCH_CHECK_TYPE(is_float_type(image.scalar_type()) || image.scalar_type() == at::kByte, op,
                     "(): expected image of dtype uint8 or a floating dtype (float16, bfloat16, float32, "
                     "float64), got ", image.scalar_type());
  } else {
    TORCH_CHECK_TYPE(is_float_type(image.scalar_type()), op,
                     "(): expected image of a floating dtype (float16, bfloat16, float32, float64), got ",
                     image.scalar_type());
  }
  TORCH_CHECK_VALUE(image.size(2) > 0 && image.size(3) > 0, op,
                    "(): expected image with non-empty spatial dims, got ", image.sizes());
  check_warp_params(op, params, theta, image.size(0), image.device(), "the image's");
}

inline void check_out_size(const char* op, int64_t out_h, int64_t out_w) {
  TORCH_CHECK_VALUE(out_h > 0 && out_w > 0, op, "(): expected out_size of two positive ints, got (",
                    out_h, ", ", out_w, ")");
}

inline void check_local_warp_backward_inputs(const char* op, const at::Tensor& grad_out,
                                             const at::Tensor& image, const at::Tensor& params,
                                             const c10::optional<at::Tensor>& theta) {
  check_local_warp_inputs(op, image, params, theta, /*allow_uint8=*/false);
  TORCH_CHECK_VALUE(grad_out.dim() == 4 && grad_out.size(0) == image.size(0) &&
                        grad_out.size(1) == image.size(1),
                    op, "(): expected grad_out of shape (B, C, Ho, Wo) with B, C = ", image.size(0),
                    ", ", image.size(1), ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == image.device(), op, "(): expected grad_out on the image's device ",
              image.device(), ", got ", grad_out.device());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == image.scalar_type(), op,
                   "(): expected grad_out of the image's dtype ", image.scalar_type(), ", got ",
                   grad_out.scalar_type());
}

// p (B, D); z_pos (B, D); z_neg (B, N, D) or undefined; one floating dtype,
// one device; tau > 0 and finite.
inline void check_contrastive_inputs(const char* op, const at::Tensor& p, const at::Tensor& z_pos,
                                     const c10::optional<at::Tensor>& z_neg, double tau) {
  TORCH_CHECK_VALUE(p.dim() == 2, op, "(): expected p of shape (B, D), got ", p.sizes());
  TORCH_CHECK_TYPE(is_float_type(p.scalar_type()), op,
                   "(): expected p of a floating dtype (float16, bfloat16, float32, float64), got ",
                   p.scalar_type());
  TORCH_CHECK_VALUE(z_pos.dim() == 2 && z_pos.size(0) == p.size(0) && z_pos.size(1) == p.size(1), op,
                    "(): expected z_pos of shape (B, D) = ", p.sizes(), ", got ", z_pos.sizes());
  TORCH_CHECK_TYPE(z_pos.scalar_type() == p.scalar_type(), op, "(): expected z_pos of p's dtype ",
                   p.scalar_type(), ", got ", z_pos.scalar_type());
  TORCH_CHECK(z_pos.device() == p.device(), op, "(): expected z_pos on p's device ", p.device(), ", got ",
              z_pos.device());
  if (z_neg.has_value() && z_neg->defined()) {
    const at::Tensor& n = *z_neg;
    TORCH_CHECK_VALUE(n.dim() == 3, op, "(): expected z_neg of rank 3, shape (B, N, D), got ", n.sizes());
    TORCH_CHECK_VALUE(n.size(0) == p.size(0) && n.size(2) == p.size(1), op,
                      "(): expected z_neg of shape (B, N, D) with B, D = ", p.size(0), ", ", p.size(1),
                      ", got ", n.sizes());
    TORCH_CHECK_TYPE(n.scalar_type() == p.scalar_type(), op, "(): expected z_neg of p's dtype ",
                     p.scalar_type(), ", got ", n.scalar_type());
    TORCH_CHECK(n.device() == p.device(), op, "(): expected z_neg on p's device ", p.device(), ", got ",
                n.device());
  }
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0, op, "(): expected tau > 0 and finite, got ", tau);
}

// points (B, P, 2) floating; params (B, K, 5) floating; theta (B, 2, 3)
// floating or undefined; all on one device.
inline void check_warp_points_inputs(const char* op, const at::Tensor& points, const at::Tensor& params,
                                     const c10::optional<at::Tensor>& theta) {
  TORCH_CHECK_VALUE(points.dim() == 3 && points.size(2) == 2, op, "(): expected points of shape (B, P, 2), got ",
                    points.sizes());
  TORCH_CHECK_TYPE(is_float_type(points.scalar_type()), op,
                   "(): expected points of a floating dtype (float16, bfloat16, float32, float64), got ",
                   points.scalar_type());
  check_warp_params(op, params, theta, points.size(0), points.device(), "the points'");
}

}  // namespace cwarp

// cwarp::augment_views: src (B, C, H, W) uint8 or float32 with C in {1, 3};
// theta (B, V, 2, 3), warps (B, V, K, 5), color (B, V, 5) and mean / std
// (C,), all float32 on src's device; size > 0.
inline void check_augment_views_inputs(const char* op, const at::Tensor& src, const at::Tensor& theta,
                                       const at::Tensor& warps, const at::Tensor& color, const at::Tensor& mean,
                                       const at::Tensor& std, int64_t size, c10::ScalarType out_dtype) {
  TORCH_CHECK_VALUE(src.dim() == 4, op, "(): expected src of shape (B, C, H, W), got ", src.sizes());
  TORCH_CHECK_TYPE(src.scalar_type() == at::kByte || src.scalar_type() == at::kFloat, op,
                   "(): expected src of dtype uint8 or float32, got ", src.scalar_type());
  TORCH_CHECK_VALUE(src.size(1) == 1 || src.size(1) == 3, op, "(): expected src with C = 1 or 3 channels, got ",
                    src.sizes());
  TORCH_CHECK_VALUE(src.size(2) > 0 && src.size(3) > 0, op, "(): expected src with non-empty spatial dims, got ",
                    src.sizes());
  TORCH_CHECK_VALUE(size > 0, op, "(): expected size > 0, got ", size);
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kBFloat16, op,
                   "(): expected out_dtype float32 or bfloat16, got ", out_dtype);
  const int64_t B = src.size(0), C = src.size(1);
  TORCH_CHECK_VALUE(theta.dim() == 4 && theta.size(0) == B && theta.size(2) == 2 && theta.size(3) == 3, op,
                    "(): expected theta of shape (B, V, 2, 3) with B = ", B, ", got ", theta.sizes());
  const int64_t V = theta.size(1);
  TORCH_CHECK_VALUE(warps.dim() == 4 && warps.size(0) == B && warps.size(1) == V && warps.size(3) == 5, op,
                    "(): expected warps of shape (B, V, K, 5) with B, V = ", B, ", ", V, ", got ", warps.sizes());
  TORCH_CHECK_VALUE(color.dim() == 3 && color.size(0) == B && color.size(1) == V && color.size(2) == 5, op,
                    "(): expected color of shape (B, V, 5) with B, V = ", B, ", ", V, ", got ", color.sizes());
  TORCH_CHECK_VALUE(mean.dim() == 1 && mean.size(0) == C && std.dim() == 1 && std.size(0) == C, op,
                    "(): expected mean and std of shape (C,) with C = ", C, ", got ", mean.sizes(), " and ",
                    std.sizes());
  const at::Tensor* floats[] = {&theta, &warps, &color, &mean, &std};
  const char* names[] = {"theta", "warps", "color", "mean", "std"};
  for (int i = 0; i < 5; ++i) {
    TORCH_CHECK_TYPE(floats[i]->scalar_type() == at::kFloat, op, "(): expected ", names[i], " of dtype float32, got ",
                     floats[i]->scalar_type());
    TORCH_CHECK(floats[i]->device() == src.device(), op, "(): expected ", names[i], " on src's device ",
                src.device(), ", got ", floats[i]->device());
  }
}
