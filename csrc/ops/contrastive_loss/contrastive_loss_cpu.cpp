// cwarp::contrastive_loss on the CPU: forward and backward.
//
// Row pass (both modes): one task per block of rows. For row i it reads p_i,
// zpos_i and the N rows zneg_ij once, computing the squared norms and the dot
// products in the same loop, so the forward makes one pass over the inputs.
// It saves only the inverse norms and the per-row logsumexp; no normalized
// copy and no logit is kept (cosines are a * b * <x, y> on the raw rows).
//
// In-batch mode adds the terms <p_i, zpos_k>, k != i. They are computed in
// tiles of kRowTile rows of p by kColTile rows of z_pos: a GEMM of the raw
// rows (at::mm_out, MKL) into a per-thread tile buffer, scaled by the inverse
// norms, folded into a running (online) logsumexp. No (B, B) matrix exists;
// the extra memory is O(threads * tile) plus, for half types, float32 copies
// of p and z_pos (O(B * D)).
//
// Backward: the gradient of every logit is recomputed from the saved
// logsumexp. Rows own their p / zneg gradients; in-batch mode runs one pass
// over row tiles (gradient of p) and one over column tiles (gradient of
// z_pos), each recomputing its tiles, as flash-attention's backward does. Each
// task owns the gradient rows it writes and sums in a fixed order: no atomics,
// and the result does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <tuple>
#include <vector>

#include "checks.h"
#include "contrastive_math.h"
#include "cwarp.h"
#include "vec_exp.h"

namespace cwarp {
namespace cpu {
namespace {

constexpr const char* kFwd = "cwarp::contrastive_loss_forward";
constexpr const char* kBwd = "cwarp::contrastive_loss_backward";
// A 64 x 256 float tile is 64 KiB: it stays in L2 between the GEMM that
// writes it and the loops that read it.
constexpr int64_t kRowTile = 64;
constexpr int64_t kColTile = 256;

template <typename T>
struct Dims {
  int64_t B, N, D;
  T inv_tau;
};

// (x.x, y.y, x.y) of two rows, accumulated in T.
template <typename T, typename scalar_t>
C10_ALWAYS_INLINE void dots(const scalar_t* __restrict x, const scalar_t* __restrict y, int64_t D, T* xx, T* yy,
                            T* xy) {
  T sxx = T(0), syy = T(0), sxy = T(0);
#pragma omp simd reduction(+ : sxx, syy, sxy)
  for (int64_t d = 0; d < D; ++d) {
    const T u = static_cast<T>(x[d]);
    const T v = static_cast<T>(y[d]);
    sxx += u * u;
    syy += v * v;
    sxy += u * v;
  }
  *xx = sxx;
  *yy = syy;
  *xy = sxy;
}

// ----------------------------------------------------------------------------
// Forward, row pass: norms, s_pos, the negatives' logits, and the running
// logsumexp state (m, l) of [s_pos, s_neg_i*] / tau.
// ----------------------------------------------------------------------------
template <typename scalar_t>
CWARP_CPU_MULTIVERSION void forward_rows(const Dims<at::opmath_type<scalar_t>>& g, const scalar_t* p,
                                         const scalar_t* z, const scalar_t* zn, at::opmath_type<scalar_t>* s_pos,
                                         at::opmath_type<scalar_t>* inv_p, at::opmath_type<scalar_t>* inv_z,
                                         at::opmath_type<scalar_t>* inv_n, at::opmath_type<scalar_t>* lse_m,
                                         at::opmath_type<scalar_t>* lse_l, int64_t begin, int64_t end) {
  using T = at::opmath_type<scalar_t>;
  const int64_t D = g.D, N = g.N;
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* pi = p + i * D;
    T pp, zz, pz;
    dots<T>(pi, z + i * D, D, &pp, &zz, &pz);
    const T a = inv_norm(pp), b = inv_norm(zz);
    const T s = a * b * pz;
    OnlineLSE<T> st;
    st.add(s * g.inv_tau);
    for (int64_t j = 0; j < N; ++j) {
      T pp2, nn, pn;
      dots<T>(pi, zn + (i * N + j) * D, D, &pp2, &nn, &pn);
      const T c = inv_norm(nn);
      inv_n[i * N + j] = c;
      st.add(a * c * pn * g.inv_tau);
    }
    s_pos[i] = s;
    inv_p[i] = a;
    inv_z[i] = b;
    lse_m[i] = st.m;
    lse_l[i] = st.l;
  }
}

// Folds one (R x C) tile of raw dot products <p_i, z_k> into the running
// logsumexp of its rows. The diagonal (k == i, the positive, already counted)
// is skipped. `tile` is overwritten with the scaled logits.
template <typename T>
CWARP_CPU_MULTIVERSION void fold_tile(T* tile, int64_t R, int64_t C, int64_t r0, int64_t c0, const T* inv_p,
                                      const T* inv_z, T inv_tau, T* m, T* l) {
  const T* __restrict bz = inv_z + c0;
  for (int64_t r = 0; r < R; ++r) {
    T* __restrict x = tile + r * C;
    const T as = inv_p[r0 + r] * inv_tau;
    T tm = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : tm)
    for (int64_t c = 0; c < C; ++c) {
      x[c] = x[c] * as * bz[c];
      tm = std::max(tm, x[c]);  // NaN is ignored here and caught by the sum
    }
    const int64_t diag = r0 + r - c0;
    if (diag >= 0 && diag < C) {
      // Recompute the max without the diagonal only when it was the max.
      const T xd = x[diag];
      x[diag] = -std::numeric_limits<T>::infinity();
      if (xd == tm) {
        tm = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < C; ++c) tm = std::max(tm, x[c]);
      }
    }
    OnlineLSE<T> st;
    st.m = m[r];
    st.l = l[r];
    st.rescale(tm);
    const T mm = st.m;
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += vexp(x[c] - mm);
    m[r] = st.m;
    l[r] = st.l + sum;
  }
}

