// Stub of ATen/cuda/CUDAContext.h for the CUDA emulation: the current stream
// (the only one) and the emulated device's properties.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_runtime.h"

namespace at::cuda {
using c10::cuda::CUDAStream;
using c10::cuda::getCurrentCUDAStream;
using c10::cuda::getDefaultCUDAStream;
inline cudaDeviceProp* getCurrentDeviceProperties() { return cuda_emu_device_properties(); }
inline cudaDeviceProp* getDeviceProperties(c10::DeviceIndex) { return cuda_emu_device_properties(); }
}  // namespace at::cuda

#define AT_CUDA_CHECK(EXPR) C10_CUDA_CHECK(EXPR)
