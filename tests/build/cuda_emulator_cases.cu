// Kernels that exercise the CUDA emulation itself (scripts/cuda_emulation),
// one case per command-line name; tests/build/test_cuda_emulator.py compiles
// this file with harness.compile_program and checks what each case prints:
// correct CUDA code must give CUDA's results, incorrect code the emulator's error.
//
//   cuda_emulator_cases CASE [ORDER]     ORDER: forward (default), reverse, random
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

__device__ float warp_sum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum of in[0..n) over a 3-D grid of 3-D blocks: each thread adds a
// grid-stride slice, warps reduce with shuffles, warp sums meet in shared
// memory, and one atomic per block adds the block's sum.
__global__ void grid_sum(const float* in, int n, float* out) {
  __shared__ float partial[32];
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
  float v = 0.0f;
  for (unsigned i = block * threads + t; i < static_cast<unsigned>(n); i += blocks * threads) v += in[i];
  // A partial last warp: its lanes sum with a mask of the lanes that exist.
  const unsigned warp = t / 32, lane = t % 32;
  const unsigned in_warp = threads - warp * 32 < 32 ? threads - warp * 32 : 32;
  const unsigned mask = in_warp == 32 ? 0xffffffffu : (1u << in_warp) - 1u;
  for (int off = 16; off > 0; off /= 2) {
    const float other = __shfl_down_sync(mask, v, off);
    if (lane + off < in_warp) v += other;
  }
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (t == 0) {
    float s = 0.0f;
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) s += partial[w];
    atomicAdd(out, s);
  }
}

// Every element of a grid-stride loop visited exactly once.
__global__ void grid_stride_count(int* hits, long long n) {
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    atomicAdd(hits + i, 1);
  }
}

// Thread t reads what thread t + 1 wrote; with_barrier = false is a race.
__global__ void neighbour(int* out, bool with_barrier) {
  __shared__ int s[64];
  const int t = threadIdx.x;
  s[t] = t + 1;
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Threads past `live` return at once; the others still meet at barriers.
__global__ void early_exit_then_barrier(int* out, int live) {
  __shared__ int s[128];
  const int t = threadIdx.x;
  if (t >= live) return;
  s[t] = t;
  __syncthreads();
  int acc = 0;
  for (int i = 0; i < live; ++i) acc += s[i];
  __syncthreads();
  out[t] = acc;
}

// Lanes 48..63 exit, then the second warp shuffles with a full mask.
__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x >= 48) return;
  out[threadIdx.x] = warp_sum(1.0f);
}

