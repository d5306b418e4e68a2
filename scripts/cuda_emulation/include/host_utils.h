// The CUDA emulation's view of csrc/host_utils.h: the real header, plus one
// test hook. At the shapes a test can afford every offset fits 32 bits, so
// the kernels' 64-bit index instantiations would never run; with the
// emulator's force_int64 setting, offsets_fit_int32 answers false and the
// launchers take their 64-bit path (always a valid choice, only slower).
#pragma once

#define offsets_fit_int32 offsets_fit_int32_unforced
#include_next "host_utils.h"
#undef offsets_fit_int32

#include "cuda_runtime.h"

namespace cwarp {
inline bool offsets_fit_int32(const at::Tensor& t) {
  return !cuda_emu::global().settings.force_int64 && offsets_fit_int32_unforced(t);
}
}  // namespace cwarp