// ----------------------------------------------------------------------------
// Backward, row pass: the positive and negative terms of row i.
//   acc_p (D): sum over partners y of G * inv_norm(y) * y; t_p: sum of G * s
//   gzn_ij: finished; the positive's share of z_pos's gradient either
//   finished (gz, not in-batch) or left as acc_z / t_z for the column pass.
// ----------------------------------------------------------------------------
template <typename scalar_t>
struct BackwardArgs {
  using T = at::opmath_type<scalar_t>;
  Dims<T> g;
  const scalar_t *p, *z, *zn;
  const T *g_nce, *g_s, *inv_p, *inv_z, *inv_n, *lse;
  scalar_t *gp, *gz, *gzn;  // final gradients (null when not wanted or in-batch)
  T *acc_p, *acc_z, *t_p, *t_z;  // in-batch accumulators (null otherwise)
  bool need_p, need_z, need_n;
};

template <typename scalar_t>
CWARP_CPU_MULTIVERSION void backward_rows(const BackwardArgs<scalar_t>& A, int64_t begin, int64_t end) {
  using T = at::opmath_type<scalar_t>;
  const int64_t D = A.g.D, N = A.g.N;
  const T inv_tau = A.g.inv_tau;
  std::vector<T> row_acc(A.acc_p == nullptr ? D : 0);
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* __restrict pi = A.p + i * D;
    const scalar_t* __restrict zi = A.z + i * D;
    const T a = A.inv_p[i], b = A.inv_z[i], lse = A.lse[i], gn = A.g_nce[i];
    T pp, zz, pz;
    dots<T>(pi, zi, D, &pp, &zz, &pz);
    const T s = a * b * pz;
    const T g0 = positive_grad(s, lse, inv_tau, gn, A.g_s[i]);
    T tp = g0 * s;
    T* __restrict acc = A.acc_p != nullptr ? A.acc_p + i * D : row_acc.data();
    if (A.need_p) {
      const T w = g0 * b;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc[d] = w * static_cast<T>(zi[d]);
    }
    for (int64_t j = 0; j < N; ++j) {
      const scalar_t* __restrict zij = A.zn + (i * N + j) * D;
      T pp2, nn, pn;
      dots<T>(pi, zij, D, &pp2, &nn, &pn);
      const T c = A.inv_n[i * N + j];
      const T sj = a * c * pn;
      const T gj = logit_grad(sj, lse, inv_tau, gn);
      tp += gj * sj;
      if (A.need_p) {
        const T w = gj * c;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<T>(zij[d]);
      }
      if (A.need_n) {
        const T wp = sim_grad_scale(c) * gj * a, wn = sim_grad_self(c, gj * sj);
        scalar_t* __restrict out = A.gzn + (i * N + j) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(wp * static_cast<T>(pi[d]) + wn * static_cast<T>(zij[d]));
      }
    }
    if (A.need_p) {
      if (A.acc_p != nullptr) {
        A.t_p[i] = tp;
      } else {
        const T w = sim_grad_scale(a), ws = sim_grad_self(a, tp);
        scalar_t* __restrict out = A.gp + i * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(w * acc[d] + ws * static_cast<T>(pi[d]));
      }
    }
    if (A.need_z) {
      const T wp = g0 * a;
      if (A.acc_z != nullptr) {
        T* __restrict out = A.acc_z + i * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = wp * static_cast<T>(pi[d]);
        A.t_z[i] = g0 * s;
      } else {
        const T w = sim_grad_scale(b) * wp, ws = sim_grad_self(b, g0 * s);
        scalar_t* __restrict out = A.gz + i * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(w * static_cast<T>(pi[d]) + ws * static_cast<T>(zi[d]));
      }
    }
  }
}

