// Runs cwarp's CUDA kernels on the CPU, for tests on machines without a GPU.
//
// A kernel source written for nvcc is compiled by the host compiler with this
// header first: the CUDA keywords become plain C++, and every CUDA thread of
// a block becomes a fiber (ucontext) of one OS thread. A fiber runs until it
// reaches a barrier (__syncthreads, or a warp shuffle, which synchronizes its
// warp); the scheduler then runs the others and releases a barrier once every
// thread it concerns has arrived. Blocks run one after another, so a
// function-static array is the running block's shared memory.
//
// It checks what a GPU would leave undefined rather than emulate it: a barrier
// that some threads of the block never reach (one exited, or waits at a warp
// shuffle instead) and a shuffle whose warp is not complete are errors, thrown
// from launch(). Atomics are plain read-modify-writes: fibers never interleave
// inside one. Memory is not bounds-checked and floating point is the host's
// (FMA contraction as the host compiler chooses): results are compared with a
// tolerance, and bitwise only where the kernel's own arithmetic is integer
// (the fixed-point image gradient) or ordered (the per-block partial sums).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_emu {

constexpr int kWarpSize = 32;

enum class Wait { Running, Block, Warp, Done };

struct Fiber {
  ucontext_t ctx;
  dim3 tid;
  int linear = 0;
  Wait wait = Wait::Running;
};

struct Launch {
  dim3 grid, block, block_idx;
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  std::vector<uint64_t> lane_values;  // one slot per thread, for shuffles
  std::function<void()> body;
  std::exception_ptr error;
  uint64_t barriers = 0;  // block barriers released, for tests of the emulator
};

inline Launch*& running() {
  static Launch* l = nullptr;
  return l;
}

inline Launch& launch_state() {
  Launch* l = running();
  if (l == nullptr) throw std::logic_error("cuda_emu: device code called outside a launch");
  return *l;
}

inline void yield(Wait w) {
  Launch& l = launch_state();
  Fiber* f = l.current;
  f->wait = w;
  swapcontext(&f->ctx, &l.scheduler);
}

inline void fiber_entry() {
  Launch& l = launch_state();
  try {
    l.body();
  } catch (...) {
    if (!l.error) l.error = std::current_exception();
  }
  l.current->wait = Wait::Done;
  swapcontext(&l.current->ctx, &l.scheduler);
}

// Releases the barriers every waiting thread has reached; false when none can be.
inline bool release(Launch& l) {
  const int n = static_cast<int>(l.fibers.size());
  bool released = false;
  for (int w0 = 0; w0 < n; w0 += kWarpSize) {
    const int w1 = std::min(n, w0 + kWarpSize);
    int at_warp = 0, done = 0;
    for (int i = w0; i < w1; ++i) {
      at_warp += l.fibers[i].wait == Wait::Warp;
      done += l.fibers[i].wait == Wait::Done;
    }
    if (at_warp == 0) continue;
    if (at_warp + done == w1 - w0 && done > 0) {
      throw std::runtime_error("cuda_emu: a warp shuffle with lanes that have exited (warp " +
                               std::to_string(w0 / kWarpSize) + ")");
    }
    if (at_warp == w1 - w0) {
      for (int i = w0; i < w1; ++i) l.fibers[i].wait = Wait::Running;
      released = true;
    }
  }
  if (released) return true;
  int at_block = 0, done = 0;
  for (const Fiber& f : l.fibers) {
    at_block += f.wait == Wait::Block;
    done += f.wait == Wait::Done;
  }
  if (at_block == n) {
    for (Fiber& f : l.fibers) f.wait = Wait::Running;
    ++l.barriers;
    return true;
  }
  if (at_block > 0 && at_block + done == n) {
    throw std::runtime_error("cuda_emu: __syncthreads() after " + std::to_string(done) +
                             " threads of the block exited");
  }
  return false;
}

inline void run_block(Launch& l) {
  const int n = static_cast<int>(l.fibers.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = l.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = l.stacks[i].data();
    f.ctx.uc_stack.ss_size = l.stacks[i].size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
    f.wait = Wait::Running;
  }
  for (;;) {
    bool all_done = true;
    for (Fiber& f : l.fibers) {
      if (f.wait == Wait::Running) {
        l.current = &f;
        swapcontext(&l.scheduler, &f.ctx);
        l.current = nullptr;
        if (l.error) std::rethrow_exception(l.error);
      }
      all_done = all_done && f.wait == Wait::Done;
    }
    if (all_done) return;
    if (!release(l)) {
      std::string where;
      for (const Fiber& f : l.fibers) where += f.wait == Wait::Block ? 'B' : f.wait == Wait::Warp ? 'W' : 'D';
      throw std::runtime_error("cuda_emu: deadlock: threads wait at different barriers (B block, W warp, "
                               "D exited): " + where);
    }
  }
}

// kernel<<<grid, block>>>(args...), block after block.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  Launch l;
  l.grid = grid;
  l.block = block;
  const int n = static_cast<int>(block.x * block.y * block.z);
  if (n <= 0 || n > 1024) throw std::invalid_argument("cuda_emu: block of " + std::to_string(n) + " threads");
  l.fibers.resize(n);
  l.stacks.assign(n, std::vector<char>(256 * 1024));
  l.lane_values.assign(n, 0);
  for (int i = 0; i < n; ++i) {
    l.fibers[i].linear = i;
    l.fibers[i].tid = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
  }
  l.body = [&]() { kernel(args...); };
  Launch* outer = running();
  running() = &l;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          l.block_idx = dim3(x, y, z);
          run_block(l);
        }
  } catch (...) {
    running() = outer;
    throw;
  }
  running() = outer;
}

template <typename T>
T shfl_xor(T v, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "cuda_emu: shuffle of a value wider than 64 bits");
  Launch& l = launch_state();
  const int me = l.current->linear;
  std::memcpy(&l.lane_values[me], &v, sizeof(T));
  yield(Wait::Warp);  // every lane has written its value
  const int other = (me / kWarpSize) * kWarpSize + ((me % kWarpSize) ^ lane_mask);
  if (other >= static_cast<int>(l.fibers.size())) throw std::runtime_error("cuda_emu: shuffle past the block");
  T r;
  std::memcpy(&r, &l.lane_values[other], sizeof(T));
  yield(Wait::Warp);  // every lane has read before any writes again
  return r;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::launch_state().current->tid)
#define blockIdx (::cuda_emu::launch_state().block_idx)
#define blockDim (::cuda_emu::launch_state().block)
#define gridDim (::cuda_emu::launch_state().grid)
#define warpSize (::cuda_emu::kWarpSize)

inline void __syncthreads() { ::cuda_emu::yield(::cuda_emu::Wait::Block); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::cuda_emu::yield(::cuda_emu::Wait::Warp); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  if (mask != 0xffffffffu) throw std::logic_error("cuda_emu: only full-warp shuffles are emulated");
  return ::cuda_emu::shfl_xor(v, lane_mask);
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}

template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

inline long long __double2ll_rn(double v) { return std::llrint(v); }
