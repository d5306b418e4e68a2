// CUDA's execution model on the CPU, for running cwarp's .cu kernels without
// a GPU (scripts/cuda_emulation/harness.py compiles them with g++ against this
// header and the stub headers in include/). A verification tool: it checks
// the kernels' logic (indexing, tails, barriers, warp collectives, atomics),
// not their speed, their memory model or the GPU's floating-point shortcuts.
//
// How a launch runs: the blocks of the grid one after another; within a block
// every CUDA thread is a fiber on the calling OS thread. A fiber runs until it
// reaches a synchronization point (__syncthreads, a warp collective, its
// exit), then the next runnable fiber of the same warp runs; a warp runs
// until none of its lanes can go on, then the next warp. The order of the
// blocks, of the warps and of the lanes is a setting (forward, reverse, or
// seeded random at every round), so a missing barrier or an order-dependent
// sum shows up as a different result under another order. What CUDA leaves
// undefined and the emulator can see is an error, raised by the launch (an
// exception whose message starts with "cuda emulation:"):
//   - a __syncthreads reached from different call sites in one barrier phase
//     (bar.sync is "aligned": every thread of the block executes the same one);
//   - a warp collective (__shfl_*_sync, __ballot_sync, __syncwarp, ...) whose
//     mask leaves out the calling lane or names a lane that has exited (or
//     does not exist), or lanes that meet with different masks or operations
//     (a shuffle from a lane outside its mask reads all one bits: NaN, -1);
//   - a deadlock (every live thread waits and no barrier can complete);
//   - an invalid launch configuration (cudaErrorInvalidConfiguration), and an
//     integer grid or block size that dim3 would silently truncate.
// Shared memory is host memory: __shared__ variables are statics (blocks run
// one at a time), filled with 0xFF bytes (float NaN, integer -1) when a block
// first reaches their declaration, and the dynamic (extern __shared__) buffer
// is filled at every block start. A kernel that reads shared memory no thread
// of its block has written reads NaN, not what the previous block left.
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <source_location>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------
// Qualifiers: everything is host code here, so most of them vanish.
// ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// The harness rewrites every __shared__ declaration it sees (a static plus a
// call to cuda_emu::shared_declared, which fills it at each block); this
// definition only serves what the rewrite cannot see, such as a macro.
#define __shared__ static

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// The built-in variables of the CUDA thread that runs now: the scheduler sets
// them before it resumes a fiber.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

typedef struct CUstream_st* cudaStream_t;

// Defined in fiber_switch.cpp: saves the callee-saved registers on the current
// stack, stores the stack pointer in *save_sp, and continues on load_sp.
extern "C" void cuda_emu_switch_context(void** save_sp, void* load_sp);

namespace cuda_emu {

// The order of a grid's blocks, of a block's warps and of a warp's lanes
// (Random: shuffled again at every round of the scheduler).
enum class Order { Forward = 0, Reverse = 1, Random = 2 };

struct Settings {
  Order order = Order::Forward;
  uint64_t seed = 0;
  bool force_int64 = false;  // see include/host_utils.h
};

struct Counters {
  int64_t launches = 0, blocks = 0, threads = 0;
  int64_t block_barriers = 0;    // __syncthreads phases completed
  int64_t warp_collectives = 0;  // shuffles, votes, __syncwarp: one per warp and call
  int64_t atomics = 0;
  int64_t unchecked_launches = 0;  // launches not followed by cudaGetLastError (C10_CUDA_KERNEL_LAUNCH_CHECK)
};

struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  size_t shared_bytes;
};

// The hardware limits a launch is checked against (sm_80 / sm_90).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimX = 2147483647u;
constexpr unsigned kMaxGridDimYZ = 65535u;
constexpr size_t kDefaultDynamicShared = 48 * 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;