// Columns [c_begin, c_end) of one tile row (see grad_tile): x[c] becomes
// G * bc[c]; returns the sum of G * s. kPerColumn: lse and g_nce vary along
// the row (a tile of z's rows, whose columns are p's rows), else they are the
// row's own (l[0], gn[0]). A compile-time choice, so that both loops
// vectorize (with a runtime stride of 0 or 1, GCC kept them scalar).
template <bool kPerColumn, typename T>
C10_ALWAYS_INLINE T grad_span(T* __restrict x, int64_t c_begin, int64_t c_end, T ar, const T* __restrict bc,
                              const T* __restrict l, const T* __restrict gn, T inv_tau) {
  T tr = T(0);
#pragma omp simd reduction(+ : tr)
  for (int64_t c = c_begin; c < c_end; ++c) {
    const T s = x[c] * ar * bc[c];
    const T gw = logit_grad(s, kPerColumn ? l[c] : l[0], inv_tau, kPerColumn ? gn[c] : gn[0], VecExp());
    tr += gw * s;
    x[c] = gw * bc[c];
  }
  return tr;
}

template <typename T>
C10_ALWAYS_INLINE T grad_span(bool per_column, T* x, int64_t c_begin, int64_t c_end, T ar, const T* bc,
                              const T* l, const T* gn, T inv_tau) {
  return per_column ? grad_span<true>(x, c_begin, c_end, ar, bc, l, gn, inv_tau)
                    : grad_span<false>(x, c_begin, c_end, ar, bc, l, gn, inv_tau);
}

// Turns a tile of raw dot products into the in-batch gradient weights.
// The tile is row-major over (rows i of p) x (cols k of z) when `by_row`,
// else over (rows k of z) x (cols i of p). Writes G_ik times the partner's
// inverse norm (b_k for p's gradient, a_i for z's) and adds G_ik * s_ik to
// `t` of the tile's row. The diagonal (the positive, handled by the row pass)
// is left out of both and zeroed.
template <typename T>
CWARP_CPU_MULTIVERSION void grad_tile(T* tile, int64_t R, int64_t C, int64_t r0, int64_t c0, bool by_row,
                                      const T* inv_p, const T* inv_z, const T* lse, const T* g_nce, T inv_tau,
                                      T* t) {
  const T* inv_row = by_row ? inv_p : inv_z;
  const T* bc = (by_row ? inv_z : inv_p) + c0;
  for (int64_t r = 0; r < R; ++r) {
    T* x = tile + r * C;
    const T ar = inv_row[r0 + r];
    // lse and g_nce belong to p's rows: the tile's row when by_row, else its column.
    const T* l = by_row ? lse + r0 + r : lse + c0;
    const T* gn = by_row ? g_nce + r0 + r : g_nce + c0;
    const int64_t diag = r0 + r - c0;
    T tr;
    if (diag >= 0 && diag < C) {
      tr = grad_span(!by_row, x, 0, diag, ar, bc, l, gn, inv_tau);
      tr += grad_span(!by_row, x, diag + 1, C, ar, bc, l, gn, inv_tau);
      x[diag] = T(0);
    } else {
      tr = grad_span(!by_row, x, 0, C, ar, bc, l, gn, inv_tau);
    }
    t[r0 + r] += tr;
  }
}

