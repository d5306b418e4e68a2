// The math of cwarp::contrastive_loss, written once.
//
// C10_HOST_DEVICE inline functions of plain scalars, included unchanged by
// the CPU kernel (csrc/ops/contrastive_loss/contrastive_loss_cpu.cpp) and the CUDA kernel
// (csrc/ops/contrastive_loss/contrastive_loss_cuda.cu); the Triton kernel
// (cwarp/ops/contrastive_loss/triton_kernels.py) mirrors them function by function, by name.
// The oracle is cwarp.reference.contrastive_loss.
//
// Notation, for one row i of the batch:
//   a_i = inv_norm(|p_i|^2), b_k = inv_norm(|zpos_k|^2), c_ij = inv_norm(|zneg_ij|^2)
//   s = a * b * <p, z>  (cosine similarity), x = s / tau  (logit)
//   lse_i = logsumexp over row i's logits, nce_i = lse_i - s_pos_i / tau
// `T` is the compute ("opmath") type: float for float/half/bfloat16 inputs,
// double for double inputs.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CWARP_CL_SQRT ::sqrt
#define CWARP_CL_EXP ::exp
#define CWARP_CL_LOG ::log
#else
#define CWARP_CL_SQRT std::sqrt
#define CWARP_CL_EXP std::exp
#define CWARP_CL_LOG std::log
#endif

namespace cwarp {

// F.normalize's eps: rows are divided by max(|x|, eps).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T normalize_eps() {
  return T(1e-12);
}

// 1 / max(|x|, eps) from |x|^2. Finite for all-zero rows (1 / eps), NaN in, NaN out.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T inv_norm(T sumsq) {
  const T n = CWARP_CL_SQRT(sumsq);
  // `n < eps` is false for NaN, so a NaN norm is kept (and propagates).
  return T(1) / (n < normalize_eps<T>() ? normalize_eps<T>() : n);
}

// 1 where the norm was not clamped to eps, else 0. F.normalize's clamp_min
// passes no gradient to the norm of a clamped row, so for such a row
// d x_hat / d x = I / eps, without the projection term -x_hat x_hat^T / |x|.
// A clamped row's inverse norm is exactly 1 / eps (same expression, same
// rounding), and every other row's is smaller. NaN -> 1 (keeps the NaN).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T norm_mask(T inv) {
  return inv >= T(1) / normalize_eps<T>() ? T(0) : T(1);
}

// Running logsumexp: value = m + log(l). A NaN logit is never dropped: the
// comparison ignores it but its exp lands in l.
template <typename T>
struct OnlineLSE {
  T m;
  T l;
  C10_HOST_DEVICE OnlineLSE() : m(-std::numeric_limits<T>::infinity()), l(T(0)) {}
  C10_HOST_DEVICE C10_ALWAYS_INLINE void add(T x) {
    if (x > m) {
      l = l * CWARP_CL_EXP(m - x) + T(1);
      m = x;
    } else {
      l += CWARP_CL_EXP(x - m);
    }
  }
  // Raise the running max to `new_m` (>= m) before adding exp(x - new_m) terms.
  C10_HOST_DEVICE C10_ALWAYS_INLINE void rescale(T new_m) {
    if (new_m > m) {
      l = l * CWARP_CL_EXP(m - new_m);
      m = new_m;
    }
  }
  // Fold in the running logsumexp (m2, l2) of other logits: the state then
  // covers both sets. An empty one (l2 = 0) changes nothing; a NaN in l2 is kept.
  C10_HOST_DEVICE C10_ALWAYS_INLINE void merge(T m2, T l2) {
    if (m2 > m) {
      l = l * CWARP_CL_EXP(m - m2) + l2;
      m = m2;
    } else if (l2 != T(0)) {
      l += l2 * CWARP_CL_EXP(m2 - m);
    }
  }
  C10_HOST_DEVICE C10_ALWAYS_INLINE T value() const { return m + CWARP_CL_LOG(l); }
};

// dL/ds for one logit s of row i, given the upstream per-row gradients
// g_nce = dL/dnce_i and g_s = dL/ds_pos_i:
//   nce_i = lse_i - s_pos_i / tau  =>  dnce/ds = softmax / tau - [positive] / tau
// so for the positive logit g_nce * (pi - 1) / tau + g_s, for any other
// g_nce * pi / tau, with pi = exp(s / tau - lse_i).
// `exp_fn` lets a CPU loop pass an exp it can vectorize (csrc/vec_exp.h).
struct StdExp {
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE T operator()(T x) const {
    return CWARP_CL_EXP(x);
  }
};

template <typename T, typename Exp = StdExp>
C10_HOST_DEVICE C10_ALWAYS_INLINE T logit_grad(T s, T lse, T inv_tau, T g_nce, Exp exp_fn = Exp()) {
  return g_nce * exp_fn(s * inv_tau - lse) * inv_tau;
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T positive_grad(T s, T lse, T inv_tau, T g_nce, T g_s) {
  return g_nce * (CWARP_CL_EXP(s * inv_tau - lse) - T(1)) * inv_tau + g_s;
}

// Gradient of s = <x_hat, y_hat> with respect to x, given a = inv_norm(x),
// b = inv_norm(y), mask = norm_mask(a):
//   ds/dx = a * b * y - a^2 * s * mask * x
// Kernels accumulate sum_y G * b * y and sum_y G * s over the partners y of x
// and finish with this: coefficient of the accumulated sum ...
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T sim_grad_scale(T a) {
  return a;
}
// ... and coefficient of x itself (t = sum over partners of G * s).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T sim_grad_self(T a, T t) {
  return -a * a * norm_mask(a) * t;
}

}  // namespace cwarp