// The emulator's state, one per process. Launches take launch_mutex: static
// __shared__ storage is one copy per kernel, so two launches must not overlap.
struct Global {
  std::mutex launch_mutex;
  Settings settings;
  Counters counters;
  std::vector<LaunchRecord> launches;
  size_t max_dynamic_shared = kDefaultDynamicShared;  // raised by cudaFuncSetAttribute
  bool unchecked_launch = false;                      // the last launch, until cudaGetLastError
};
inline Global& global() {
  static Global g;
  return g;
}

class EmulationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string where(const std::source_location& loc) {
  const char* f = loc.file_name();
  const char* slash = std::strrchr(f, '/');
  return std::string(slash ? slash + 1 : f) + ":" + std::to_string(loc.line());
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

inline std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// The dynamic shared memory of the running block (extern __shared__ arrays
// point here).
alignas(256) inline unsigned char dynamic_shared_buffer[kMaxDynamicShared];
inline void* dynamic_shared_memory() { return dynamic_shared_buffer; }

// ---------------------------------------------------------------------------
// Fibers: a stack and a saved stack pointer (x86-64), or a ucontext elsewhere.
// ---------------------------------------------------------------------------

struct FiberContext {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

inline void make_context(FiberContext& c, void* stack, size_t bytes, void (*entry)()) {
#if defined(__x86_64__)
  // The stack as cuda_emu_switch_context leaves it: six callee-saved
  // registers, then the address it returns to (entry), then a null return
  // address for entry itself; entry starts with rsp = 8 mod 16, as after a call.
  auto top = reinterpret_cast<uintptr_t>(static_cast<char*>(stack) + bytes) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  c.sp = sp;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
#endif
}

inline void switch_context(FiberContext& from, FiberContext& to) {
#if defined(__x86_64__)
  cuda_emu_switch_context(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

enum class FiberState { Runnable, Waiting, Exited };
enum class WaitKind { None, Barrier, Collective };

struct Fiber {
  FiberContext ctx;
  void* stack = nullptr;
  size_t stack_bytes = 0;
  uint3 tid{0, 0, 0};
  unsigned linear = 0;  // threadIdx as one number, x fastest: warp = linear / 32, lane = linear % 32
  FiberState state = FiberState::Runnable;
  WaitKind wait = WaitKind::None;
  const char* wait_name = "";  // for deadlock reports
  std::source_location wait_loc;
};

// A warp collective in progress: the lanes of `mask` meet, each deposits a
// value, and the last to arrive releases them all.
struct Collective {
  uint32_t mask = 0, arrived = 0, read = 0;
  int kind = 0;
  const char* name = "";
  std::source_location loc;
  bool complete = false;
  std::array<uint64_t, 32> values{};
};

struct Warp {
  uint32_t live = 0;  // lanes that exist and have not exited
  std::vector<Collective*> open;
};

class Block;
inline thread_local Block* current_block = nullptr;

class Block {
 public:
  static constexpr size_t kStackBytes = 256 * 1024;

  Block() = default;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  ~Block() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (Fiber& f : fibers_) munmap(static_cast<char*>(f.stack) - page, f.stack_bytes + page);
  }

  // Runs one block: body(ctx) in every thread of block_dim, with
  // `dynamic_shared` bytes of dynamic shared memory.
  void run(dim3 block_dim, size_t dynamic_shared, void (*body)(void*), void* ctx, const Settings& settings,
           uint64_t seed) {
    body_ = body;
    ctx_ = ctx;
    const unsigned n = block_dim.x * block_dim.y * block_dim.z;
    ensure_fibers(n);
    warps_.assign((n + 31) / 32, Warp{});
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = fibers_[t];
      f.tid = uint3{t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
      f.linear = t;
      f.state = FiberState::Runnable;
      f.wait = WaitKind::None;
      warps_[t / 32].live |= 1u << (t % 32);
      make_context(f.ctx, f.stack, f.stack_bytes, &Block::entry);
    }
    n_ = n;
    live_ = n;
    barrier_arrived_ = 0;
    error_.clear();
    ++epoch_;
    std::memset(dynamic_shared_buffer, 0xFF, dynamic_shared);

    // Warps run one at a time, each as far as it can (until every lane waits
    // at a block barrier, on another warp, or has exited): one warp may run
    // far ahead of another, as on the GPU, so shared memory that a warp
    // rewrites before a slower warp has read it shows. The order of the warps
    // and of the lanes within each is the setting.
    const unsigned n_warps = static_cast<unsigned>(warps_.size());
    std::vector<unsigned> warp_order(n_warps), lane_order(32);
    for (unsigned w = 0; w < n_warps; ++w) warp_order[w] = w;
    for (unsigned l = 0; l < 32; ++l) lane_order[l] = l;
    if (settings.order == Order::Reverse) {
      std::reverse(warp_order.begin(), warp_order.end());
      std::reverse(lane_order.begin(), lane_order.end());
    }
    std::mt19937_64 rng(seed);
    current_block = this;
    while (live_ > 0 && error_.empty()) {
      if (settings.order == Order::Random) std::shuffle(warp_order.begin(), warp_order.end(), rng);
      bool ran = false;
      for (unsigned w : warp_order) {
        for (bool progressed = true; progressed && error_.empty();) {
          progressed = false;
          if (settings.order == Order::Random) std::shuffle(lane_order.begin(), lane_order.end(), rng);
          for (unsigned l : lane_order) {
            const unsigned t = w * 32 + l;
            if (t >= n || fibers_[t].state != FiberState::Runnable) continue;
            progressed = ran = true;
            resume(t);
            if (!error_.empty()) break;
          }
        }
        if (!error_.empty()) break;
      }
      if (!ran && error_.empty()) error_ = deadlock_report();
    }
    current_block = nullptr;
    for (Warp& w : warps_) {
      for (Collective* c : w.open) delete c;
      w.open.clear();
    }
    if (!error_.empty()) throw EmulationError(error_);
  }

  // Bumped at every block start: tells shared_declared when to refill.
  uint64_t epoch() const { return epoch_; }

  // __syncthreads and its counting forms: every live thread of the block
  // arrives, from one call site; returns how many passed a non-zero value.
  int syncthreads(int value, const std::source_location& loc) {
    if (barrier_arrived_ == 0) {
      barrier_loc_ = loc;
      barrier_count_ = 0;
    } else if (!same_site(loc, barrier_loc_)) {
      fail("__syncthreads at " + where(loc) + " (thread " + thread_name(running()) + ") and at " +
           where(barrier_loc_) + " in the same barrier phase: the block's threads diverged around a barrier");
    }
    barrier_count_ += value != 0;
    ++barrier_arrived_;
    if (barrier_arrived_ == live_) {
      release_barrier();
    } else {
      wait(WaitKind::Barrier, "__syncthreads", loc);
    }
    return barrier_result_;
  }

  // A warp collective `kind` over `mask`: deposits `value`, waits for every
  // lane of the mask, and returns every lane's value (by lane).
  std::array<uint64_t, 32> collective(uint32_t mask, int kind, const char* name, uint64_t value,
                                      const std::source_location& loc) {
    Fiber& me = running();
    const unsigned lane = me.linear % 32, warp = me.linear / 32;
    Warp& w = warps_[warp];
    const uint32_t bit = 1u << lane;
    if ((mask & bit) == 0) {
      fail(std::string(name) + " at " + where(loc) + ": thread " + thread_name(me) + " (lane " +
           std::to_string(lane) + ") passes mask " + hex(mask) + ", which leaves out its own lane");
    }
    if (const uint32_t gone = mask & ~w.live) {
      fail(std::string(name) + " at " + where(loc) + ": mask " + hex(mask) + " names lanes " + hex(gone) +
           " of warp " + std::to_string(warp) + ", which have exited or do not exist (it would never complete)");
    }
    Collective* c = nullptr;
    for (Collective* o : w.open) {
      if (o->complete) continue;
      if (o->mask == mask) {
        c = o;
      } else if (o->mask & mask) {
        fail(std::string(name) + " at " + where(loc) + ": lane " + std::to_string(lane) + " passes mask " +
             hex(mask) + " while lanes of it wait in " + o->name + " at " + where(o->loc) + " with mask " +
             hex(o->mask));
      }
    }
    if (c == nullptr) {
      c = new Collective();
      c->mask = mask;
      c->kind = kind;
      c->name = name;
      c->loc = loc;
      w.open.push_back(c);
    } else if (c->kind != kind) {
      fail(std::string(name) + " at " + where(loc) + " meets " + c->name + " at " + where(c->loc) +
           " (mask " + hex(mask) + "): the lanes of a warp collective must execute the same operation");
    }
    c->values[lane] = value;
    c->arrived |= bit;
    if (c->arrived == mask) {
      c->complete = true;
      ++global().counters.warp_collectives;
      for (unsigned l = 0; l < 32; ++l) {
        if ((mask >> l) & 1u) {
          Fiber& f = fibers_[warp * 32 + l];
          if (f.state == FiberState::Waiting) f.state = FiberState::Runnable;
          f.wait = WaitKind::None;
        }
      }
    } else {
      wait(WaitKind::Collective, name, loc);
    }
    const std::array<uint64_t, 32> values = c->values;
    c->read |= bit;
    if (c->read == mask) {
      w.open.erase(std::find(w.open.begin(), w.open.end(), c));
      delete c;
    }
    return values;
  }

  // The lanes of the running thread's warp that have not exited: all the
  // emulator can offer for __activemask (it cannot tell which lanes a GPU
  // would have converged at that point).
  uint32_t live_lanes() const { return warps_[fibers_[running_].linear / 32].live; }
  unsigned lane() const { return fibers_[running_].linear % 32; }

  // Ends the running thread and the block with `message`.
  [[noreturn]] void fail(const std::string& message) {
    if (error_.empty()) error_ = message;
    Fiber& me = running();
    me.state = FiberState::Exited;
    switch_context(me.ctx, scheduler_);
    std::abort();  // a failed fiber is never resumed
  }

 private:
  Fiber& running() { return fibers_[running_]; }
  const Fiber& running() const { return fibers_[running_]; }

  void ensure_fibers(unsigned n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    while (fibers_.size() < n) {
      // A guard page below each stack: an overflow faults instead of
      // overwriting the neighbouring fiber's stack.
      void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mem == MAP_FAILED) throw EmulationError("cannot map a fiber stack");
      mprotect(mem, page, PROT_NONE);
      Fiber f;
      f.stack = static_cast<char*>(mem) + page;
      f.stack_bytes = kStackBytes;
      fibers_.push_back(f);
    }
  }

  void resume(unsigned t) {
    running_ = t;
    threadIdx = fibers_[t].tid;
    switch_context(scheduler_, fibers_[t].ctx);
  }

  void wait(WaitKind kind, const char* name, const std::source_location& loc) {
    Fiber& me = running();
    me.state = FiberState::Waiting;
    me.wait = kind;
    me.wait_name = name;
    me.wait_loc = loc;
    switch_context(me.ctx, scheduler_);
    // Resumed: the scheduler has set running_ and threadIdx back to this thread.
  }

  void release_barrier() {
    barrier_result_ = barrier_count_;
    barrier_arrived_ = 0;
    ++global().counters.block_barriers;
    for (unsigned t = 0; t < n_; ++t) {
      Fiber& f = fibers_[t];
      if (f.state == FiberState::Waiting && f.wait == WaitKind::Barrier) {
        f.state = FiberState::Runnable;
        f.wait = WaitKind::None;
      }
    }
  }

  static void entry() {
    Block* b = current_block;
    try {
      b->body_(b->ctx_);
    } catch (const std::exception& e) {
      if (b->error_.empty()) b->error_ = std::string("an exception escaped the kernel: ") + e.what();
    } catch (...) {
      if (b->error_.empty()) b->error_ = "an exception escaped the kernel";
    }
    b->exit_thread();
  }

  void exit_thread() {
    Fiber& me = running();
    me.state = FiberState::Exited;
    --live_;
    Warp& w = warps_[me.linear / 32];
    const uint32_t bit = 1u << (me.linear % 32);
    w.live &= ~bit;
    for (Collective* c : w.open) {
      if (!c->complete && (c->mask & bit) && error_.empty()) {
        error_ = std::string(c->name) + " at " + where(c->loc) + " (mask " + hex(c->mask) + "): lane " +
                 std::to_string(me.linear % 32) + " of warp " + std::to_string(me.linear / 32) +
                 " exited without joining it (it would never complete)";
      }
    }
    // An exited thread no longer counts at __syncthreads (bar.sync waits for
    // the threads that have not exited).
    if (barrier_arrived_ > 0 && barrier_arrived_ == live_) release_barrier();
    switch_context(me.ctx, scheduler_);
    std::abort();  // an exited fiber is never resumed
  }

  std::string deadlock_report() const {
    std::ostringstream s;
    s << "deadlock: every live thread waits;";
    int shown = 0;
    for (unsigned t = 0; t < n_ && shown < 6; ++t) {
      const Fiber& f = fibers_[t];
      if (f.state != FiberState::Waiting) continue;
      s << " thread " << thread_name(f) << " in " << f.wait_name << " at " << where(f.wait_loc) << ";";
      ++shown;
    }
    s << " " << (n_ - live_) << " of " << n_ << " threads have exited";
    return s.str();
  }

  static std::string thread_name(const Fiber& f) {
    return "(" + std::to_string(f.tid.x) + ", " + std::to_string(f.tid.y) + ", " + std::to_string(f.tid.z) + ")";
  }

  std::vector<Fiber> fibers_;
  std::vector<Warp> warps_;
  FiberContext scheduler_;
  void (*body_)(void*) = nullptr;
  void* ctx_ = nullptr;
  unsigned n_ = 0, live_ = 0, running_ = 0;
  unsigned barrier_arrived_ = 0;
  int barrier_count_ = 0, barrier_result_ = 0;
  std::source_location barrier_loc_;
  std::string error_;
  uint64_t epoch_ = 0;
};

inline Block& running_block() {
  if (current_block == nullptr) {
    throw EmulationError("cuda emulation: a device function was called outside a kernel launch");
  }
  return *current_block;
}

// Inserted by the harness after every __shared__ declaration: the first
// thread of each block to get there fills the variables with 0xFF bytes
// (CUDA leaves shared memory undefined at block start).
struct SharedVar {
  const void* addr;
  uint64_t epoch;
};
inline std::vector<SharedVar>& shared_vars() {
  static std::vector<SharedVar> v;
  return v;
}
template <typename... Vars>
inline void shared_declared(Vars&... vars) {
  const uint64_t epoch = running_block().epoch();
  auto one = [epoch](auto& var) {
    void* addr = static_cast<void*>(&var);
    for (SharedVar& s : shared_vars()) {
      if (s.addr != addr) continue;
      if (s.epoch != epoch) {
        std::memset(addr, 0xFF, sizeof(var));
        s.epoch = epoch;
      }
      return;
    }
    std::memset(addr, 0xFF, sizeof(var));
    shared_vars().push_back(SharedVar{addr, epoch});
  };
  (one(vars), ...);
}

// ---------------------------------------------------------------------------
// Launch. The harness rewrites kernel<<<grid, block, shared_bytes, stream>>>(args) as
//   cuda_emu::launch("kernel", grid, block, shared_bytes, stream)(kernel, args)
// The arguments are evaluated once and copied; every thread calls the kernel
// with its own copies (by-value parameters, as on the device).
// ---------------------------------------------------------------------------

// The demangled name of the kernel at `fn`, template arguments resolved
// ("ns::k<float, int>"), or `fallback` (the launch's text) where its symbol
// is not exported (the harness builds with default visibility and names
// anonymous namespaces, so that every kernel's is).
inline std::string kernel_name(const void* fn, const char* fallback) {
  Dl_info info;
  if (fn == nullptr || dladdr(fn, &info) == 0 || info.dli_saddr != fn || info.dli_sname == nullptr) return fallback;
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  if (demangled == nullptr) return fallback;
  std::string name(demangled);
  std::free(demangled);
  // Drop the return type of a template ("void ") and the parameter list.
  int depth = 0;
  size_t start = 0, end = name.size();
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<') {
      ++depth;
    } else if (c == '>') {
      --depth;
    } else if (c == ' ' && depth == 0) {
      start = i + 1;
    } else if (c == '(' && depth == 0) {
      end = i;
      break;
    }
  }
  name = name.substr(start, end - start);
  // The harness names each file's anonymous namespace: show it as one.
  for (size_t at; (at = name.find("cuda_emu_anonymous_")) != std::string::npos;) {
    const size_t stop = name.find("::", at);
    name.replace(at, stop == std::string::npos ? std::string::npos : stop - at, "(anonymous namespace)");
  }
  return name;
}

