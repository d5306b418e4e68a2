// exp for the hot loops of the CPU kernels.
//
// std::exp is an opaque libm call: a loop that calls it runs scalar, one call
// per element (with it, the contrastive loss's in-batch forward at B=8192
// took 1.7x as long). vexp is branch-free arithmetic that GCC vectorizes in
// every CWARP_CPU_MULTIVERSION clone, baseline x86-64 included.
//
// float: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, Cephes' degree-6
// polynomial for exp(r), then 2^n applied as two halves so that results down
// to the denormals come out right. Within 1 ulp of the correctly rounded
// result for finite results (checked exhaustively over all finite floats in
// [-104, 89] by scripts/check_vexp.cpp, which also pins the special cases);
// exp(-inf) = 0, exp(+inf) = inf, NaN in, NaN out. Both builds compile ISO
// C++ (-std=c++20), where GCC fuses no a * b + c into an FMA, so every clone
// computes the values the scalar check saw.
// double: std::exp (the float64 path is for checking, not speed).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace cwarp {
namespace cpu {

C10_ALWAYS_INLINE float vexp(float x) {
  // Below -104, exp is under half the smallest denormal: 0. Above 89 it overflows.
  // The clamp keeps n finite and small; NaN becomes -104 here (and is restored below).
  float xc = x >= -104.f ? x : -104.f;
  xc = xc <= 89.f ? xc : 89.f;
  // n = round(x / ln2) by the 1.5 * 2^23 trick (round to nearest even, no libm call).
  const float kRound = 12582912.f;
  const float n = (xc * 1.44269504088896341f + kRound) - kRound;
  // r = x - n ln2 with ln2 split in two (the first part, 355 / 512, has 9
  // significant bits, so its product with |n| <= 150 is exact).
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float e = p * (r * r) + r + 1.f;
  // 2^n = 2^n1 * 2^n2 with n1 = floor(n / 2): both halves are normal floats for n in [-150, 128].
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof(float));
  std::memcpy(&s2, &b2, sizeof(float));
  e = (e * s1) * s2;
  e = x < -104.f ? 0.f : e;
  return x != x ? x : e;
}

C10_ALWAYS_INLINE double vexp(double x) {
  return std::exp(x);
}

// For the templates of contrastive_math.h that take an exp.
struct VecExp {
  template <typename T>
  C10_ALWAYS_INLINE T operator()(T x) const {
    return vexp(x);
  }
};

}  // namespace cpu
}  // namespace cwarp
