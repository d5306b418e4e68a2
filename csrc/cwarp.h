// Attribute macros of the CPU kernels (csrc/ops/<op>/*_cpu.cpp): one clone per ISA, and no
// vectorization where scalar code is faster. The schemas live in csrc/registration.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace cwarp {

// Defines every multiversioned CPU kernel: GCC / clang compile the function
// once per listed ISA and pick one at load time, so a default build (no
// -march=native) still runs AVX2 / AVX-512 code where the machine has it.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(CWARP_NO_MULTIVERSION)
#define CWARP_CPU_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CWARP_CPU_MULTIVERSION
#endif

// Keeps GCC from vectorizing a loop that is faster scalar (see its comment).
#if defined(__GNUC__) && !defined(__clang__)
#define CWARP_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define CWARP_NO_VECTORIZE
#endif

}  // namespace cwarp
