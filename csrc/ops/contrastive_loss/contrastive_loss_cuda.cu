// cwarp::contrastive_loss on CUDA: forward and backward.
//
// Same plan as the CPU kernel (csrc/ops/contrastive_loss/contrastive_loss_cpu.cpp) and the same
// math (csrc/ops/contrastive_loss/contrastive_math.h). One warp per row: lanes stride over D and
// the dot products are reduced with warp shuffles, so each row's p, zpos and
// zneg are read once, coalesced. In-batch mode adds a second sweep in which
// the warp of row i walks every z_pos row k (and, for z_pos's gradient, the
// warp of row k walks every p row i) with an online logsumexp: no (B, B)
// matrix exists, the extra memory is O(B * D) accumulators in the backward.
// Every warp owns the rows it writes: no atomics, deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "contrastive_math.h"

namespace cwarp {
namespace cuda {
namespace {

constexpr const char* kFwd = "cwarp::contrastive_loss_forward";
constexpr const char* kBwd = "cwarp::contrastive_loss_backward";
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kBlockThreads = kWarp * kWarpsPerBlock;  // the row and in-batch kernels: one warp per row
// Blocks per SM the row and in-batch kernels leave room for: 5 (a cap of 48
// registers) when they compute in float, 4 in double, where 5 makes the row
// backward spill. With the block size alone as the bound, ptxas gave some of
// them a stack frame. scripts/check_cuda_kernels.py checks both.
template <typename T>
constexpr int min_blocks() {
  return std::is_same<T, double>::value ? 4 : 5;
}
constexpr int kFinishThreads = 256;                    // finish_kernel: one thread per element

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// (x.x, y.y, x.y) of two rows of length D, reduced over the warp.
template <typename T, typename scalar_t>
__device__ __forceinline__ void warp_dots(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                          int64_t D, int lane, T* xx, T* yy, T* xy) {
  T sxx = T(0), syy = T(0), sxy = T(0);
  for (int64_t d = lane; d < D; d += kWarp) {
    const T u = static_cast<T>(x[d]);
    const T v = static_cast<T>(y[d]);
    sxx += u * u;
    syy += v * v;
    sxy += u * v;
  }
  *xx = warp_sum(sxx);
  *yy = warp_sum(syy);
  *xy = warp_sum(sxy);
}

template <typename T, typename scalar_t>
__device__ __forceinline__ T warp_dot(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, int64_t D,
                                      int lane) {
  T s = T(0);
  for (int64_t d = lane; d < D; d += kWarp) s += static_cast<T>(x[d]) * static_cast<T>(y[d]);
  return warp_sum(s);
}

__device__ __forceinline__ int64_t warp_row() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}

// Row pass: norms, s_pos, negatives, running logsumexp; final lse / nce
// unless in-batch terms follow.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    forward_rows_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                        const scalar_t* __restrict__ zn, int64_t B, int64_t N, int64_t D, T inv_tau,
                        bool final, T* __restrict__ nce, T* __restrict__ s_pos, T* __restrict__ inv_p,
                        T* __restrict__ inv_z, T* __restrict__ inv_n, T* __restrict__ lse_m,
                        T* __restrict__ lse_l) {
  const int64_t i = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (i >= B) return;
  const scalar_t* pi = p + i * D;
  T pp, zz, pz;
  warp_dots<T>(pi, z + i * D, D, lane, &pp, &zz, &pz);
  const T a = inv_norm(pp), b = inv_norm(zz);
  const T s = a * b * pz;
  OnlineLSE<T> st;
  st.add(s * inv_tau);
  for (int64_t j = 0; j < N; ++j) {
    T pp2, nn, pn;
    warp_dots<T>(pi, zn + (i * N + j) * D, D, lane, &pp2, &nn, &pn);
    const T c = inv_norm(nn);
    if (lane == 0) inv_n[i * N + j] = c;
    st.add(a * c * pn * inv_tau);
  }
  if (lane == 0) {
    s_pos[i] = s;
    inv_p[i] = a;
    inv_z[i] = b;
    if (final) {
      lse_m[i] = st.value();
      nce[i] = st.value() - s * inv_tau;
    } else {
      lse_m[i] = st.m;
      lse_l[i] = st.l;
    }
  }
}

// In-batch sweep of row i over every z_pos row k != i; finishes lse and nce.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    forward_in_batch_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z, int64_t B,
                            int64_t D, T inv_tau, const T* __restrict__ inv_p,
                            const T* __restrict__ inv_z, const T* __restrict__ s_pos,
                            T* __restrict__ lse_m, const T* __restrict__ lse_l, T* __restrict__ nce) {
  const int64_t i = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (i >= B) return;
  const scalar_t* pi = p + i * D;
  const T as = inv_p[i] * inv_tau;
  OnlineLSE<T> st;
  st.m = lse_m[i];
  st.l = lse_l[i];
  for (int64_t k = 0; k < B; ++k) {
    if (k == i) continue;  // the positive, already counted
    st.add(as * inv_z[k] * warp_dot<T>(pi, z + k * D, D, lane));
  }
  if (lane == 0) {
    lse_m[i] = st.value();
    nce[i] = st.value() - s_pos[i] * inv_tau;
  }
}

