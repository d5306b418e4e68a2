// Stub of c10/cuda/CUDAGuard.h for the CUDA emulation: the emulated device is
// the host, so a guard has no device to switch to (and accepts CPU tensors'
// devices, which the real guard would refuse).
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Optional.h>

#include "CUDAStream.h"

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
  explicit CUDAGuard(c10::DeviceIndex) {}
};
struct OptionalCUDAGuard {
  OptionalCUDAGuard() = default;
  explicit OptionalCUDAGuard(c10::Device) {}
  explicit OptionalCUDAGuard(std::optional<c10::Device>) {}
  explicit OptionalCUDAGuard(c10::DeviceIndex) {}
  void set_device(c10::Device) {}
  void reset() {}
};
}  // namespace c10::cuda
