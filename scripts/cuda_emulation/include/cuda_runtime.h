// Stub of the CUDA runtime API for the CUDA emulation (../cuda_on_cpu.h):
// the harness puts this folder first on the include path and force-includes
// this header, as nvcc does with the real one. Memory is host memory, there
// is one stream, and every launch has finished when it returns.
#pragma once

#include <cstddef>
#include <cstring>

#include "../cuda_on_cpu.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
typedef cudaError_t cudaError;

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

// An invalid launch raises at the launch itself (cuda_emu::Launch), so there
// is never an error left to fetch; the call records that the launch was checked.
inline cudaError_t cudaGetLastError() {
  cuda_emu::global().unchecked_launch = false;
  return cudaSuccess;
}
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
// The opt-in above 48 KiB of dynamic shared memory. The emulator keeps one
// limit for all kernels (launches do not know their kernel's address).
template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > cuda_emu::kMaxDynamicShared) return cudaErrorInvalidValue;
    auto& g = cuda_emu::global();
    if (static_cast<size_t>(value) > g.max_dynamic_shared) g.max_dynamic_shared = static_cast<size_t>(value);
  }
  return cudaSuccess;
}

// The properties of the emulated device: an H100 SXM's (sm_90, 132 SMs).
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int multiProcessorCount;
  int major;
  int minor;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int maxThreadsPerMultiProcessor;
  int regsPerMultiprocessor;
  int maxBlocksPerMultiProcessor;
  int l2CacheSize;
};
inline cudaDeviceProp* cuda_emu_device_properties() {
  static cudaDeviceProp p = [] {
    cudaDeviceProp d{};
    std::strcpy(d.name, "CUDA emulation (H100 properties)");
    d.totalGlobalMem = size_t(80) << 30;
    d.sharedMemPerBlock = 48 * 1024;
    d.regsPerBlock = 65536;
    d.warpSize = 32;
    d.maxThreadsPerBlock = 1024;
    d.maxThreadsDim[0] = 1024;
    d.maxThreadsDim[1] = 1024;
    d.maxThreadsDim[2] = 64;
    d.maxGridSize[0] = 2147483647;
    d.maxGridSize[1] = 65535;
    d.maxGridSize[2] = 65535;
    d.multiProcessorCount = 132;
    d.major = 9;
    d.minor = 0;
    d.sharedMemPerBlockOptin = cuda_emu::kMaxDynamicShared;
    d.sharedMemPerMultiprocessor = 228 * 1024;
    d.maxThreadsPerMultiProcessor = 2048;
    d.regsPerMultiprocessor = 65536;
    d.maxBlocksPerMultiProcessor = 32;
    d.l2CacheSize = 50 * 1024 * 1024;
    return d;
  }();
  return &p;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  *prop = *cuda_emu_device_properties();
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