struct BwdFlags {
  bool need_p, need_z, need_n, in_batch;
};

// Row pass of the backward: positive and negatives of row i.
// acc_p[i] = sum G * inv_norm(y) * y, t_p[i] = sum G * s over those partners;
// acc_z[i] / t_z[i]: the positive's share for z_pos_i; gzn finished.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    backward_rows_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                         const scalar_t* __restrict__ zn, int64_t B, int64_t N, int64_t D, T inv_tau,
                         const T* __restrict__ g_nce, const T* __restrict__ g_s,
                         const T* __restrict__ inv_p, const T* __restrict__ inv_z,
                         const T* __restrict__ inv_n, const T* __restrict__ lse, BwdFlags f,
                         T* __restrict__ acc_p, T* __restrict__ t_p, T* __restrict__ acc_z,
                         T* __restrict__ t_z, scalar_t* __restrict__ gzn) {
  const int64_t i = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (i >= B) return;
  const scalar_t* pi = p + i * D;
  const scalar_t* zi = z + i * D;
  const T a = inv_p[i], b = inv_z[i], l = lse[i], gn = g_nce[i];
  const T s = a * b * warp_dot<T>(pi, zi, D, lane);
  const T g0 = positive_grad(s, l, inv_tau, gn, g_s[i]);
  T tp = g0 * s;
  T* acc = f.need_p ? acc_p + i * D : nullptr;
  if (f.need_p) {
    for (int64_t d = lane; d < D; d += kWarp) acc[d] = g0 * b * static_cast<T>(zi[d]);
  }
  for (int64_t j = 0; j < N; ++j) {
    const scalar_t* zij = zn + (i * N + j) * D;
    const T c = inv_n[i * N + j];
    const T sj = a * c * warp_dot<T>(pi, zij, D, lane);
    const T gj = logit_grad(sj, l, inv_tau, gn);
    tp += gj * sj;
    if (f.need_p) {
      for (int64_t d = lane; d < D; d += kWarp) acc[d] += gj * c * static_cast<T>(zij[d]);
    }
    if (f.need_n) {
      const T wp = sim_grad_scale(c) * gj * a, wn = sim_grad_self(c, gj * sj);
      scalar_t* out = gzn + (i * N + j) * D;
      for (int64_t d = lane; d < D; d += kWarp)
        out[d] = static_cast<scalar_t>(wp * static_cast<T>(pi[d]) + wn * static_cast<T>(zij[d]));
    }
  }
  if (lane == 0 && f.need_p) t_p[i] = tp;
  if (f.need_z) {
    T* az = acc_z + i * D;
    for (int64_t d = lane; d < D; d += kWarp) az[d] = g0 * a * static_cast<T>(pi[d]);
    if (lane == 0) t_z[i] = g0 * s;
  }
}

// In-batch terms of p's gradient: the warp of row i walks every k != i.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    backward_in_batch_p_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                               int64_t B, int64_t D, T inv_tau, const T* __restrict__ g_nce,
                               const T* __restrict__ inv_p, const T* __restrict__ inv_z,
                               const T* __restrict__ lse, T* __restrict__ acc_p, T* __restrict__ t_p) {
  const int64_t i = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (i >= B) return;
  const scalar_t* pi = p + i * D;
  T* acc = acc_p + i * D;
  const T a = inv_p[i], l = lse[i], gn = g_nce[i];
  T tp = T(0);
  for (int64_t k = 0; k < B; ++k) {
    if (k == i) continue;
    const scalar_t* zk = z + k * D;
    const T bk = inv_z[k];
    const T s = a * bk * warp_dot<T>(pi, zk, D, lane);
    const T g = logit_grad(s, l, inv_tau, gn);
    tp += g * s;
    const T w = g * bk;
    for (int64_t d = lane; d < D; d += kWarp) acc[d] += w * static_cast<T>(zk[d]);
  }
  if (lane == 0) t_p[i] += tp;
}