template <typename G>
dim3 launch_dims(const char* kernel, const char* what, const G& g) {
  if constexpr (std::is_integral_v<G>) {
    if (g < 0 || static_cast<unsigned long long>(g) > std::numeric_limits<unsigned int>::max()) {
      throw EmulationError(std::string("cuda emulation: launch of ") + kernel + ": " + what + " " +
                           std::to_string(g) + " does not fit dim3's unsigned int (CUDA would truncate it to " +
                           std::to_string(static_cast<unsigned int>(g)) + ")");
    }
    return dim3(static_cast<unsigned int>(g));
  } else {
    return dim3(g);
  }
}

class Launch {
 public:
  Launch(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes)
      : kernel_(kernel), name_(kernel), grid_(grid), block_(block), shared_(shared_bytes) {}

  template <typename Kernel, typename... Args>
  void operator()(Kernel&& kernel, Args&&... args) {
    using K = std::decay_t<Kernel>;
    const K fn = kernel;
    if constexpr (std::is_pointer_v<K> && std::is_function_v<std::remove_pointer_t<K>>) {
      name_ = kernel_name(reinterpret_cast<const void*>(fn), kernel_);
    }
    if (current_block != nullptr) {
      throw EmulationError("cuda emulation: launch of " + name_ +
                           " from inside a kernel (dynamic parallelism) is not emulated");
    }
    std::lock_guard<std::mutex> lock(global().launch_mutex);
    check_config();
    auto bound = std::make_tuple(std::decay_t<Args>(std::forward<Args>(args))...);
    auto call = [&]() { std::apply([&](const auto&... a) { fn(a...); }, bound); };
    using Call = decltype(call);
    run(+[](void* c) { (*static_cast<Call*>(c))(); }, &call);
  }

