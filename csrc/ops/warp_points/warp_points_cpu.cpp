// cwarp::warp_points on the CPU: each point solved on its own (point_solver.h),
// in double whatever the points' dtype, in a parallel loop over points. The
// result of a point does not depend on the others or on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "host_utils.h"
#include "point_solver.h"

namespace cwarp {
namespace cpu {

namespace {

at::Tensor warp_points(const at::Tensor& points, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                       c10::string_view kind_name) {
  constexpr const char* op = "cwarp::warp_points";
  check_warp_points_inputs(op, points, params, theta);
  const WarpKind kind = parse_kind(op, kind_name);
  const at::Tensor pts = as_opmath<double>(points);
  const at::Tensor prm = as_opmath<double>(params);
  const bool has_theta = theta.has_value() && theta->defined();
  const at::Tensor th = has_theta ? as_opmath<double>(*theta) : at::Tensor();
  at::Tensor out = at::empty_like(pts);
  const int64_t B = pts.size(0), P = pts.size(1);
  TORCH_CHECK_VALUE(prm.size(1) <= kPointMaxWarps, op, "(): expected at most ", kPointMaxWarps,
                    " warps per image (params of shape (B, K, 5) with K <= ", kPointMaxWarps, "), got K = ",
                    prm.size(1));
  const int K = static_cast<int>(prm.size(1));
  const double* src = pts.data_ptr<double>();
  const double* prm_ptr = prm.data_ptr<double>();
  const double* th_ptr = has_theta ? th.data_ptr<double>() : nullptr;
  double* dst = out.data_ptr<double>();
  // A point costs O(K^2 * kPointScanSteps) weight evaluations: small grains.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, int64_t(K) * K * kPointScanSteps));
  at::parallel_for(0, B * P, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / P;
      const Affine<double> A = has_theta ? Affine<double>{th_ptr[6 * b], th_ptr[6 * b + 1], th_ptr[6 * b + 2],
                                                          th_ptr[6 * b + 3], th_ptr[6 * b + 4], th_ptr[6 * b + 5]}
                                         : identity_affine<double>();
      double qx, qy;
      invert_affine(A, src[2 * i], src[2 * i + 1], &qx, &qy);
      solve_preimage(kind, prm_ptr + 5 * K * b, K, qx, qy, &dst[2 * i], &dst[2 * i + 1]);
    }
  });
  return out.to(points.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(cwarp, CPU, m) {
  m.impl("warp_points", &warp_points);
}

}  // namespace cpu
}  // namespace cwarp
