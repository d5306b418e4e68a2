// The `cuda_emu` torch library of the CUDA emulation (cuda_on_cpu.h), through
// which Python sets the emulator up and reads what it ran
// (scripts/cuda_emulation/harness.py).
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "cuda_on_cpu.h"

namespace {

void configure(c10::string_view order, int64_t seed, bool force_int64) {
  cuda_emu::Settings s;
  if (order == "forward") {
    s.order = cuda_emu::Order::Forward;
  } else if (order == "reverse") {
    s.order = cuda_emu::Order::Reverse;
  } else if (order == "random") {
    s.order = cuda_emu::Order::Random;
  } else {
    TORCH_CHECK_VALUE(false, "cuda_emu::configure(): unknown order '", std::string(order),
                      "'; expected 'forward', 'reverse' or 'random'");
  }
  s.seed = static_cast<uint64_t>(seed);
  s.force_int64 = force_int64;
  std::lock_guard<std::mutex> lock(cuda_emu::global().launch_mutex);
  cuda_emu::global().settings = s;
}

// Counters since the last reset, in the order of cwarp's harness.STAT_NAMES.
std::vector<int64_t> stats() {
  auto& g = cuda_emu::global();
  std::lock_guard<std::mutex> lock(g.launch_mutex);
  const auto& c = g.counters;
  return {c.launches, c.blocks, c.threads, c.block_barriers, c.warp_collectives, c.atomics,
          c.unchecked_launches + (g.unchecked_launch ? 1 : 0)};
}

// One line per launch since the last reset: "kernel grid=(x,y,z) block=(x,y,z) shared=n".
std::vector<std::string> launches() {
  auto& g = cuda_emu::global();
  std::lock_guard<std::mutex> lock(g.launch_mutex);
  std::vector<std::string> out;
  for (const auto& r : g.launches) {
    out.push_back(r.kernel + " grid=(" + std::to_string(r.grid.x) + "," + std::to_string(r.grid.y) + "," +
                  std::to_string(r.grid.z) + ") block=(" + std::to_string(r.block.x) + "," +
                  std::to_string(r.block.y) + "," + std::to_string(r.block.z) +
                  ") shared=" + std::to_string(r.shared_bytes));
  }
  return out;
}

void reset() {
  auto& g = cuda_emu::global();
  std::lock_guard<std::mutex> lock(g.launch_mutex);
  g.counters = cuda_emu::Counters{};
  g.launches.clear();
  g.unchecked_launch = false;
  g.max_dynamic_shared = cuda_emu::kDefaultDynamicShared;
}

}  // namespace

TORCH_LIBRARY(cuda_emu, m) {
  m.def("configure(str order, int seed, bool force_int64) -> ()", &configure);
  m.def("stats() -> int[]", &stats);
  m.def("launches() -> str[]", &launches);
  m.def("reset() -> ()", &reset);
}
