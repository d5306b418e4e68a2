// Stub of c10/cuda/CUDAStream.h for the CUDA emulation: one stream.
#pragma once

#include <c10/core/Device.h>

#include "cuda_runtime.h"

namespace c10::cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
  c10::DeviceIndex device_index() const { return 0; }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return CUDAStream{}; }
inline CUDAStream getDefaultCUDAStream(c10::DeviceIndex = -1) { return CUDAStream{}; }
}  // namespace c10::cuda
