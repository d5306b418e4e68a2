// The colour math of cwarp::augment_views, written once.
//
// C10_HOST_DEVICE inline functions of plain floats, included unchanged by the
// CPU kernel (csrc/ops/augment_views/augment_views_cpu.cpp) and the CUDA kernel
// (csrc/ops/augment_views/augment_views_cuda.cu); the Triton kernel (cwarp/ops/augment_views/triton_kernels.py)
// mirrors them by name. Each op follows torchvision.transforms.v2.functional
// on float images in [0, 1] (the formulas and the clamp to [0, 1] after every
// op), so that torchvision is the oracle (cwarp/ops/augment_views/reference.py):
//   adjust_brightness: clamp(x * f)
//   adjust_contrast:   clamp(f * x + (1 - f) * mean)       (mean: see below)
//   adjust_saturation: clamp(f * x + (1 - f) * gray(x))
//   adjust_hue:        RGB -> HSV, h = (h + shift) mod 1, HSV -> RGB
//   rgb_to_grayscale:  0.2989 r + 0.587 g + 0.114 b, on every channel
//   normalize:         (x - mean_c) / std_c
// The one deliberate difference, the contrast mean, is documented in
// cwarp/nn/augment.py: torchvision takes the mean gray value of the already
// cropped, brightness-adjusted image; cwarp takes it from the whole source in
// a cheap pre-pass, times the brightness factor.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CWARP_CFLOOR ::floorf
#else
#define CWARP_CFLOOR std::floor
#endif

namespace cwarp {

// Per-view colour parameters, in the order of a `color` row (B, V, 5).
enum ColorSlot : int { kBrightness = 0, kContrast = 1, kSaturation = 2, kHue = 3, kGrayscale = 4, kColorSlots = 5 };

// torchvision's luma weights (rgb_to_grayscale).
constexpr float kGrayR = 0.2989f;
constexpr float kGrayG = 0.587f;
constexpr float kGrayB = 0.114f;

C10_HOST_DEVICE C10_ALWAYS_INLINE float clamp01(float x) {
  // Written so that NaN stays NaN, like torch.clamp.
  return x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float gray_value(float r, float g, float b) {
  return kGrayR * r + kGrayG * g + kGrayB * b;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float adjust_brightness(float x, float factor) {
  return clamp01(x * factor);
}

// torchvision's _blend(image1, image2, ratio): clamp(ratio * a + (1 - ratio) * b).
C10_HOST_DEVICE C10_ALWAYS_INLINE float blend(float a, float b, float ratio) {
  return clamp01(a * ratio + b * (1.f - ratio));
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float adjust_contrast(float x, float factor, float mean) {
  return blend(x, mean, factor);
}

C10_HOST_DEVICE C10_ALWAYS_INLINE void adjust_saturation(float* r, float* g, float* b, float factor) {
  const float l = gray_value(*r, *g, *b);
  *r = blend(*r, l, factor);
  *g = blend(*g, l, factor);
  *b = blend(*b, l, factor);
}

// torchvision's _rgb_to_hsv, one pixel (Pillow's algorithm: H and S erased
// where max == min, so no division by zero).
C10_HOST_DEVICE C10_ALWAYS_INLINE void rgb_to_hsv(float r, float g, float b, float* h, float* s, float* v) {
  const float maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
  const float minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
  const bool eqc = maxc == minc;
  const float range = maxc - minc;
  *s = range / (eqc ? 1.f : maxc);
  const float div = eqc ? 1.f : range;
  const float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  const float hh = maxc == r ? (bc - gc) : (maxc == g ? (rc + 2.f - bc) : (gc + 4.f - rc));
  // torchvision: fmod(hh / 6 + 1, 1). The argument lies in [5/6, 11/6], where
  // x - floor(x) is exact (Sterbenz) and equals fmod, and it vectorizes.
  const float x = hh * (1.f / 6.f) + 1.f;
  *h = x - CWARP_CFLOOR(x);
  *v = maxc;
}

// torchvision's _hsv_to_rgb, one pixel.
C10_HOST_DEVICE C10_ALWAYS_INLINE void hsv_to_rgb(float h, float s, float v, float* r, float* g, float* b) {
  const float h6 = h * 6.f;
  const float fi = CWARP_CFLOOR(h6);
  const float f = h6 - fi;
  // remainder(i, 6) in float: exact for the small integers h6 can reach.
  const float im = fi - 6.f * CWARP_CFLOOR(fi * (1.f / 6.f));
  const float sxf = s * f;
  const float q = clamp01((1.f - sxf) * v);
  const float t = clamp01((sxf + (1.f - s)) * v);
  const float p = clamp01((1.f - s) * v);
  // The sector table of torchvision's `select`, as selects (vectorizable).
  *r = im == 0.f || im == 5.f ? v : (im == 1.f ? q : (im == 4.f ? t : p));
  *g = im == 1.f || im == 2.f ? v : (im == 0.f ? t : (im == 3.f ? q : p));
  *b = im == 3.f || im == 4.f ? v : (im == 2.f ? t : (im == 5.f ? q : p));
}

// torchvision's adjust_hue: h <- (h + shift) mod 1 (remainder: result in [0, 1)).
C10_HOST_DEVICE C10_ALWAYS_INLINE void adjust_hue(float* r, float* g, float* b, float shift) {
  float h, s, v;
  rgb_to_hsv(*r, *g, *b, &h, &s, &v);
  const float hs = h + shift;
  h = hs - CWARP_CFLOOR(hs);
  hsv_to_rgb(h, s, v, r, g, b);
}

C10_HOST_DEVICE C10_ALWAYS_INLINE void to_grayscale(float* r, float* g, float* b) {
  const float l = gray_value(*r, *g, *b);
  *r = l;
  *g = l;
  *b = l;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float normalize_value(float x, float mean, float std) {
  return (x - mean) / std;
}

// The contrast blend target of a view: the source's mean gray value (the
// pre-pass) scaled by the brightness factor applied before it, clamped as
// the brightness op clamps.
C10_HOST_DEVICE C10_ALWAYS_INLINE float contrast_mean(float mean_gray, float brightness) {
  return clamp01(mean_gray * brightness);
}

}  // namespace cwarp
