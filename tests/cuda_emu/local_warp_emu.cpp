// csrc/ops/local_warp/local_warp_cuda.cuh compiled for the CPU emulation of
// CUDA (cuda_emu.h): the CUDA local_warp's host code and kernels, run on CPU
// tensors. Built by tests/ops/test_local_warp_cuda_emu.py.
#include <torch/extension.h>

#include "cuda_emu.h"  // after torch's headers: it defines CUDA's keywords as macros
#include "ops/local_warp/local_warp_cuda.cuh"

namespace {

// Runs kernels with cuda_emu::launch. The two knobs let the tests reach what
// small inputs would not: the 64-bit offset instantiations, and grids that
// stride (a cap on gridDim.y and z far below CUDA's 65535).
struct EmuLauncher {
  bool allow_int32_offsets = true;
  int64_t max_grid_yz = cwarp::cuda::kMaxGridYZ;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) const {
    cuda_emu::launch(grid, block, kernel, args...);
  }
};

at::Tensor forward(const at::Tensor& image, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                   int64_t out_h, int64_t out_w, const std::string& kind, const std::string& padding_mode,
                   bool align_corners, bool int32, int64_t max_grid) {
  return cwarp::cuda::local_warp_forward(EmuLauncher{int32, max_grid}, image, params, theta, out_h, out_w, kind,
                                         padding_mode, align_corners);
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& image, const at::Tensor& params,
                                 const c10::optional<at::Tensor>& theta, const std::string& kind,
                                 const std::string& padding_mode, bool align_corners, std::vector<bool> mask,
                                 bool int32, int64_t max_grid) {
  TORCH_CHECK(mask.size() == 3, "local_warp_emu.backward: expected 3 output mask entries");
  auto [gi, gp, gt] = cwarp::cuda::local_warp_backward(EmuLauncher{int32, max_grid}, grad_out, image, params, theta,
                                                       kind, padding_mode, align_corners,
                                                       {mask[0], mask[1], mask[2]});
  return {gi, gp, gt};
}

// Threads of one block that meet different barriers: the emulator must report it.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
  }
}

void divergent_barrier() {
  std::vector<int> out(64);
  cuda_emu::launch(dim3(1), dim3(64), divergent_barrier_kernel, out.data());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("forward", &forward, "the CUDA local_warp forward, emulated on the CPU", py::arg("image"), py::arg("params"),
        py::arg("theta"), py::arg("out_h"), py::arg("out_w"), py::arg("kind"), py::arg("padding_mode"),
        py::arg("align_corners"), py::arg("int32") = true, py::arg("max_grid") = cwarp::cuda::kMaxGridYZ);
  m.def("backward", &backward, "the CUDA local_warp backward, emulated on the CPU", py::arg("grad_out"),
        py::arg("image"), py::arg("params"), py::arg("theta"), py::arg("kind"), py::arg("padding_mode"),
        py::arg("align_corners"), py::arg("mask"), py::arg("int32") = true,
        py::arg("max_grid") = cwarp::cuda::kMaxGridYZ);
  m.def("divergent_barrier", &divergent_barrier, "a kernel whose threads meet different barriers");
}
