// cwarp::local_warp on CUDA: the kernels and their host code are in
// local_warp_cuda.cuh; this file runs them on the current CUDA stream of the
// tensors' device and registers them.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "local_warp_cuda.cuh"

namespace cwarp {
namespace cuda {

// kernel<<<grid, block>>>(args...) on `stream`, then the launch's error check.
struct StreamLauncher {
  cudaStream_t stream;
  bool allow_int32_offsets = true;
  int64_t max_grid_yz = kMaxGridYZ;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) const {
    kernel<<<grid, block, 0, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor local_warp_cuda(const at::Tensor& image, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                           int64_t out_h, int64_t out_w, c10::string_view kind, c10::string_view padding_mode,
                           bool align_corners) {
  const c10::cuda::CUDAGuard guard(image.device());
  return local_warp_forward(StreamLauncher{at::cuda::getCurrentCUDAStream()}, image, params, theta, out_h, out_w,
                            kind, padding_mode, align_corners);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_warp_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& image, const at::Tensor& params,
    const c10::optional<at::Tensor>& theta, c10::string_view kind, c10::string_view padding_mode,
    bool align_corners, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(image.device());
  return local_warp_backward(StreamLauncher{at::cuda::getCurrentCUDAStream()}, grad_out, image, params, theta, kind,
                             padding_mode, align_corners, output_mask);
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(cwarp, CUDA, m) {
  m.impl("local_warp", &cuda::local_warp_cuda);
  m.impl("local_warp_backward", &cuda::local_warp_backward_cuda);
}

}  // namespace cwarp