// In-batch terms of z_pos's gradient: the warp of row k walks every p row i != k.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    backward_in_batch_z_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                               int64_t B, int64_t D, T inv_tau, const T* __restrict__ g_nce,
                               const T* __restrict__ inv_p, const T* __restrict__ inv_z,
                               const T* __restrict__ lse, T* __restrict__ acc_z, T* __restrict__ t_z) {
  const int64_t k = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (k >= B) return;
  const scalar_t* zk = z + k * D;
  T* acc = acc_z + k * D;
  const T b = inv_z[k];
  T tz = T(0);
  for (int64_t i = 0; i < B; ++i) {
    if (i == k) continue;
    const scalar_t* pi = p + i * D;
    const T ai = inv_p[i];
    const T s = ai * b * warp_dot<T>(pi, zk, D, lane);
    const T g = logit_grad(s, lse[i], inv_tau, g_nce[i]);
    tz += g * s;
    const T w = g * ai;
    for (int64_t d = lane; d < D; d += kWarp) acc[d] += w * static_cast<T>(pi[d]);
  }
  if (lane == 0) t_z[k] += tz;
}

// grad = inv * acc - inv^2 * mask * t * x, cast to the input dtype.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kFinishThreads)
    finish_kernel(const T* __restrict__ acc, const T* __restrict__ t, const T* __restrict__ inv,
                  const scalar_t* __restrict__ x, int64_t B, int64_t D, scalar_t* __restrict__ out) {
  const int64_t n = B * D;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / D;
    out[e] = static_cast<scalar_t>(sim_grad_scale(inv[i]) * acc[e] + sim_grad_self(inv[i], t[i]) * static_cast<T>(x[e]));
  }
}

