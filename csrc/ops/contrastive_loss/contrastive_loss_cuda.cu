// cwarp::contrastive_loss on CUDA: forward and backward.
//
// Same math as the CPU kernel (csrc/ops/contrastive_loss/contrastive_loss_cpu.cpp), from the same
// header (csrc/ops/contrastive_loss/contrastive_math.h). Each row i has N + 1 keys: its positive
// z_pos_i (key 0) and its negatives z_neg_i1..iN.
//
// Forward: one block per row, its warps taking the keys in turn (lanes
// stride over D, dot products reduced with warp shuffles, so rows are read
// coalesced); each warp keeps a running logsumexp of its keys, and the
// block merges them. Backward: the same split computes every key's logit
// gradient (backward_logit_grads_kernel), then one thread per (row, d)
// forms the gradients of p, z_pos and z_neg from them
// (backward_rows_kernel). Both spread a batch's rows over the whole GPU
// even at small B.
//
// In-batch mode adds a sweep in which the warp of row i walks every z_pos
// row k with an online logsumexp: no (B, B) matrix exists. The backward
// runs one kernel for both sides, as the CPU's grad_tile
// (backward_in_batch_kernel): the warp of row i of p walks every z_pos row,
// then the warp of row k of z_pos every p row. That sweep is serial over B;
// backend="auto" sends in-batch losses on CUDA to the tiled Triton kernel
// when Triton is installed (cwarp/ops/contrastive_loss/api.py).
// Every thread owns what it writes: no atomics, deterministic.
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
constexpr int kBlockThreads = kWarp * kWarpsPerBlock;  // the in-batch kernels: one warp per row
// Blocks per SM the in-batch kernels leave room for: 5 (a cap of 48
// registers) when they compute in float, 4 in double. With the block size
// alone as the bound, ptxas gave some of them a stack frame.
// scripts/check_cuda_kernels.py checks every bound below.
template <typename T>
constexpr int min_blocks() {
  return std::is_same<T, double>::value ? 4 : 5;
}
// The per-row kernels: one block of kRowWarps warps per row, the warps
// taking the row's keys in turn; 12 blocks per SM (48 warps) in float, 8 in
// double.
constexpr int kRowWarps = 4;
constexpr int kRowThreads = kWarp * kRowWarps;
template <typename T>
constexpr int row_min_blocks() {
  return std::is_same<T, double>::value ? 8 : 12;
}
// backward_rows_kernel and finish_kernel: one thread per element.
constexpr int kElementThreads = 256;
template <typename T>
constexpr int element_min_blocks() {
  return std::is_same<T, double>::value ? 4 : 6;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
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

// <x, y> and |y|^2 of two rows of length D, reduced over the warp.
template <typename T, typename scalar_t>
__device__ __forceinline__ void warp_dot_and_norm(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                                  int64_t D, int lane, T* xy, T* yy) {
  T sxy = T(0), syy = T(0);
  for (int64_t d = lane; d < D; d += kWarp) {
    const T u = static_cast<T>(x[d]);
    const T v = static_cast<T>(y[d]);
    sxy += u * v;
    syy += v * v;
  }
  *xy = warp_sum(sxy);
  *yy = warp_sum(syy);
}

// Key k of row i: z_pos_i for k = 0, z_neg_i(k-1) after it.
template <typename scalar_t>
__device__ __forceinline__ const scalar_t* row_key(const scalar_t* z, const scalar_t* zn, int64_t i, int64_t k,
                                                   int64_t N, int64_t D) {
  return k == 0 ? z + i * D : zn + (i * N + (k - 1)) * D;
}

// Row pass, one block per row: the norms, s_pos, every key's logit and
// their logsumexp; the final lse and nce unless in-batch terms follow (then
// the running (m, l) for forward_in_batch_kernel).
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kRowThreads, row_min_blocks<T>())
    forward_rows_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                        const scalar_t* __restrict__ zn, int64_t N, int64_t D, T inv_tau,
                        bool final, T* __restrict__ nce, T* __restrict__ s_pos, T* __restrict__ inv_p,
                        T* __restrict__ inv_z, T* __restrict__ inv_n, T* __restrict__ lse_m,
                        T* __restrict__ lse_l) {
  __shared__ T warp_m[kRowWarps], warp_l[kRowWarps], positive[1];
  const int64_t i = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const scalar_t* pi = p + i * D;
  // |p_i|^2 once per warp, for the cosines of its keys.
  T pp = T(0);
  for (int64_t d = lane; d < D; d += kWarp) {
    const T u = static_cast<T>(pi[d]);
    pp += u * u;
  }
  const T a = inv_norm(warp_sum(pp));
  OnlineLSE<T> st;
  for (int64_t k = warp; k <= N; k += kRowWarps) {
    T pk, kk;
    warp_dot_and_norm<T>(pi, row_key(z, zn, i, k, N, D), D, lane, &pk, &kk);
    const T c = inv_norm(kk);
    const T s = a * c * pk;
    st.add(s * inv_tau);
    if (lane == 0) {
      if (k == 0) {
        positive[0] = s;
        s_pos[i] = s;
        inv_p[i] = a;
        inv_z[i] = c;
      } else {
        inv_n[i * N + (k - 1)] = c;
      }
    }
  }
  if (lane == 0) {
    warp_m[warp] = st.m;
    warp_l[warp] = st.l;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  OnlineLSE<T> row;
  for (int w = 0; w < kRowWarps; ++w) row.merge(warp_m[w], warp_l[w]);
  if (final) {
    lse_m[i] = row.value();
    nce[i] = row.value() - positive[0] * inv_tau;
  } else {
    lse_m[i] = row.m;
    lse_l[i] = row.l;
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

// Backward, first pass, one block per row: the logit gradient g_k = dL/ds_k
// and the cosine s_k of every key k of row i (key_g, key_s: (B, N + 1)),
// t_p[i] = sum_k g_k s_k and t_z[i] = g_0 s_0 (the terms along p_i and
// z_pos_i themselves).
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kRowThreads, row_min_blocks<T>())
    backward_logit_grads_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                                const scalar_t* __restrict__ zn, int64_t N, int64_t D, T inv_tau,
                                const T* __restrict__ g_nce, const T* __restrict__ g_s,
                                const T* __restrict__ inv_p, const T* __restrict__ inv_z,
                                const T* __restrict__ inv_n, const T* __restrict__ lse, T* __restrict__ key_g,
                                T* __restrict__ key_s, T* __restrict__ t_p, T* __restrict__ t_z) {
  __shared__ T warp_t[kRowWarps];
  const int64_t i = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const scalar_t* pi = p + i * D;
  const T a = inv_p[i], l = lse[i], gn = g_nce[i];
  T tp = T(0);
  for (int64_t k = warp; k <= N; k += kRowWarps) {
    const T c = k == 0 ? inv_z[i] : inv_n[i * N + (k - 1)];
    const T s = a * c * warp_dot<T>(pi, row_key(z, zn, i, k, N, D), D, lane);
    const T g = k == 0 ? positive_grad(s, l, inv_tau, gn, g_s[i]) : logit_grad(s, l, inv_tau, gn);
    tp += g * s;
    if (lane == 0) {
      key_g[i * (N + 1) + k] = g;
      key_s[i * (N + 1) + k] = s;
      if (k == 0) t_z[i] = g * s;
    }
  }
  if (lane == 0) warp_t[warp] = tp;
  __syncthreads();
  if (threadIdx.x != 0) return;
  T total = T(0);
  for (int w = 0; w < kRowWarps; ++w) total += warp_t[w];
  t_p[i] = total;
}

// The gradient of a row x from acc = sum over its partners y of
// G * inv_norm(y) * y and t = sum of G * s (contrastive_math.h).
template <typename T>
__device__ __forceinline__ T finish_grad(T inv, T acc, T t, T x) {
  return sim_grad_scale(inv) * acc + sim_grad_self(inv, t) * x;
}

// Backward, second pass, one thread per element (i, d): p's gradient from
// its positive and negatives, z_pos's from its positive, and every
// negative's. In-batch mode leaves p's and z_pos's sums in acc_p / acc_z for
// the in-batch kernels and finish_kernel; otherwise they are finished here.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kElementThreads, element_min_blocks<T>())
    backward_rows_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ z,
                         const scalar_t* __restrict__ zn, int64_t B, int64_t N, int64_t D,
                         const T* __restrict__ inv_p, const T* __restrict__ inv_z, const T* __restrict__ inv_n,
                         const T* __restrict__ key_g, const T* __restrict__ key_s, const T* __restrict__ t_p,
                         const T* __restrict__ t_z, BwdFlags f, T* __restrict__ acc_p, T* __restrict__ acc_z,
                         scalar_t* __restrict__ gp, scalar_t* __restrict__ gz, scalar_t* __restrict__ gzn) {
  const int64_t n = B * D;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / D, d = e % D;
    const T* gi = key_g + i * (N + 1);
    const T a = inv_p[i], b = inv_z[i], g0 = gi[0];
    const T pv = static_cast<T>(p[e]);
    if (f.need_p) {
      T acc = g0 * b * static_cast<T>(z[e]);
      for (int64_t j = 0; j < N; ++j) acc += gi[j + 1] * inv_n[i * N + j] * static_cast<T>(zn[(i * N + j) * D + d]);
      if (f.in_batch) {
        acc_p[e] = acc;
      } else {
        gp[e] = static_cast<scalar_t>(finish_grad(a, acc, t_p[i], pv));
      }
    }
    if (f.need_z) {
      const T acc = g0 * a * pv;
      if (f.in_batch) {
        acc_z[e] = acc;
      } else {
        gz[e] = static_cast<scalar_t>(finish_grad(b, acc, t_z[i], static_cast<T>(z[e])));
      }
    }
    if (f.need_n) {
      const T* si = key_s + i * (N + 1);
      for (int64_t j = 0; j < N; ++j) {
        const T c = inv_n[i * N + j], gj = gi[j + 1];
        const T wp = sim_grad_scale(c) * gj * a, wn = sim_grad_self(c, gj * si[j + 1]);
        const int64_t o = (i * N + j) * D + d;
        gzn[o] = static_cast<scalar_t>(wp * pv + wn * static_cast<T>(zn[o]));
      }
    }
  }
}

