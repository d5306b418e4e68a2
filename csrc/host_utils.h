// Host-side helpers shared by the CPU and CUDA launchers (no device code).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <limits>

namespace cwarp {

// Whether every corner offset inside one image of `t` (B, C, H, W) fits in
// 32 bits. Corners are formed as y0 * sh + x0 * sw with |x0|, |y0| up to 101
// beyond the image before the validity mask applies (safe_coord's -100),
// hence the slack.
inline bool offsets_fit_int32(const at::Tensor& t) {
  int64_t max_off = 0;
  for (int d = 1; d < 4; ++d) max_off += (t.size(d) - 1) * t.stride(d);
  const int64_t slack = 128 * (t.stride(2) + t.stride(3));
  return max_off + slack < std::numeric_limits<int32_t>::max();
}

// `t` converted to the compute type T and made contiguous (small parameter
// tensors: the kernels index them densely).
template <typename T>
at::Tensor as_opmath(const at::Tensor& t) {
  return t.to(c10::CppTypeToScalarType<T>::value).contiguous();
}

}  // namespace cwarp