inline unsigned row_blocks(int64_t B) {
  return static_cast<unsigned>((B + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> contrastive_loss_forward_cuda(
    const at::Tensor& p_in, const at::Tensor& z_in, const c10::optional<at::Tensor>& zn_opt, double tau,
    bool in_batch) {
  check_contrastive_inputs(kFwd, p_in, z_in, zn_opt, tau);
  const c10::cuda::CUDAGuard guard(p_in.device());
  const bool has_neg = zn_opt.has_value() && zn_opt->defined();
  const int64_t B = p_in.size(0), D = p_in.size(1), N = has_neg ? zn_opt->size(1) : 0;
  const auto opt = p_in.options().dtype(at::toOpMathType(p_in.scalar_type()));
  at::Tensor nce = at::empty({B}, opt), s_pos = at::empty({B}, opt), inv_p = at::empty({B}, opt),
             inv_z = at::empty({B}, opt), inv_n = at::empty({B, N}, opt), lse = at::empty({B}, opt);
  if (B == 0) return {nce, s_pos, inv_p, inv_z, inv_n, lse};
  const at::Tensor p = p_in.contiguous(), z = z_in.contiguous();
  const at::Tensor zn = has_neg ? zn_opt->contiguous() : at::Tensor();
  at::Tensor lse_l = in_batch ? at::empty({B}, opt) : at::Tensor();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned blocks = row_blocks(B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T inv_tau = static_cast<T>(1.0 / tau);
    forward_rows_kernel<scalar_t, T><<<blocks, kBlockThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
        has_neg ? zn.const_data_ptr<scalar_t>() : nullptr, B, N, D, inv_tau, !in_batch, nce.mutable_data_ptr<T>(),
        s_pos.mutable_data_ptr<T>(), inv_p.mutable_data_ptr<T>(), inv_z.mutable_data_ptr<T>(),
        inv_n.mutable_data_ptr<T>(), lse.mutable_data_ptr<T>(), in_batch ? lse_l.mutable_data_ptr<T>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (in_batch) {
      forward_in_batch_kernel<scalar_t, T><<<blocks, kBlockThreads, 0, stream>>>(
          p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), B, D, inv_tau, inv_p.const_data_ptr<T>(),
          inv_z.const_data_ptr<T>(), s_pos.const_data_ptr<T>(), lse.mutable_data_ptr<T>(),
          lse_l.const_data_ptr<T>(), nce.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {nce, s_pos, inv_p, inv_z, inv_n, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_loss_backward_cuda(
    const at::Tensor& grad_nce, const at::Tensor& grad_s, const at::Tensor& p_in, const at::Tensor& z_in,
    const c10::optional<at::Tensor>& zn_opt, const at::Tensor& inv_p_in, const at::Tensor& inv_z_in,
    const at::Tensor& inv_n_in, const at::Tensor& lse_in, double tau, bool in_batch,
    std::array<bool, 3> output_mask) {
  check_contrastive_inputs(kBwd, p_in, z_in, zn_opt, tau);
  const c10::cuda::CUDAGuard guard(p_in.device());
  const bool has_neg = zn_opt.has_value() && zn_opt->defined();
  const int64_t B = p_in.size(0), D = p_in.size(1), N = has_neg ? zn_opt->size(1) : 0;
  for (const at::Tensor* t : {&grad_nce, &grad_s, &inv_p_in, &inv_z_in, &lse_in}) {
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == B, kBwd, "(): expected per-row tensors of shape (B,) = (", B,
                      "), got ", t->sizes());
    TORCH_CHECK(t->device() == p_in.device(), kBwd, "(): expected per-row tensors on p's device ", p_in.device(),
                ", got ", t->device());
  }
  TORCH_CHECK_VALUE(inv_n_in.dim() == 2 && inv_n_in.size(0) == B && inv_n_in.size(1) == N, kBwd,
                    "(): expected inv_z_neg of shape (B, N) = (", B, ", ", N, "), got ", inv_n_in.sizes());
  const BwdFlags f{output_mask[0], output_mask[1], output_mask[2] && has_neg, in_batch};
  at::Tensor gp = f.need_p ? at::empty({B, D}, p_in.options()) : at::empty({0}, p_in.options());
  at::Tensor gz = f.need_z ? at::empty({B, D}, p_in.options()) : at::empty({0}, p_in.options());
  at::Tensor gzn = f.need_n ? at::empty({B, N, D}, p_in.options()) : at::empty({0}, p_in.options());
  if (B == 0 || !(f.need_p || f.need_z || f.need_n)) return {gp, gz, gzn};

  const at::ScalarType opmath = at::toOpMathType(p_in.scalar_type());
  const auto opt = p_in.options().dtype(opmath);
  const at::Tensor p = p_in.contiguous(), z = z_in.contiguous();
  const at::Tensor zn = has_neg ? zn_opt->contiguous() : at::Tensor();
  auto per_row = [&](const at::Tensor& t) { return t.to(opmath).contiguous(); };
  const at::Tensor gn = per_row(grad_nce), gs = per_row(grad_s), ip = per_row(inv_p_in), iz = per_row(inv_z_in),
                   in = per_row(inv_n_in), lse = per_row(lse_in);
  at::Tensor acc_p, t_p, acc_z, t_z;
  if (f.need_p) {
    acc_p = at::empty({B, D}, opt);
    t_p = at::empty({B}, opt);
  }
  if (f.need_z) {
    acc_z = at::empty({B, D}, opt);
    t_z = at::empty({B}, opt);
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned blocks = row_blocks(B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T inv_tau = static_cast<T>(1.0 / tau);
    T* accp = f.need_p ? acc_p.mutable_data_ptr<T>() : nullptr;
    T* tp = f.need_p ? t_p.mutable_data_ptr<T>() : nullptr;
    T* accz = f.need_z ? acc_z.mutable_data_ptr<T>() : nullptr;
    T* tz = f.need_z ? t_z.mutable_data_ptr<T>() : nullptr;
    backward_rows_kernel<scalar_t, T><<<blocks, kBlockThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
        has_neg ? zn.const_data_ptr<scalar_t>() : nullptr, B, N, D, inv_tau, gn.const_data_ptr<T>(),
        gs.const_data_ptr<T>(), ip.const_data_ptr<T>(), iz.const_data_ptr<T>(), in.const_data_ptr<T>(),
        lse.const_data_ptr<T>(), f, accp, tp, accz, tz, f.need_n ? gzn.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (in_batch && f.need_p) {
      backward_in_batch_p_kernel<scalar_t, T><<<blocks, kBlockThreads, 0, stream>>>(
          p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), B, D, inv_tau, gn.const_data_ptr<T>(),
          ip.const_data_ptr<T>(), iz.const_data_ptr<T>(), lse.const_data_ptr<T>(), accp, tp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (in_batch && f.need_z) {
      backward_in_batch_z_kernel<scalar_t, T><<<blocks, kBlockThreads, 0, stream>>>(
          p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), B, D, inv_tau, gn.const_data_ptr<T>(),
          ip.const_data_ptr<T>(), iz.const_data_ptr<T>(), lse.const_data_ptr<T>(), accz, tz);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const int64_t n = B * D;
    if (n > 0) {
      const unsigned fb = static_cast<unsigned>(std::min<int64_t>((n + kFinishThreads - 1) / kFinishThreads, 65535));
      if (f.need_p) {
        finish_kernel<scalar_t, T><<<fb, kFinishThreads, 0, stream>>>(accp, tp, ip.const_data_ptr<T>(),
                                                          p.const_data_ptr<scalar_t>(), B, D,
                                                          gp.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (f.need_z) {
        finish_kernel<scalar_t, T><<<fb, kFinishThreads, 0, stream>>>(accz, tz, iz.const_data_ptr<T>(),
                                                          z.const_data_ptr<scalar_t>(), B, D,
                                                          gz.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return {gp, gz, gzn};
}

TORCH_LIBRARY_IMPL(cwarp, CUDA, m) {
  m.impl("contrastive_loss_forward", &contrastive_loss_forward_cuda);
  m.impl("contrastive_loss_backward", &contrastive_loss_backward_cuda);
}

}  // namespace cuda
}  // namespace cwarp