// In-batch terms of one side's gradient, as the CPU's grad_tile: the warp of
// row r of `rows` walks every row c != r of `cols`, adding G_rc * inv(c) *
// cols_c to acc[r] and G_rc * s_rc to t[r]. kByRow: rows = p, cols = z_pos
// (p's gradient); else rows = z_pos, cols = p (z_pos's). lse and g_nce
// belong to p's rows: the warp's own row when kByRow, each partner's else.
template <bool kByRow, typename scalar_t, typename T>
__global__ void __launch_bounds__(kBlockThreads, min_blocks<T>())
    backward_in_batch_kernel(const scalar_t* __restrict__ rows, const scalar_t* __restrict__ cols, int64_t B,
                             int64_t D, T inv_tau, const T* __restrict__ g_nce, const T* __restrict__ inv_rows,
                             const T* __restrict__ inv_cols, const T* __restrict__ lse, T* __restrict__ acc_out,
                             T* __restrict__ t_out) {
  const int64_t r = warp_row();
  const int lane = threadIdx.x % kWarp;
  if (r >= B) return;
  const scalar_t* x = rows + r * D;
  T* acc = acc_out + r * D;
  const T a = inv_rows[r];
  const T l_row = kByRow ? lse[r] : T(0), gn_row = kByRow ? g_nce[r] : T(0);
  T t = T(0);
  for (int64_t c = 0; c < B; ++c) {
    if (c == r) continue;  // the positive, handled by backward_rows_kernel
    const scalar_t* y = cols + c * D;
    const T bc = inv_cols[c];
    const T s = a * bc * warp_dot<T>(x, y, D, lane);
    const T g = logit_grad(s, kByRow ? l_row : lse[c], inv_tau, kByRow ? gn_row : g_nce[c]);
    t += g * s;
    const T w = g * bc;
    for (int64_t d = lane; d < D; d += kWarp) acc[d] += w * static_cast<T>(y[d]);
  }
  if (lane == 0) t_out[r] += t;
}

