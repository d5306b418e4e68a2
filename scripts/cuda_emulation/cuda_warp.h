// Warp-level primitives of the CUDA emulation (cuda_on_cpu.h): shuffles,
// votes, __syncwarp, match and reduce, with the lane arithmetic of the CUDA
// Programming Guide (width subsections included). Each call is a collective
// over its mask: every lane of the mask must reach the same operation, or
// the launch fails with a message naming the call site. A shuffle from a
// lane outside the mask returns all one bits (NaN for floats, -1 for ints).
#pragma once

#include <cstdint>
#include <cstring>
#include <source_location>
#include <string>
#include <type_traits>

namespace cuda_emu {

enum CollectiveKind : int {
  kShflIdx = 1,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
  kSyncWarp,
  kMatchAny,
  kMatchAll,
  kReduce,
};

template <typename T>
uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a warp collective moves at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

inline void check_width(const char* name, int width, const std::source_location& loc) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    running_block().fail(std::string(name) + " at " + where(loc) + ": width " + std::to_string(width) +
                         " is not a power of two in [1, 32]");
  }
}

// The lane whose value a shuffle returns to `lane`, or -1 for the caller's own.
inline int shuffle_source(int kind, unsigned lane, int arg, int width) {
  const int l = static_cast<int>(lane);
  const int base = l & ~(width - 1);
  switch (kind) {
    case kShflIdx:
      return base + (arg & (width - 1));
    case kShflUp:
      return (l - base) < arg ? -1 : l - arg;
    case kShflDown:
      return (l - base) + arg >= width ? -1 : l + arg;
    default: {  // xor: earlier subsections may be read, later ones give the caller's own value
      const int src = l ^ arg;
      return src >= base + width ? -1 : src;
    }
  }
}

template <typename T>
T shuffle(int kind, const char* name, uint32_t mask, T var, int arg, int width, const std::source_location& loc) {
  Block& b = running_block();
  check_width(name, width, loc);
  const auto values = b.collective(mask, kind, name, to_bits(var), loc);
  const int src = shuffle_source(kind, b.lane(), arg, width);
  if (src < 0 || src == static_cast<int>(b.lane())) return var;
  // A lane outside the mask has no value to give: CUDA returns an undefined
  // one, the emulator all one bits (NaN, -1), which shows wherever it is used.
  if (((mask >> src) & 1u) == 0) return from_bits<T>(~uint64_t(0));
  return from_bits<T>(values[src]);
}

}  // namespace cuda_emu

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  return cuda_emu::shuffle(cuda_emu::kShflIdx, "__shfl_sync", mask, var, src_lane, width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  return cuda_emu::shuffle(cuda_emu::kShflUp, "__shfl_up_sync", mask, var, static_cast<int>(delta), width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  return cuda_emu::shuffle(cuda_emu::kShflDown, "__shfl_down_sync", mask, var, static_cast<int>(delta), width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  return cuda_emu::shuffle(cuda_emu::kShflXor, "__shfl_xor_sync", mask, var, lane_mask, width, loc);
}

inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  const auto v = cuda_emu::running_block().collective(mask, cuda_emu::kBallot, "__ballot_sync", pred != 0, loc);
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && v[l]) bits |= 1u << l;
  }
  return bits;
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  const auto v = cuda_emu::running_block().collective(mask, cuda_emu::kAny, "__any_sync", pred != 0, loc);
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && v[l]) return 1;
  }
  return 0;
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  const auto v = cuda_emu::running_block().collective(mask, cuda_emu::kAll, "__all_sync", pred != 0, loc);
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && !v[l]) return 0;
  }
  return 1;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  cuda_emu::running_block().collective(mask, cuda_emu::kSyncWarp, "__syncwarp", 0, loc);
}
inline unsigned __activemask() { return cuda_emu::running_block().live_lanes(); }

template <typename T>
unsigned __match_any_sync(unsigned mask, T value, std::source_location loc = std::source_location::current()) {
  cuda_emu::Block& b = cuda_emu::running_block();
  const auto v = b.collective(mask, cuda_emu::kMatchAny, "__match_any_sync", cuda_emu::to_bits(value), loc);
  const uint64_t mine = v[b.lane()];
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && v[l] == mine) bits |= 1u << l;
  }
  return bits;
}
template <typename T>
unsigned __match_all_sync(unsigned mask, T value, int* pred,
                          std::source_location loc = std::source_location::current()) {
  cuda_emu::Block& b = cuda_emu::running_block();
  const auto v = b.collective(mask, cuda_emu::kMatchAll, "__match_all_sync", cuda_emu::to_bits(value), loc);
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && v[l] != v[b.lane()]) {
      *pred = 0;
      return 0;
    }
  }
  *pred = 1;
  return mask;
}

namespace cuda_emu {
template <typename T, typename Op>
T warp_reduce(const char* name, unsigned mask, T value, Op op, const std::source_location& loc) {
  const auto v = running_block().collective(mask, kReduce, name, to_bits(value), loc);
  bool first = true;
  T acc{};
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    const T x = from_bits<T>(v[l]);
    acc = first ? x : op(acc, x);
    first = false;
  }
  return acc;
}
}  // namespace cuda_emu

#define CUDA_EMU_WARP_REDUCE(fn, T, expr)                                                          \
  inline T fn(unsigned mask, T value, std::source_location loc = std::source_location::current()) { \
    return cuda_emu::warp_reduce<T>(#fn, mask, value, [](T a, T b) { return expr; }, loc);          \
  }
CUDA_EMU_WARP_REDUCE(__reduce_add_sync, unsigned, a + b)
CUDA_EMU_WARP_REDUCE(__reduce_add_sync, int, static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b)))
CUDA_EMU_WARP_REDUCE(__reduce_min_sync, unsigned, a < b ? a : b)
CUDA_EMU_WARP_REDUCE(__reduce_min_sync, int, a < b ? a : b)
CUDA_EMU_WARP_REDUCE(__reduce_max_sync, unsigned, a > b ? a : b)
CUDA_EMU_WARP_REDUCE(__reduce_max_sync, int, a > b ? a : b)
CUDA_EMU_WARP_REDUCE(__reduce_and_sync, unsigned, a & b)
CUDA_EMU_WARP_REDUCE(__reduce_or_sync, unsigned, a | b)
CUDA_EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, a ^ b)
#undef CUDA_EMU_WARP_REDUCE