 private:
  void check_config() const {
    const unsigned long long threads = static_cast<unsigned long long>(block_.x) * block_.y * block_.z;
    std::string bad;
    if (grid_.x == 0 || grid_.y == 0 || grid_.z == 0) {
      bad = "a grid dimension is 0";
    } else if (grid_.x > kMaxGridDimX || grid_.y > kMaxGridDimYZ || grid_.z > kMaxGridDimYZ) {
      bad = "the grid exceeds (2^31 - 1, 65535, 65535)";
    } else if (block_.x == 0 || block_.y == 0 || block_.z == 0) {
      bad = "a block dimension is 0";
    } else if (block_.x > kMaxThreadsPerBlock || block_.y > kMaxThreadsPerBlock || block_.z > kMaxBlockDimZ ||
               threads > kMaxThreadsPerBlock) {
      bad = "the block exceeds 1024 threads or (1024, 1024, 64)";
    } else if (shared_ > global().max_dynamic_shared) {
      bad = "dynamic shared memory of " + std::to_string(shared_) + " bytes exceeds the limit of " +
            std::to_string(global().max_dynamic_shared) + " (48 KiB unless raised with cudaFuncSetAttribute)";
    }
    if (bad.empty()) return;
    std::ostringstream s;
    s << "cuda emulation: launch of " << name_ << " <<<(" << grid_.x << ", " << grid_.y << ", " << grid_.z
      << "), (" << block_.x << ", " << block_.y << ", " << block_.z << "), " << shared_
      << ">>>: invalid configuration argument: " << bad;
    throw EmulationError(s.str());
  }