__global__ void warp_vs_block_barrier(int* out) {
  if (threadIdx.x % 32 < 16) {
    __syncwarp();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Each shuffle variant for every lane, at the given width: 32 results each.
__global__ void shuffles(int* out, int width) {
  const int lane = threadIdx.x;
  const int v = 100 + lane;
  out[0 * 32 + lane] = __shfl_sync(0xffffffffu, v, 5, width);
  out[1 * 32 + lane] = __shfl_sync(0xffffffffu, v, lane + 3, width);
  out[2 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 3, width);
  out[3 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 3, width);
  out[4 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 5, width);
  out[5 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 20, width);
  out[6 * 32 + lane] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[7 * 32 + lane] = __any_sync(0xffffffffu, lane == 7) + 2 * __all_sync(0xffffffffu, lane < 31);
  const double d = __shfl_xor_sync(0xffffffffu, 0.5 + lane, 1);
  out[8 * 32 + lane] = static_cast<int>(d * 2.0);
}

__global__ void read_unwritten_shared(float* out) {
  __shared__ float s[32];
  out[threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = 1.0f;  // the next block must not see this
}

__global__ void atomics(float* f, unsigned long long* u, unsigned* wrap, int* mx) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(f, 0.5f);
  atomicAdd(u, 3ull);
  atomicInc(wrap, 9u);
  int old = *mx, assumed;
  do {  // a CAS loop: max of (i * 7919) % 10007
    assumed = old;
    const int want = (i * 7919) % 10007;
    old = atomicCAS(mx, assumed, want > assumed ? want : assumed);
  } while (old != assumed);
}

__global__ void conversions(long long* out) {
  const float nan = __int_as_float(0x7fc00000);
  out[0] = __float2int_rn(nan);
  out[1] = __float2int_rn(2.5f);
  out[2] = __float2int_rn(3.5f);
  out[3] = __float2int_rn(-2.5f);
  out[4] = __float2int_rn(1e10f);
  out[5] = __float2int_rd(-0.5f);
  out[6] = __float2int_ru(-0.5f);
  out[7] = __float2uint_rn(-1.0f);
  out[8] = __double2ll_rn(__longlong_as_double(0x7ff8000000000000ll));
  out[9] = __double2int_rz(-1e300);
  out[10] = static_cast<long long>(__saturatef(nan) * 10.0f);
  out[11] = static_cast<long long>(__saturatef(1.5f) * 10.0f);
}

__global__ void dynamic_shared(float* out) {
  extern __shared__ __align__(16) float buf[];
  buf[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__global__ void no_arguments() {}

template <typename Pair>
__global__ void nested_template(int* out, Pair p) {
  out[0] = p.first + p.second;
}

// ---------------------------------------------------------------------------

template <typename T>
void print_all(const std::vector<T>& v) {
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%lld", i ? " " : "", static_cast<long long>(v[i]));
  std::printf("\n");
}

int run(const std::string& name) {
  if (name == "grid_sum") {
    // Block shapes with partial warps (45 threads, 7x5x3) and a 3-D grid.
    const dim3 blocks[] = {dim3(1), dim3(31), dim3(45), dim3(256), dim3(1024), dim3(7, 5, 3)};
    std::vector<float> in(5000);
    for (int i = 0; i < 5000; ++i) in[i] = static_cast<float>(i % 97);
    for (const dim3& b : blocks) {
      float out = 0.0f;
      grid_sum<<<dim3(2, 3, 2), b>>>(in.data(), 5000, &out);
      std::printf("%.1f\n", out);
    }
  } else if (name == "grid_stride") {
    std::vector<int> hits(100003, 0);
    grid_stride_count<<<7, 96>>>(hits.data(), static_cast<long long>(hits.size()));
    long long ones = 0;
    for (int h : hits) ones += h == 1;
    std::printf("%lld of %zu\n", ones, hits.size());
  } else if (name == "race" || name == "no_race") {
    std::vector<int> out(64);
    neighbour<<<1, 64>>>(out.data(), name == "no_race");
    print_all(out);
  } else if (name == "divergent_barrier") {
    std::vector<int> out(64);
    divergent_barrier<<<1, 64>>>(out.data());
  } else if (name == "early_exit") {
    std::vector<int> out(128, -7);
    early_exit_then_barrier<<<1, 128>>>(out.data(), 40);
    print_all(std::vector<int>(out.begin(), out.begin() + 42));
  } else if (name == "shuffle_after_exit") {
    std::vector<float> out(64);
    shuffle_after_exit<<<1, 64>>>(out.data());
  } else if (name == "deadlock") {
    std::vector<int> out(64);
    warp_vs_block_barrier<<<1, 64>>>(out.data());
  } else if (name.rfind("shuffles", 0) == 0) {
    const int width = std::atoi(name.c_str() + std::strlen("shuffles"));
    std::vector<int> out(9 * 32);
    shuffles<<<1, 32>>>(out.data(), width);
    for (int row = 0; row < 9; ++row) print_all(std::vector<int>(out.begin() + 32 * row, out.begin() + 32 * row + 32));
  } else if (name == "unwritten_shared") {
    std::vector<float> out(64);
    read_unwritten_shared<<<2, 32>>>(out.data());
    read_unwritten_shared<<<1, 32>>>(out.data() + 32);
    int nan = 0;
    for (float f : out) nan += f != f;
    std::printf("%d NaN of 64\n", nan);
  } else if (name == "atomics") {
    float f = 0.0f;
    unsigned long long u = 0;
    unsigned wrap = 0;
    int mx = 0;
    atomics<<<40, 250>>>(&f, &u, &wrap, &mx);
    int want = 0;
    for (int i = 0; i < 10000; ++i) want = (i * 7919) % 10007 > want ? (i * 7919) % 10007 : want;
    std::printf("%.1f %llu %u %d %d\n", f, u, wrap, mx, want);
  } else if (name == "conversions") {
    std::vector<long long> out(12);
    conversions<<<1, 1>>>(out.data());
    print_all(out);
  } else if (name == "dynamic_shared") {
    std::vector<float> out(128);
    dynamic_shared<<<1, 128, 128 * sizeof(float)>>>(out.data());
    std::printf("%.0f %.0f\n", out[0], out[127]);
  } else if (name == "dynamic_shared_over_48k") {
    std::vector<float> out(128);
    dynamic_shared<<<1, 128, 64 * 1024>>>(out.data());
  } else if (name == "dynamic_shared_opt_in") {
    std::vector<float> out(128);
    cudaFuncSetAttribute(dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    dynamic_shared<<<1, 128, 64 * 1024>>>(out.data());
    std::printf("%.0f\n", out[0]);
  } else if (name == "grid_truncated") {
    const long long blocks = (1ll << 32) + 5;
    no_arguments<<<blocks, 32>>>();
  } else if (name == "block_too_large") {
    no_arguments<<<1, 2048>>>();
  } else if (name == "templates") {
    int out = 0;
    no_arguments<<<1, 1>>>();
    nested_template<std::pair<int, int>><<<1, 1>>>(&out, std::make_pair(40, 2));
    std::printf("%d\n", out);
  } else {
    std::fprintf(stderr, "unknown case %s\n", name.c_str());
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (argc > 2) {
    const std::string order = argv[2];
    cuda_emu::global().settings.order = order == "reverse" ? cuda_emu::Order::Reverse
                                        : order == "random" ? cuda_emu::Order::Random
                                                            : cuda_emu::Order::Forward;
    cuda_emu::global().settings.seed = 7;
  }
  try {
    return run(argv[1]);
  } catch (const cuda_emu::EmulationError& e) {
    std::printf("EMULATION ERROR: %s\n", e.what());
    return 3;
  }
}