// The in-batch gradients finished: finish_grad of every element, cast to the input dtype.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kElementThreads, element_min_blocks<T>())
    finish_kernel(const T* __restrict__ acc, const T* __restrict__ t, const T* __restrict__ inv,
                  const scalar_t* __restrict__ x, int64_t B, int64_t D, scalar_t* __restrict__ out) {
  const int64_t n = B * D;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / D;
    out[e] = static_cast<scalar_t>(finish_grad(inv[i], acc[e], t[i], static_cast<T>(x[e])));
  }
}

// The in-batch kernels: one warp per row.
inline unsigned in_batch_blocks(int64_t B) {
  return static_cast<unsigned>((B + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// The per-row kernels: one block per row (B < 2^31 - 1, the grid's x limit,
// for any batch whose (B, D) rows fit in memory).
inline unsigned row_grid(int64_t B) {
  return static_cast<unsigned>(B);
}

// The element kernels: grid-stride, at most 65535 blocks.
inline unsigned element_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kElementThreads - 1) / kElementThreads, 65535));
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T inv_tau = static_cast<T>(1.0 / tau);
    forward_rows_kernel<scalar_t, T><<<row_grid(B), kRowThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
        has_neg ? zn.const_data_ptr<scalar_t>() : nullptr, N, D, inv_tau, !in_batch, nce.mutable_data_ptr<T>(),
        s_pos.mutable_data_ptr<T>(), inv_p.mutable_data_ptr<T>(), inv_z.mutable_data_ptr<T>(),
        inv_n.mutable_data_ptr<T>(), lse.mutable_data_ptr<T>(), in_batch ? lse_l.mutable_data_ptr<T>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (in_batch) {
      forward_in_batch_kernel<scalar_t, T><<<in_batch_blocks(B), kBlockThreads, 0, stream>>>(
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
  // Per key: logit gradient and cosine; per row: the self terms of p and z_pos.
  const at::Tensor key_g = at::empty({B, N + 1}, opt), key_s = at::empty({B, N + 1}, opt);
  const at::Tensor t_p = at::empty({B}, opt), t_z = at::empty({B}, opt);
  // In-batch mode: p's and z_pos's sums, finished after the in-batch kernels.
  at::Tensor acc_p, acc_z;
  if (in_batch && f.need_p) acc_p = at::empty({B, D}, opt);
  if (in_batch && f.need_z) acc_z = at::empty({B, D}, opt);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T inv_tau = static_cast<T>(1.0 / tau);
    const scalar_t* zn_ptr = has_neg ? zn.const_data_ptr<scalar_t>() : nullptr;
    T* accp = acc_p.defined() ? acc_p.mutable_data_ptr<T>() : nullptr;
    T* accz = acc_z.defined() ? acc_z.mutable_data_ptr<T>() : nullptr;
    backward_logit_grads_kernel<scalar_t, T><<<row_grid(B), kRowThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), zn_ptr, N, D, inv_tau, gn.const_data_ptr<T>(),
        gs.const_data_ptr<T>(), ip.const_data_ptr<T>(), iz.const_data_ptr<T>(), in.const_data_ptr<T>(),
        lse.const_data_ptr<T>(), key_g.mutable_data_ptr<T>(), key_s.mutable_data_ptr<T>(), t_p.mutable_data_ptr<T>(),
        t_z.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t n = B * D;
    if (n == 0) return;  // D = 0: the gradients are empty
    backward_rows_kernel<scalar_t, T><<<element_blocks(n), kElementThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), zn_ptr, B, N, D, ip.const_data_ptr<T>(),
        iz.const_data_ptr<T>(), in.const_data_ptr<T>(), key_g.const_data_ptr<T>(), key_s.const_data_ptr<T>(),
        t_p.const_data_ptr<T>(), t_z.const_data_ptr<T>(), f, accp, accz,
        f.need_p ? gp.mutable_data_ptr<scalar_t>() : nullptr, f.need_z ? gz.mutable_data_ptr<scalar_t>() : nullptr,
        f.need_n ? gzn.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!in_batch) return;
    // One side's in-batch terms, then its gradient finished: p's (by_row) or z_pos's.
    auto in_batch_side = [&](bool by_row, const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& inv_rows,
                             const at::Tensor& inv_cols, T* acc, T* t, at::Tensor& out) {
      const auto kernel = by_row ? backward_in_batch_kernel<true, scalar_t, T>
                                 : backward_in_batch_kernel<false, scalar_t, T>;
      kernel<<<in_batch_blocks(B), kBlockThreads, 0, stream>>>(
          rows.const_data_ptr<scalar_t>(), cols.const_data_ptr<scalar_t>(), B, D, inv_tau, gn.const_data_ptr<T>(),
          inv_rows.const_data_ptr<T>(), inv_cols.const_data_ptr<T>(), lse.const_data_ptr<T>(), acc, t);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      finish_kernel<scalar_t, T><<<element_blocks(n), kElementThreads, 0, stream>>>(
          acc, t, inv_rows.const_data_ptr<T>(), rows.const_data_ptr<scalar_t>(), B, D,
          out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (f.need_p) in_batch_side(true, p, z, ip, iz, accp, t_p.mutable_data_ptr<T>(), gp);
    if (f.need_z) in_batch_side(false, z, p, iz, ip, accz, t_z.mutable_data_ptr<T>(), gz);
  });
  return {gp, gz, gzn};
}

TORCH_LIBRARY_IMPL(cwarp, CUDA, m) {
  m.impl("contrastive_loss_forward", &contrastive_loss_forward_cuda);
  m.impl("contrastive_loss_backward", &contrastive_loss_backward_cuda);
}

}  // namespace cuda
}  // namespace cwarp