  void run(void (*body)(void*), void* ctx) {
    Global& g = global();
    g.launches.push_back(LaunchRecord{name_, grid_, block_, shared_});
    ++g.counters.launches;
    if (g.unchecked_launch) ++g.counters.unchecked_launches;
    g.unchecked_launch = true;
    const Settings settings = g.settings;
    const uint64_t n_blocks = static_cast<uint64_t>(grid_.x) * grid_.y * grid_.z;
    const uint64_t launch_seed = settings.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(g.counters.launches);
    std::vector<uint64_t> order;
    if (settings.order != Order::Forward) {
      order.resize(n_blocks);
      for (uint64_t i = 0; i < n_blocks; ++i) order[i] = i;
      if (settings.order == Order::Reverse) {
        std::reverse(order.begin(), order.end());
      } else {
        std::mt19937_64 rng(launch_seed);
        std::shuffle(order.begin(), order.end(), rng);
      }
    }
    static thread_local Block block;
    gridDim = grid_;
    blockDim = block_;
    for (uint64_t i = 0; i < n_blocks; ++i) {
      const uint64_t b = order.empty() ? i : order[i];
      blockIdx = uint3{static_cast<unsigned>(b % grid_.x), static_cast<unsigned>((b / grid_.x) % grid_.y),
                       static_cast<unsigned>(b / (static_cast<uint64_t>(grid_.x) * grid_.y))};
      try {
        block.run(block_, shared_, body, ctx, settings, launch_seed + 0x51ED27ull * (b + 1));
      } catch (const EmulationError& e) {
        std::ostringstream s;
        s << "cuda emulation: kernel " << name_ << ", block (" << blockIdx.x << ", " << blockIdx.y << ", "
          << blockIdx.z << "): " << e.what();
        throw EmulationError(s.str());
      }
      ++g.counters.blocks;
      g.counters.threads += static_cast<int64_t>(block_.x) * block_.y * block_.z;
    }
  }

  const char* kernel_;  // as the launch wrote it
  std::string name_;    // resolved where the kernel is exported
  dim3 grid_, block_;
  size_t shared_;
};

template <typename G, typename B>
Launch launch(const char* kernel, const G& grid, const B& block, size_t shared_bytes = 0,
              cudaStream_t stream = nullptr) {
  (void)stream;  // one stream: launches run in order, each to completion
  return Launch(kernel, launch_dims(kernel, "grid size", grid), launch_dims(kernel, "block size", block),
                shared_bytes);
}

}  // namespace cuda_emu

// ---------------------------------------------------------------------------
// Block barriers and fences.
// ---------------------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  cuda_emu::running_block().syncthreads(0, loc);
}
inline int __syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return cuda_emu::running_block().syncthreads(pred != 0, loc);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return cuda_emu::running_block().syncthreads(pred == 0, loc) == 0;
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return cuda_emu::running_block().syncthreads(pred != 0, loc) != 0;
}
// Fibers share one coherent memory and switch only at synchronization
// points: a fence has nothing to order.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

#include "cuda_warp.h"
#include "cuda_intrinsics.h"