// GEMM operand in the compute dtype (no copy for float / double). Detached:
// the worker threads of at::parallel_for run at::mm_out without this
// thread's below-autograd dispatch state, and out= ops refuse inputs that
// require grad.
at::Tensor opmath_copy(const at::Tensor& t) {
  return t.detach().to(at::toOpMathType(t.scalar_type())).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> contrastive_loss_forward_cpu(
    const at::Tensor& p_in, const at::Tensor& z_in, const c10::optional<at::Tensor>& zn_opt, double tau,
    bool in_batch) {
  check_contrastive_inputs(kFwd, p_in, z_in, zn_opt, tau);
  const bool has_neg = zn_opt.has_value() && zn_opt->defined();
  const int64_t B = p_in.size(0), D = p_in.size(1), N = has_neg ? zn_opt->size(1) : 0;
  const at::ScalarType opmath = at::toOpMathType(p_in.scalar_type());
  const auto opt = p_in.options().dtype(opmath);
  at::Tensor nce = at::empty({B}, opt), s_pos = at::empty({B}, opt), inv_p = at::empty({B}, opt),
             inv_z = at::empty({B}, opt), inv_n = at::empty({B, N}, opt), lse = at::empty({B}, opt);
  if (B == 0) return {nce, s_pos, inv_p, inv_z, inv_n, lse};
  const at::Tensor p = p_in.contiguous(), z = z_in.contiguous();
  const at::Tensor zn = has_neg ? zn_opt->contiguous() : at::Tensor();
  at::Tensor lse_l = at::empty({B}, opt);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const Dims<T> g{B, N, D, static_cast<T>(1.0 / tau)};
    T* m_ptr = lse.mutable_data_ptr<T>();
    T* l_ptr = lse_l.mutable_data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, D * (N + 2)));
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      forward_rows<scalar_t>(g, p.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(),
                             has_neg ? zn.const_data_ptr<scalar_t>() : nullptr, s_pos.mutable_data_ptr<T>(),
                             inv_p.mutable_data_ptr<T>(), inv_z.mutable_data_ptr<T>(), inv_n.mutable_data_ptr<T>(),
                             m_ptr, l_ptr, begin, end);
    });
    if (in_batch) {
      // GEMM operands in the compute dtype: no copy for float / double.
      const at::Tensor pf = opmath_copy(p), zf = opmath_copy(z);
      const T* ip = inv_p.const_data_ptr<T>();
      const T* iz = inv_z.const_data_ptr<T>();
      const int64_t n_tiles = (B + kRowTile - 1) / kRowTile;
      at::parallel_for(0, n_tiles, 1, [&](int64_t t0, int64_t t1) {
        at::Tensor buf = at::empty({kRowTile * kColTile}, opt);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t * kRowTile, R = std::min(kRowTile, B - r0);
          const at::Tensor pr = pf.narrow(0, r0, R);
          for (int64_t c0 = 0; c0 < B; c0 += kColTile) {
            const int64_t C = std::min(kColTile, B - c0);
            at::Tensor tile = buf.narrow(0, 0, R * C).view({R, C});
            at::mm_out(tile, pr, zf.narrow(0, c0, C).t());
            fold_tile<T>(tile.mutable_data_ptr<T>(), R, C, r0, c0, ip, iz, g.inv_tau, m_ptr + r0, l_ptr + r0);
          }
        }
      });
    }
    // lse = m + log(l); nce = lse - s_pos / tau.
    T* nce_ptr = nce.mutable_data_ptr<T>();
    const T* sp = s_pos.const_data_ptr<T>();
    for (int64_t i = 0; i < B; ++i) {
      OnlineLSE<T> st;
      st.m = m_ptr[i];
      st.l = l_ptr[i];
      m_ptr[i] = st.value();
      nce_ptr[i] = m_ptr[i] - sp[i] * g.inv_tau;
    }
  });
  return {nce, s_pos, inv_p, inv_z, inv_n, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_loss_backward_cpu(
    const at::Tensor& grad_nce, const at::Tensor& grad_s, const at::Tensor& p_in, const at::Tensor& z_in,
    const c10::optional<at::Tensor>& zn_opt, const at::Tensor& inv_p_in, const at::Tensor& inv_z_in,
    const at::Tensor& inv_n_in, const at::Tensor& lse_in, double tau, bool in_batch,
    std::array<bool, 3> output_mask) {
  check_contrastive_inputs(kBwd, p_in, z_in, zn_opt, tau);
  const bool has_neg = zn_opt.has_value() && zn_opt->defined();
  const int64_t B = p_in.size(0), D = p_in.size(1), N = has_neg ? zn_opt->size(1) : 0;
  const at::ScalarType opmath = at::toOpMathType(p_in.scalar_type());
  for (const at::Tensor* t : {&grad_nce, &grad_s, &inv_p_in, &inv_z_in, &lse_in}) {
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == B, kBwd, "(): expected per-row tensors of shape (B,) = (", B,
                      "), got ", t->sizes());
  }
  TORCH_CHECK_VALUE(inv_n_in.dim() == 2 && inv_n_in.size(0) == B && inv_n_in.size(1) == N, kBwd,
                    "(): expected inv_z_neg of shape (B, N) = (", B, ", ", N, "), got ", inv_n_in.sizes());
  const bool need_p = output_mask[0], need_z = output_mask[1], need_n = output_mask[2] && has_neg;
  at::Tensor gp = need_p ? at::empty({B, D}, p_in.options()) : at::empty({0}, p_in.options());
  at::Tensor gz = need_z ? at::empty({B, D}, p_in.options()) : at::empty({0}, p_in.options());
  at::Tensor gzn = need_n ? at::empty({B, N, D}, p_in.options()) : at::empty({0}, p_in.options());
  if (B == 0 || !(need_p || need_z || need_n)) return {gp, gz, gzn};

  const at::Tensor p = p_in.contiguous(), z = z_in.contiguous();
  const at::Tensor zn = has_neg ? zn_opt->contiguous() : at::Tensor();
  auto per_row = [&](const at::Tensor& t) { return t.to(opmath).contiguous(); };
  const at::Tensor gn = per_row(grad_nce), gs = per_row(grad_s), ip = per_row(inv_p_in), iz = per_row(inv_z_in),
                   in = per_row(inv_n_in), lse = per_row(lse_in);
  const auto opt = p.options().dtype(opmath);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "cwarp_contrastive_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    BackwardArgs<scalar_t> A{};
    A.g = Dims<T>{B, N, D, static_cast<T>(1.0 / tau)};
    A.p = p.const_data_ptr<scalar_t>();
    A.z = z.const_data_ptr<scalar_t>();
    A.zn = has_neg ? zn.const_data_ptr<scalar_t>() : nullptr;
    A.g_nce = gn.const_data_ptr<T>();
    A.g_s = gs.const_data_ptr<T>();
    A.inv_p = ip.const_data_ptr<T>();
    A.inv_z = iz.const_data_ptr<T>();
    A.inv_n = in.const_data_ptr<T>();
    A.lse = lse.const_data_ptr<T>();
    A.gzn = need_n ? gzn.mutable_data_ptr<scalar_t>() : nullptr;
    A.need_p = need_p;
    A.need_z = need_z;
    A.need_n = need_n;
    at::Tensor acc_p, acc_z, t_p, t_z;
    if (in_batch) {
      if (need_p) {
        acc_p = at::empty({B, D}, opt);
        t_p = at::empty({B}, opt);
        A.acc_p = acc_p.mutable_data_ptr<T>();
        A.t_p = t_p.mutable_data_ptr<T>();
      }
      if (need_z) {
        acc_z = at::empty({B, D}, opt);
        t_z = at::empty({B}, opt);
        A.acc_z = acc_z.mutable_data_ptr<T>();
        A.t_z = t_z.mutable_data_ptr<T>();
      }
    } else {
      A.gp = need_p ? gp.mutable_data_ptr<scalar_t>() : nullptr;
      A.gz = need_z ? gz.mutable_data_ptr<scalar_t>() : nullptr;
    }
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, D * (N + 2)));
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) { backward_rows<scalar_t>(A, begin, end); });
    if (!in_batch || !(need_p || need_z)) return;

    const at::Tensor pf = opmath_copy(p), zf = opmath_copy(z);
    // One side's gradient in tiles: tasks own blocks of rows of `rows` (p
    // when by_row, z_pos otherwise) and sweep the other side's rows as the
    // tile's columns, accumulating tile @ cols into their own rows of `acc`.
    auto tiled_grad = [&](const at::Tensor& rows, const at::Tensor& cols, bool by_row, T* t_side,
                          const at::Tensor& acc_side) {
      const int64_t n_tiles = (B + kRowTile - 1) / kRowTile;
      at::parallel_for(0, n_tiles, 1, [&](int64_t t0, int64_t t1) {
        at::Tensor buf = at::empty({kRowTile * kColTile}, opt);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t * kRowTile, R = std::min(kRowTile, B - r0);
          const at::Tensor rr = rows.narrow(0, r0, R);
          at::Tensor acc = acc_side.narrow(0, r0, R);
          for (int64_t c0 = 0; c0 < B; c0 += kColTile) {
            const int64_t C = std::min(kColTile, B - c0);
            at::Tensor tile = buf.narrow(0, 0, R * C).view({R, C});
            const at::Tensor cc = cols.narrow(0, c0, C);
            at::mm_out(tile, rr, cc.t());
            grad_tile<T>(tile.mutable_data_ptr<T>(), R, C, r0, c0, by_row, A.inv_p, A.inv_z, A.lse, A.g_nce,
                         A.g.inv_tau, t_side);
            at::addmm_out(acc, acc, tile, cc);
          }
        }
      });
    };
    if (need_p) tiled_grad(pf, zf, /*by_row=*/true, A.t_p, acc_p);
    if (need_z) tiled_grad(zf, pf, /*by_row=*/false, A.t_z, acc_z);
    // Finish: grad = inv * acc - inv^2 * mask * t * x (sim_grad_scale / sim_grad_self).
    auto finish = [&](const at::Tensor& accum, const at::Tensor& tsum, const at::Tensor& inv, const at::Tensor& x,
                      at::Tensor& out) {
      const T* invp = inv.const_data_ptr<T>();
      const T* tp = tsum.const_data_ptr<T>();
      const T* ap = accum.const_data_ptr<T>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, D)), [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) {
          const T w = sim_grad_scale(invp[i]), ws = sim_grad_self(invp[i], tp[i]);
          for (int64_t d = 0; d < D; ++d)
            op[i * D + d] = static_cast<scalar_t>(w * ap[i * D + d] + ws * static_cast<T>(xp[i * D + d]));
        }
      });
    };
    if (need_p) finish(acc_p, t_p, ip, p, gp);
    if (need_z) finish(acc_z, t_z, iz, z, gz);
  });
  return {gp, gz, gzn};
}

TORCH_LIBRARY_IMPL(cwarp, CPU, m) {
  m.impl("contrastive_loss_forward", &contrastive_loss_forward_cpu);
  m.impl("contrastive_loss_backward", &contrastive_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace cwarp
