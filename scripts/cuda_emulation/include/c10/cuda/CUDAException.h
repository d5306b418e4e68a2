// Stub of c10/cuda/CUDAException.h for the CUDA emulation.
#pragma once

#include <c10/util/Exception.h>

#include "cuda_runtime.h"

#define C10_CUDA_CHECK(EXPR)                                                                            \
  do {                                                                                                  \
    const cudaError_t cuda_emu_err = (EXPR);                                                            \
    TORCH_CHECK(cuda_emu_err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(cuda_emu_err)); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
