// cwarp::local_warp on CUDA: forward (floating or uint8 images) and backward
// (floating images).
//
// Every block works on one image at a time, which makes the per-image
// reductions of the backward's parameter and theta gradients one block
// reduction each.
//
// Forward: a 3-D grid of blocks of 16 x 16 threads, one block per tile of
// 32 x 16 output pixels (x: column of tiles, y: row of tiles, z: image; y and
// z grid-stride), two adjacent pixels of a row per thread. What is the same
// for every pixel of the tile, each warp's constants, theta and the tile's
// row and column coordinates, the block computes once into shared memory. A
// thread computes its pixels' warp field (q, then s, then the four bilinear
// corners) and loops over the channels, storing both pixels of a channel at
// once where the output allows.
// Backward: a 2-D grid, blockIdx.y = image (grid-stride over B),
// blockIdx.x * blockDim.x + threadIdx.x = output pixel of that image; a few
// output pixels per thread (backward_pixels_per_thread), whose normalized
// coordinates it computes once and keeps in shared memory for every image
// and every warp. Per image, a first pass warps each pixel (q, the loop over
// the warps), keeps q in shared memory too, and bounds the rectangle of
// source pixels the block's samples touch. Then the image gradient: w * g
// scattered through a shared-memory tile of that rectangle where it fits
// (ImageGradTile: shared atomics, then one global atomic per source pixel of
// the rectangle per block, or per pass over the channels when only some fit
// at once), straight into global memory with atomics where it does not.
// Then dL/ds per pixel, from which the theta gradient and the parameter
// gradient of every warp k follow; those are summed over the thread's
// pixels in registers, then over the block in one pass (BlockReduction),
// and added once per block.
//
// Determinism (torch.use_deterministic_algorithms): float atomics sum in an
// arbitrary order, so in that mode the image gradient is accumulated in 64-bit
// fixed point with integer atomics (integer addition is associative, hence
// order-independent) and converted afterwards; the parameter and theta
// gradients are written as per-block partials and summed in a fixed order by
// a second kernel. The result is then bitwise reproducible.
//
// Indexing: an image's base pointer is advanced with 64-bit arithmetic (b *
// stride_b), and offsets inside one image use index_t, int32 when every
// tensor's largest in-image offset fits (the common case), int64 otherwise.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "checks.h"
#include "host_utils.h"
#include "warp_math.h"

namespace cwarp {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
// CUDA's limit on gridDim.y and gridDim.z.
constexpr int64_t kMaxGridYZ = 65535;

struct WarpConfig {
  int64_t C, H, W, Ho, Wo, B;
  int K;  // warps per image: an int loop counter keeps the per-pixel warp loop in 32-bit arithmetic
  WarpKind kind;
  Padding padding;
  bool align_corners;
};

template <typename index_t>
struct Strides {
  int64_t b;        // 64-bit: b * stride_b can exceed 32 bits
  index_t c, h, w;  // in-image strides
};

template <typename index_t>
Strides<index_t> strides_of(const at::Tensor& t) {
  return Strides<index_t>{t.stride(0), static_cast<index_t>(t.stride(1)), static_cast<index_t>(t.stride(2)),
                          static_cast<index_t>(t.stride(3))};
}

// theta, stored as (B, 6) in the compute type, or the identity.
template <typename T>
__device__ __forceinline__ Affine<T> load_affine(const T* theta, int64_t b) {
  if (theta == nullptr) return identity_affine<T>();
  const T* t = theta + 6 * b;
  return Affine<T>{__ldg(t), __ldg(t + 1), __ldg(t + 2), __ldg(t + 3), __ldg(t + 4), __ldg(t + 5)};
}

// q = p - sum_k w_k(p) d_k. Every thread of a block reads the same params
// (one image per block), so the loads are broadcasts served by the L1.
// A translate warp is zero outside its disc, and at the usual radii most
// pixels are outside most discs: those skip the weight and its division.
// translate_weight returns exactly 0 there (outside_disc is its own test,
// NaN included), and w * d is still applied, so a non-finite d propagates
// as it does in the reference.
template <typename T>
__device__ __forceinline__ void warp_point(const WarpConfig& cfg, const T* prm, T px, T py, T* qx, T* qy) {
  T x = px, y = py;
  const bool translate = cfg.kind == WarpKind::Translate;
  for (int k = 0; k < cfg.K; ++k) {
    const T* w5 = prm + 5 * k;
    const T cx = __ldg(w5), cy = __ldg(w5 + 1), r = __ldg(w5 + 2), dx = __ldg(w5 + 3), dy = __ldg(w5 + 4);
    const T ex = px - cx, ey = py - cy;
    const T rho2 = ex * ex + ey * ey;
    const T r2 = r * r;
    T w = T(0);
    if (!translate || !outside_disc(rho2, r2)) w = warp_weight(cfg.kind, rho2, r2, dx * dx + dy * dy);
    x -= w * dx;
    y -= w * dy;
  }
  *qx = x;
  *qy = y;
}

// Per-pixel sampling state: source coordinate, its derivative with respect
// to the normalized coordinate, the corners, and their in-image offsets.
template <typename index_t, typename T>
struct Sample {
  T qx, qy, gmx, gmy;
  Bilinear<index_t, T> bl;
  // Offsets of the corners x0/y0, x0+1/y0, x0/y0+1, x0+1/y0+1 (-1 marks a
  // corner outside the image), formed from one base offset when used: fewer
  // live registers than four offsets, which matters with 64-bit indices.
  index_t base, sw, sh;
  __device__ __forceinline__ index_t o00() const { return (bl.vx0 && bl.vy0) ? base : index_t(-1); }
  __device__ __forceinline__ index_t o01() const { return (bl.vx1 && bl.vy0) ? base + sw : index_t(-1); }
  __device__ __forceinline__ index_t o10() const { return (bl.vx0 && bl.vy1) ? base + sh : index_t(-1); }
  __device__ __forceinline__ index_t o11() const { return (bl.vx1 && bl.vy1) ? base + sh + sw : index_t(-1); }
};

// The sample of a pixel whose warped position q is known.
template <typename index_t, typename T>
__device__ __forceinline__ Sample<index_t, T> sample_at(const WarpConfig& cfg, const Affine<T>& A, T qx, T qy,
                                                        index_t sh, index_t sw) {
  Sample<index_t, T> s;
  s.qx = qx;
  s.qy = qy;
  T sx, sy;
  apply_affine(A, qx, qy, &sx, &sy);
  const T ix = source_index(sx, cfg.W, cfg.padding, cfg.align_corners, &s.gmx);
  const T iy = source_index(sy, cfg.H, cfg.padding, cfg.align_corners, &s.gmy);
  s.bl = bilinear<index_t>(ix, iy, cfg.W, cfg.H);
  s.base = corner_base_offset(s.bl, cfg.W, cfg.H, sh, sw);
  s.sw = sw;
  s.sh = sh;
  return s;
}

// ----------------------------------------------------------------------------
// Forward
// ----------------------------------------------------------------------------

// The forward's block is kFwdThreadsX x kFwdThreadsY threads over a tile of
// kFwdTileW x kFwdThreadsY output pixels of one image; each thread takes
// kFwdPixels adjacent pixels of a row, whose values of a channel are then one
// vector store.
constexpr int kFwdThreadsX = 16;
constexpr int kFwdThreadsY = kThreads / kFwdThreadsX;
constexpr int kFwdPixels = 2;
constexpr int kFwdTileW = kFwdThreadsX * kFwdPixels;
// Warps whose constants one pass of a block holds in shared memory; an image
// with more takes more passes.
constexpr int kSharedWarps = 32;

// What every pixel of a tile needs and a block therefore computes once: each
// warp's constants (its params with r^2 and |d|^2), theta, and the normalized
// coordinate of each of the tile's columns and rows (base_coord, whose IEEE
// division would otherwise run twice per pixel).
template <typename T>
struct ForwardShared {
  WarpConstants<T> warps[kSharedWarps];  // warps [k0, k0 + kSharedWarps) of the current pass
  T affine[6];                           // theta, or the identity
  T cols[kFwdTileW];
  T rows[kFwdThreadsY];
};

// q -= w(p) d of one warp for the P pixels (px[p], py) of a thread's row:
// (py - cy)^2 once for all of them. A translate warp is zero outside its disc,
// and at the usual radii most pixels are outside most discs: those skip the
// weight and its division. translate_weight returns exactly 0 there
// (outside_disc is its own test, NaN included), and w * d is still applied, so
// a non-finite d propagates as it does in the reference.
template <int P, typename T>
__device__ __forceinline__ void displace(WarpKind kind, const WarpConstants<T>& c, const T (&px)[P], T py,
                                         T (&qx)[P], T (&qy)[P]) {
  const T ey = py - c.cy;
  const T ey2 = ey * ey;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const T ex = px[p] - c.cx;
    const T rho2 = ex * ex + ey2;
    T w = T(0);
    if (kind != WarpKind::Translate || !outside_disc(rho2, c.r2)) w = warp_weight(kind, rho2, c.r2, c.m2);
    qx[p] -= w * c.dx;
    qy[p] -= w * c.dy;
  }
}

// The bilinear interpolation of one channel at a sample.
template <typename T, typename index_t, typename scalar_t>
__device__ __forceinline__ T interpolate(const scalar_t* src, const Sample<index_t, T>& s) {
  return corner_value<T>(src, s.o00()) * (s.bl.wx0 * s.bl.wy0) + corner_value<T>(src, s.o01()) * (s.bl.wx1 * s.bl.wy0) +
         corner_value<T>(src, s.o10()) * (s.bl.wx0 * s.bl.wy1) + corner_value<T>(src, s.o11()) * (s.bl.wx1 * s.bl.wy1);
}

// Blocks per SM the forward must leave room for: the register cap the
// compiler works to (65536 / (blocks * kThreads) per thread). Left at one
// block, ptxas spends registers freely and the SM holds too few warps to hide
// the gathers' latency; double needs twice the registers for the same code.
// 64-bit offsets take register pairs: the instantiation for tensors of 2^31
// elements or more gets one block less rather than spilling. So does uint8
// on sm_80, whose rounding and clamping before the store take a few
// registers more than sm_90's code (the occupancy budget is sm_90's).
// scripts/check_cuda_kernels.py holds the resulting occupancy to a budget.
template <typename scalar_t, typename index_t>
constexpr int forward_min_blocks() {
  if (std::is_same<compute_t<scalar_t>, double>::value) return 2;
  if (sizeof(index_t) == 8) return 3;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  if (std::is_same<scalar_t, uint8_t>::value) return 3;
#endif
  return 4;
}

// A thread's two values of a channel as one aligned store.
template <typename scalar_t>
struct alignas(2 * sizeof(scalar_t)) StorePair {
  scalar_t v[2];
};

// Grid: blockIdx.x = column of tiles, blockIdx.y = row of tiles, blockIdx.z =
// image, the last two grid-striding past CUDA's 65535: a pixel's row and
// column come from the block and thread indices, without a division.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads, forward_min_blocks<scalar_t, index_t>()) local_warp_forward_kernel(
    const scalar_t* __restrict__ in, scalar_t* __restrict__ out, const compute_t<scalar_t>* __restrict__ params,
    const compute_t<scalar_t>* __restrict__ theta, WarpConfig cfg, Strides<index_t> in_s, Strides<index_t> out_s,
    bool pair_stores) {
  using T = compute_t<scalar_t>;
  constexpr int P = kFwdPixels;
  static_assert(P == 2, "the forward's vector store holds two pixels");
  __shared__ ForwardShared<T> sh;
  const int rank = static_cast<int>(threadIdx.y) * kFwdThreadsX + static_cast<int>(threadIdx.x);
  const int col = static_cast<int>(threadIdx.x) * P;  // the thread's first column in the tile
  // Rows and columns in index_t: below Ho and Wo plus a tile, which the
  // 32-bit offsets' slack (pixels_fit_int32) covers.
  const index_t j0 = static_cast<index_t>(blockIdx.x) * kFwdTileW;
  const index_t j = j0 + col;
  const bool valid0 = j < cfg.Wo, valid1 = j + 1 < cfg.Wo;
  const unsigned row_tiles = static_cast<unsigned>((cfg.Ho + kFwdThreadsY - 1) / kFwdThreadsY);
  for (int64_t b = blockIdx.z; b < cfg.B; b += gridDim.z) {
    for (unsigned tile_row = blockIdx.y; tile_row < row_tiles; tile_row += gridDim.y) {
      const index_t i0 = static_cast<index_t>(tile_row) * kFwdThreadsY;
      T px[P], py = T(0), qx[P], qy[P];
      // Passes over the warps, kSharedWarps at a time (at least one pass,
      // which also stages theta and the tile's coordinates). The loop's
      // bounds are uniform, so every thread meets every barrier.
      for (int k0 = 0; k0 == 0 || k0 < cfg.K; k0 += kSharedWarps) {
        const int n = cfg.K - k0 < kSharedWarps ? cfg.K - k0 : kSharedWarps;
        __syncthreads();  // the block is done with the last pass's values
        if (rank < n) {
          const T* w5 = params + (b * cfg.K + k0 + rank) * 5;
          sh.warps[rank] = warp_constants(__ldg(w5), __ldg(w5 + 1), __ldg(w5 + 2), __ldg(w5 + 3), __ldg(w5 + 4));
        }
        if (k0 == 0) {
          // One warp of threads per table, so that the staging warps do not diverge.
          const int t = rank % kWarpSize, w = rank / kWarpSize;
          if (w == 1 && t < 6) {
            // The identity's entry t (a, e are 1) by a select: a local array
            // indexed by t would live in the stack frame.
            const T identity = (t == 0 || t == 4) ? T(1) : T(0);
            sh.affine[t] = theta != nullptr ? __ldg(theta + 6 * b + t) : identity;
          } else if (w == 2 && t < kFwdThreadsY) {
            sh.rows[t] = base_coord<T>(i0 + t, cfg.Ho, cfg.align_corners);
          } else if (w == 3 && t < kFwdTileW) {
            sh.cols[t] = base_coord<T>(j0 + t, cfg.Wo, cfg.align_corners);
          }
        }
        __syncthreads();
        if (k0 == 0) {
          py = sh.rows[threadIdx.y];
#pragma unroll
          for (int p = 0; p < P; ++p) {
            px[p] = sh.cols[col + p];
            qx[p] = px[p];
            qy[p] = py;
          }
        }
        for (int k = 0; k < n; ++k) displace(cfg.kind, sh.warps[k], px, py, qx, qy);
      }
      const index_t i = i0 + static_cast<index_t>(threadIdx.y);
      if (i >= cfg.Ho || !valid0) continue;  // no barrier before the next tile's
      const Affine<T> A{sh.affine[0], sh.affine[1], sh.affine[2], sh.affine[3], sh.affine[4], sh.affine[5]};
      // Both pixels are sampled (a column past the output's edge still gives
      // in-image corners); only the stores are held to the output.
      const Sample<index_t, T> s0 = sample_at<index_t>(cfg, A, qx[0], qy[0], in_s.h, in_s.w);
      const Sample<index_t, T> s1 = sample_at<index_t>(cfg, A, qx[1], qy[1], in_s.h, in_s.w);
      const scalar_t* src = in + b * in_s.b;
      scalar_t* dst = out + b * out_s.b + i * out_s.h + j * out_s.w;
      const bool pair = pair_stores && valid1;
      for (int64_t c = 0; c < cfg.C; ++c) {
        const scalar_t v0 = store_value<scalar_t>(interpolate(src, s0));
        const scalar_t v1 = store_value<scalar_t>(interpolate(src, s1));
        if (pair) {
          *reinterpret_cast<StorePair<scalar_t>*>(dst) = StorePair<scalar_t>{{v0, v1}};
        } else {
          dst[0] = v0;
          if (valid1) dst[out_s.w] = v1;
        }
        src += in_s.c;
        dst += out_s.c;
      }
    }
  }
}

// ----------------------------------------------------------------------------
// Backward
// ----------------------------------------------------------------------------

// Image-gradient accumulation: float atomics (fast) or 64-bit fixed point
// (deterministic). `scale` is a power of two chosen so that no sum can
// overflow: |any pixel's sum| <= Ho * Wo * max|grad_out| (each output pixel
// adds to a given input pixel at most once, with a weight <= 1).
template <typename T>
struct ImageGradSink {
  T* acc;                   // float accumulators (same strides as the image), or null
  unsigned long long* fix;  // fixed-point accumulators, or null
  const double* scale;      // device scalar, fixed-point mode only

  __device__ __forceinline__ bool active() const { return acc != nullptr || fix != nullptr; }

  template <typename index_t>
  __device__ __forceinline__ void add(int64_t base, index_t o, T v, double sc) const {
    if (o < 0) return;
    if (acc != nullptr) {
      atomicAdd(acc + base + o, v);
    } else {
      const long long q = __double2ll_rn(static_cast<double>(v) * sc);
      atomicAdd(fix + base + o, static_cast<unsigned long long>(q));
    }
  }
};

// The shared-memory tile of a block's image gradient: a rectangle of
// source columns [x0, x0 + w) and rows [y0, y0 + h) for `channels` channels
// from `c0` on, entry ((c - c0) * h + y - y0) * w + x - x0, holding T sums
// (float atomics) or 64-bit fixed-point ones (deterministic mode: integer
// addition is associative, so the block's sums, and the global ones they
// are added to, do not depend on the order). Its size in bytes is the same
// for both; double gets half as many entries as float.
template <typename T>
constexpr int tile_words() {
  return sizeof(T) == 4 ? 2048 : 1024;
}

template <typename T>
struct ImageGradTile {
  unsigned long long* words;  // tile_words<T>() words of shared memory
  int x0, y0, w, h;
  int64_t c0;
  int channels;

  __device__ __forceinline__ static int capacity(bool fixed_point) {
    return fixed_point ? tile_words<T>() : tile_words<T>() * int(sizeof(unsigned long long) / sizeof(T));
  }

  __device__ __forceinline__ void add(const ImageGradSink<T>& sink, int entry, T v, double sc) const {
    if (sink.acc != nullptr) {
      atomicAdd(reinterpret_cast<T*>(words) + entry, v);
    } else {
      atomicAdd(words + entry, static_cast<unsigned long long>(__double2ll_rn(static_cast<double>(v) * sc)));
    }
  }

  // Zeroes the words that hold this pass's entries; the caller's barrier
  // follows.
  __device__ __forceinline__ void clear(bool fixed_point) const {
    const int entries = w * h * channels;
    const int n = fixed_point ? entries : (entries * int(sizeof(T)) + 7) / 8;
    for (int e = threadIdx.x; e < n; e += kThreads) words[e] = 0ull;
  }

  // One global atomic per nonzero entry (a sum that is exactly zero adds
  // nothing), at the image offset `image_base` plus the entry's pixel.
  template <typename index_t>
  __device__ __forceinline__ void flush(const ImageGradSink<T>& sink, int64_t image_base, index_t sc_,
                                        index_t sh_, index_t sw_) const {
    const int plane = w * h;
    for (int e = threadIdx.x; e < plane * channels; e += kThreads) {
      const int c = e / plane, yx = e - c * plane, y = yx / w, x = yx - y * w;
      const int64_t o = image_base + (c0 + c) * static_cast<int64_t>(sc_) + static_cast<int64_t>(y0 + y) * sh_ +
                        static_cast<int64_t>(x0 + x) * sw_;
      if (sink.acc != nullptr) {
        const T v = reinterpret_cast<const T*>(words)[e];
        if (v != T(0)) atomicAdd(sink.acc + o, v);
      } else {
        const unsigned long long q = words[e];
        if (q != 0ull) atomicAdd(sink.fix + o, q);
      }
    }
  }
};

// Where a block's sum of one gradient component goes: a double atomic, or,
// in deterministic mode, its own slot of the partials buffer
// (B, blocks_x, n_components), reduced in order by reduce_partials_kernel.
struct ParamSink {
  double* atomic;    // (B, n) accumulators, or null
  double* partials;  // (B, blocks_x, n), or null
  int n;

  __device__ __forceinline__ void put(int64_t b, int comp, double v) const {
    if (partials != nullptr) {
      partials[(b * gridDim.x + blockIdx.x) * n + comp] = v;
    } else {
      atomicAdd(atomic + b * n + comp, v);
    }
  }
};

// Output pixels per thread in the backward. The parameter and theta
// gradients are summed over them in registers before the block reduction,
// which divides the reductions, and their atomics, per image by this factor.
// With 64-bit offsets, two: four would not fit the register cap.
constexpr int kBwdPixelsPerThread = 4;
template <typename index_t>
constexpr int backward_pixels_per_thread() {
  return sizeof(index_t) == 4 ? kBwdPixelsPerThread : 2;
}
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
// Gradient components a block reduction holds before it flushes: 6 (theta)
// and 5 per warp, so up to K = 5 in one flush.
constexpr int kReduceSlots = 32;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The block sums of one image's gradient components, all in one pass: the
// theta components (if wanted) then the 5 K parameter components, numbered
// in that order. Each warp sums a component with shuffles, no barrier, and
// parks it in its row of a shared buffer; when kReduceSlots are parked (or
// at the end) one barrier, thread t adds column t over the warps in warp
// order and hands the sum to its sink, and a second barrier frees the
// buffer. Two barriers per kReduceSlots components rather than two per
// component. Every thread of the block must make the same calls.
template <typename T>
class BlockReduction {
 public:
  __device__ BlockReduction(T* slots, const ParamSink& theta, const ParamSink& params, int64_t b)
      : slots_(slots), theta_(theta), params_(params), b_(b) {}

  __device__ __forceinline__ void add(T v) {
    v = warp_sum(v);
    if (threadIdx.x % kWarpSize == 0) slots_[(threadIdx.x / kWarpSize) * kReduceSlots + staged_] = v;
    if (++staged_ == kReduceSlots) flush();
  }

  __device__ __forceinline__ void flush() {
    if (staged_ == 0) return;  // uniform: every thread counted the same adds
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < staged_) {
      T total = T(0);
#pragma unroll
      for (int w = 0; w < kWarpsPerBlock; ++w) total += slots_[w * kReduceSlots + threadIdx.x];
      const int comp = first_ + static_cast<int>(threadIdx.x);
      if (comp < theta_.n) {
        theta_.put(b_, comp, static_cast<double>(total));
      } else {
        params_.put(b_, comp - theta_.n, static_cast<double>(total));
      }
    }
    __syncthreads();
    first_ += staged_;
    staged_ = 0;
  }

 private:
  T* slots_;
  ParamSink theta_;
  ParamSink params_;
  int64_t b_;
  int staged_ = 0;
  int first_ = 0;
};

// Blocks per SM the backward leaves room for: three in float (a cap of 80
// registers, which it meets without spilling), one in double, where any
// tighter cap spills. scripts/check_cuda_kernels.py checks both.
template <typename scalar_t>
constexpr int backward_min_blocks() {
  return std::is_same<at::opmath_type<scalar_t>, double>::value ? 1 : 3;
}

// Pixel p of this thread's backward_pixels_per_thread: consecutive threads take
// consecutive pixels, so each of the thread's passes reads coalesced.
template <typename index_t>
__device__ __forceinline__ index_t backward_pixel(int p) {
  return (static_cast<index_t>(blockIdx.x) * backward_pixels_per_thread<index_t>() + p) * kThreads +
         static_cast<index_t>(threadIdx.x);
}

// Images whose sides fit this take the shared-memory tile: a footprint's
// corner coordinates then fit an int, the tile's arithmetic included.
constexpr int64_t kTileMaxSide = int64_t(1) << 30;

// A thread's bounds on the source corners of its samples, min-reduced over
// the block: {lowest column, -highest column, lowest row, -highest row}, the
// columns and rows clamped as corner_base_offset clamps them (clamp_corner,
// which keeps them within an int for images under kTileMaxSide). Sample p's
// corners span columns [x0, x0 + 1] and rows [y0, y0 + 1].
struct CornerBounds {
  int v[4] = {INT_MAX, INT_MAX, INT_MAX, INT_MAX};

  template <typename index_t, typename T>
  __device__ __forceinline__ void include(const Bilinear<index_t, T>& bl, const WarpConfig& cfg) {
    const int x0 = static_cast<int>(clamp_corner(bl.x0, cfg.W));
    const int y0 = static_cast<int>(clamp_corner(bl.y0, cfg.H));
    v[0] = x0 < v[0] ? x0 : v[0];
    v[1] = -(x0 + 1) < v[1] ? -(x0 + 1) : v[1];
    v[2] = y0 < v[2] ? y0 : v[2];
    v[3] = -(y0 + 1) < v[3] ? -(y0 + 1) : v[3];
  }

  // The block's bounds, the same in every thread, through `parked`,
  // kWarpsPerBlock * 4 ints of shared memory, which the second barrier
  // frees for the next call. Every thread of the block must call it.
  __device__ __forceinline__ void reduce_over_block(int* parked) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int off = kWarpSize / 2; off > 0; off /= 2) {
        const int o = __shfl_xor_sync(0xffffffffu, v[i], off);
        v[i] = o < v[i] ? o : v[i];
      }
      if (threadIdx.x % kWarpSize == 0) parked[(threadIdx.x / kWarpSize) * 4 + i] = v[i];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      for (int w = 0; w < kWarpsPerBlock; ++w) v[i] = parked[w * 4 + i] < v[i] ? parked[w * 4 + i] : v[i];
    }
    __syncthreads();
  }
};

// Scatters w * g of channels [c0, c0 + n) of the thread's pixels into the
// image gradient: into `tile` (entries relative to its corner) when ToTile,
// into global memory otherwise. The samples are recomputed from the warped
// positions the thread parked in `qpos`. (A template flag rather than a
// tile pointer that may be null: taking the tile's address would put it on
// the stack.)
template <bool ToTile, int P, typename index_t, typename T, typename scalar_t>
__device__ __forceinline__ void scatter_image_grad(const ImageGradSink<T>& gimg, const ImageGradTile<T>& tile,
                                                   const T (&qpos)[2 * P][kThreads], const Affine<T>& A,
                                                   const WarpConfig& cfg, const scalar_t* grad_out,
                                                   const Strides<index_t>& go_s, const Strides<index_t>& in_s,
                                                   int64_t b, int64_t c0, int64_t n, double sc) {
  const index_t n_pix = static_cast<index_t>(cfg.Ho * cfg.Wo);
  const index_t wo = static_cast<index_t>(cfg.Wo);
  const int64_t gbase = b * in_s.b;
  // Not unrolled: the pixels' samples would be live together, past the
  // register cap.
#pragma unroll 1
  for (int p = 0; p < P; ++p) {
    const index_t pix = backward_pixel<index_t>(p);
    if (pix >= n_pix) continue;
    const index_t i = pix / wo, j = pix % wo;
    const Sample<index_t, T> s =
        sample_at<index_t>(cfg, A, qpos[2 * p][threadIdx.x], qpos[2 * p + 1][threadIdx.x], in_s.h, in_s.w);
    const T w00 = s.bl.wx0 * s.bl.wy0, w01 = s.bl.wx1 * s.bl.wy0;
    const T w10 = s.bl.wx0 * s.bl.wy1, w11 = s.bl.wx1 * s.bl.wy1;
    const scalar_t* go = grad_out + b * go_s.b + i * go_s.h + j * go_s.w + c0 * static_cast<int64_t>(go_s.c);
    if (ToTile) {
      const int e = (static_cast<int>(clamp_corner(s.bl.y0, cfg.H)) - tile.y0) * tile.w +
                    static_cast<int>(clamp_corner(s.bl.x0, cfg.W)) - tile.x0;
      const int plane = tile.w * tile.h;
      for (int c = 0; c < n; ++c) {
        const T g = static_cast<T>(*go);
        const int ec = e + c * plane;
        if (s.bl.vx0 && s.bl.vy0) tile.add(gimg, ec, w00 * g, sc);
        if (s.bl.vx1 && s.bl.vy0) tile.add(gimg, ec + 1, w01 * g, sc);
        if (s.bl.vx0 && s.bl.vy1) tile.add(gimg, ec + tile.w, w10 * g, sc);
        if (s.bl.vx1 && s.bl.vy1) tile.add(gimg, ec + tile.w + 1, w11 * g, sc);
        go += go_s.c;
      }
    } else {
      for (int64_t c = c0; c < c0 + n; ++c) {
        const T g = static_cast<T>(*go);
        const int64_t cbase = gbase + c * static_cast<int64_t>(in_s.c);
        gimg.add(cbase, s.o00(), w00 * g, sc);
        gimg.add(cbase, s.o01(), w01 * g, sc);
        gimg.add(cbase, s.o10(), w10 * g, sc);
        gimg.add(cbase, s.o11(), w11 * g, sc);
        go += go_s.c;
      }
    }
  }
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads, backward_min_blocks<scalar_t>()) local_warp_backward_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ in,
    const at::opmath_type<scalar_t>* __restrict__ params, const at::opmath_type<scalar_t>* __restrict__ theta,
    ImageGradSink<at::opmath_type<scalar_t>> gimg, ParamSink gprm, ParamSink gth, WarpConfig cfg,
    Strides<index_t> go_s, Strides<index_t> in_s) {
  using T = at::opmath_type<scalar_t>;
  __shared__ T slots[kWarpsPerBlock * kReduceSlots];
  const index_t n_pix = static_cast<index_t>(cfg.Ho * cfg.Wo);
  const index_t wo = static_cast<index_t>(cfg.Wo);
  const bool need_coord = gprm.n > 0 || gth.n > 0;
  const bool translate = cfg.kind == WarpKind::Translate;
  const double sc = gimg.fix != nullptr ? *gimg.scale : 1.0;
  constexpr int P = backward_pixels_per_thread<index_t>();
  // The normalized coordinates of the thread's pixels, the same in every
  // image: computed once (base_coord's IEEE divisions) and kept in the
  // thread's own column of shared memory (no other thread reads it, so no
  // barrier), from which the sampling and the parameter gradient's loop over
  // the warps read them rather than recomputing them per image and per warp.
  __shared__ T coords[2 * P][kThreads];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const index_t pix = backward_pixel<index_t>(p);
    if (pix >= n_pix) continue;
    coords[2 * p][threadIdx.x] = base_coord<T>(pix % wo, cfg.Wo, cfg.align_corners);
    coords[2 * p + 1][threadIdx.x] = base_coord<T>(pix / wo, cfg.Ho, cfg.align_corners);
  }
  // The warped positions q of the thread's pixels in the current image, in
  // its own column again: the image gradient's scatter (once the block knows
  // its footprint) and the coordinate gradients sample them again without
  // the loop over the warps; then dL/dq, for the parameter gradient.
  __shared__ T qpos[2 * P][kThreads];
  __shared__ int parked[kWarpsPerBlock * 4];
  __shared__ unsigned long long tile_words_sh[tile_words<T>()];
  const bool may_tile = gimg.active() && cfg.W < kTileMaxSide && cfg.H < kTileMaxSide;

  for (int64_t b = blockIdx.y; b < cfg.B; b += gridDim.y) {
    const T* prm = params + b * cfg.K * 5;
    const Affine<T> A = load_affine(theta, b);
    // Pass 1: the warped positions q (the loop over the warps), parked in
    // shared memory for the passes below, and the block's footprint.
    CornerBounds bounds;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const index_t pix = backward_pixel<index_t>(p);
      if (pix >= n_pix) continue;
      T qx, qy;
      warp_point(cfg, prm, coords[2 * p][threadIdx.x], coords[2 * p + 1][threadIdx.x], &qx, &qy);
      qpos[2 * p][threadIdx.x] = qx;
      qpos[2 * p + 1][threadIdx.x] = qy;
      if (may_tile) bounds.include(sample_at<index_t>(cfg, A, qx, qy, in_s.h, in_s.w).bl, cfg);
    }

    // The image gradient: through the tile, as many channels at a time as
    // fit, when the footprint fits it; straight to global memory otherwise.
    // Every branch below is uniform across the block.
    ImageGradTile<T> tile{tile_words_sh, 0, 0, 0, 0, 0, 0};
    bool scattered = !gimg.active();
    if (may_tile) {
      bounds.reduce_over_block(parked);
      tile.x0 = bounds.v[0] < 0 ? 0 : bounds.v[0];
      tile.y0 = bounds.v[2] < 0 ? 0 : bounds.v[2];
      const int x1 = -bounds.v[1] > cfg.W - 1 ? static_cast<int>(cfg.W - 1) : -bounds.v[1];
      const int y1 = -bounds.v[3] > cfg.H - 1 ? static_cast<int>(cfg.H - 1) : -bounds.v[3];
      tile.w = x1 - tile.x0 + 1;
      tile.h = y1 - tile.y0 + 1;
      const int capacity = ImageGradTile<T>::capacity(gimg.fix != nullptr);
      if (tile.w <= 0 || tile.h <= 0) {
        scattered = true;  // no sample of the block has a corner inside the image
      } else if (static_cast<int64_t>(tile.w) * tile.h <= capacity) {
        const int per_pass = capacity / (tile.w * tile.h);
        for (int64_t c0 = 0; c0 < cfg.C; c0 += per_pass) {
          tile.c0 = c0;
          tile.channels = static_cast<int>(cfg.C - c0 < per_pass ? cfg.C - c0 : per_pass);
          tile.clear(gimg.fix != nullptr);
          __syncthreads();
          scatter_image_grad<true, P>(gimg, tile, qpos, A, cfg, grad_out, go_s, in_s, b, c0, tile.channels, sc);
          __syncthreads();
          tile.flush(gimg, b * in_s.b, in_s.c, in_s.h, in_s.w);
          __syncthreads();
        }
        scattered = true;
      }
    }
    if (!scattered) scatter_image_grad<false, P>(gimg, tile, qpos, A, cfg, grad_out, go_s, in_s, b, 0, cfg.C, sc);
    if (!need_coord) continue;  // uniform across the grid

    // Pass 2, after the scatter so that its sums are not live across it: per
    // pixel, dL/dq = A^T dL/ds, which replaces q in the thread's column of
    // qpos (zero for pixels past the end); summed over the pixels, the theta
    // gradient sum dL/ds (x) (qx, qy, 1). Not unrolled: the pixels' samples
    // would be live together, past the register cap.
    T gtheta[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
#pragma unroll 1
    for (int p = 0; p < P; ++p) {
      const index_t pix = backward_pixel<index_t>(p);
      if (pix >= n_pix) {
        qpos[2 * p][threadIdx.x] = T(0);
        qpos[2 * p + 1][threadIdx.x] = T(0);
        continue;
      }
      const index_t i = pix / wo, j = pix % wo;
      const Sample<index_t, T> s =
          sample_at<index_t>(cfg, A, qpos[2 * p][threadIdx.x], qpos[2 * p + 1][threadIdx.x], in_s.h, in_s.w);
      const scalar_t* src = in + b * in_s.b;
      const scalar_t* go = grad_out + b * go_s.b + i * go_s.h + j * go_s.w;
      T d_ix = T(0), d_iy = T(0);
      for (int64_t c = 0; c < cfg.C; ++c) {
        const T g = static_cast<T>(*go);
        T gx, gy;
        bilinear_coord_grad(s.bl, corner_value<T>(src, s.o00()), corner_value<T>(src, s.o01()),
                            corner_value<T>(src, s.o10()), corner_value<T>(src, s.o11()), &gx, &gy);
        d_ix += g * gx;
        d_iy += g * gy;
        go += go_s.c;
        src += in_s.c;
      }
      const T gsx = d_ix * s.gmx, gsy = d_iy * s.gmy;  // dL/ds
      gtheta[0] += gsx * s.qx;
      gtheta[1] += gsx * s.qy;
      gtheta[2] += gsx;
      gtheta[3] += gsy * s.qx;
      gtheta[4] += gsy * s.qy;
      gtheta[5] += gsy;
      qpos[2 * p][threadIdx.x] = A.a * gsx + A.d * gsy;
      qpos[2 * p + 1][threadIdx.x] = A.b * gsx + A.e * gsy;
    }

    BlockReduction<T> sums(slots, gth, gprm, b);
    if (gth.n > 0) {
#pragma unroll
      for (int t = 0; t < 6; ++t) sums.add(gtheta[t]);
    }
    if (gprm.n > 0) {
      for (int k = 0; k < cfg.K; ++k) {
        const T* w5 = prm + 5 * k;
        const T cx = __ldg(w5), cy = __ldg(w5 + 1), r = __ldg(w5 + 2), dx = __ldg(w5 + 3), dy = __ldg(w5 + 4);
        T acc[5] = {T(0), T(0), T(0), T(0), T(0)};
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const index_t pix = backward_pixel<index_t>(p);
          if (pix >= n_pix) continue;
          const T ex = coords[2 * p][threadIdx.x] - cx;
          const T ey = coords[2 * p + 1][threadIdx.x] - cy;
          // Most pixels lie outside most discs: no divisions for them.
          const T gqx = qpos[2 * p][threadIdx.x], gqy = qpos[2 * p + 1][threadIdx.x];
          if (translate && translate_param_grad_vanishes(ex, ey, r, dx, dy, gqx, gqy)) continue;
          warp_param_grad(cfg.kind, ex, ey, r, dx, dy, gqx, gqy, acc);
        }
#pragma unroll
        for (int t = 0; t < 5; ++t) sums.add(acc[t]);
      }
    }
    sums.flush();
  }
}

// out[r] = sum over blocks of partials[r / n, block, r % n], in block order.
__global__ void __launch_bounds__(kThreads)
    reduce_partials_kernel(const double* __restrict__ partials, double* __restrict__ out,
                           int64_t rows, int64_t blocks, int64_t n) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int64_t b = r / n, comp = r % n;
  const double* p = partials + b * blocks * n + comp;
  double s = 0.0;
  for (int64_t blk = 0; blk < blocks; ++blk) s += p[blk * n];
  out[r] = s;
}

// Power-of-two scale for the fixed-point image gradient (see ImageGradSink),
// from max|grad_out| on the device: no host synchronization.
__global__ void __launch_bounds__(1)
    fixed_point_scale_kernel(const double* __restrict__ max_abs, double* __restrict__ scale,
                             int64_t n_out) {
  const double bound = (*max_abs) * static_cast<double>(n_out) + 1.0;
  int e = 0;
  frexp(bound, &e);  // bound < 2^e
  // Sums stay below 2^62: headroom for the rounding of every term.
  *scale = isfinite(bound) ? ldexp(1.0, 62 - e) : 0.0;
}

// Fixed point -> gradient in the compute type. A non-finite grad_out cannot
// be represented in fixed point: then the whole image gradient is NaN, so the
// non-finiteness shows instead of vanishing.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    fixed_point_to_float_kernel(const unsigned long long* __restrict__ fix, const double* __restrict__ scale,
                                T* __restrict__ out, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const double sc = *scale;
  const double v = sc > 0.0 ? static_cast<double>(static_cast<long long>(fix[idx])) / sc
                            : std::numeric_limits<double>::quiet_NaN();
  out[idx] = static_cast<T>(v);
}

// ----------------------------------------------------------------------------
// Host side
// ----------------------------------------------------------------------------

constexpr const char* kFwd = "cwarp::local_warp";
constexpr const char* kBwd = "cwarp::local_warp_backward";

// Pixel indices of one image are index_t too, including those a block
// computes past the last pixel.
bool pixels_fit_int32(int64_t out_h, int64_t out_w) {
  return out_h * out_w < int64_t(std::numeric_limits<int32_t>::max()) - kThreads * kBwdPixelsPerThread;
}

// The forward's grid: one block per tile of the output (column of tiles,
// row of tiles, image), y and z capped at CUDA's limit, beyond which the
// kernel strides.
dim3 forward_grid(int64_t out_h, int64_t out_w, int64_t B) {
  return dim3(static_cast<unsigned>((out_w + kFwdTileW - 1) / kFwdTileW),
              static_cast<unsigned>(std::min<int64_t>((out_h + kFwdThreadsY - 1) / kFwdThreadsY, kMaxGridYZ)),
              static_cast<unsigned>(std::min<int64_t>(B, kMaxGridYZ)));
}

// Whether the forward may store a thread's two pixels of a channel as one
// aligned vector: adjacent columns, and every pair's offset (even column,
// even row, channel and image strides) a multiple of two elements from an
// aligned base.
bool pairs_aligned(const at::Tensor& out) {
  const auto even = [&](int d) { return out.size(d) == 1 || out.stride(d) % 2 == 0; };
  const auto base = reinterpret_cast<uintptr_t>(out.const_data_ptr());
  return out.stride(3) == 1 && even(0) && even(1) && even(2) && base % (2 * out.element_size()) == 0;
}

// The backward's grid: blockIdx.x covers an image's pixels, pixels_per_thread
// per thread; blockIdx.y strides over the batch.
dim3 grid_for(int64_t n_pix, int64_t B, int pixels_per_thread) {
  const int64_t per_block = int64_t(kThreads) * pixels_per_thread;
  return dim3(static_cast<unsigned>((n_pix + per_block - 1) / per_block),
              static_cast<unsigned>(std::min<int64_t>(B, kMaxGridYZ)));
}

WarpConfig make_config(const char* op, const at::Tensor& image, int64_t K, int64_t out_h, int64_t out_w,
                       WarpKind kind, Padding padding, bool align_corners) {
  TORCH_CHECK_VALUE(K <= std::numeric_limits<int>::max(), op, "(): expected at most ",
                    std::numeric_limits<int>::max(), " warps per image (params.size(1)), got ", K);
  return WarpConfig{image.size(1), image.size(2), image.size(3), out_h, out_w, image.size(0),
                    static_cast<int>(K), kind, padding, align_corners};
}

at::Tensor local_warp_cuda(const at::Tensor& image, const at::Tensor& params, const c10::optional<at::Tensor>& theta,
                           int64_t out_h, int64_t out_w, c10::string_view kind, c10::string_view padding_mode,
                           bool align_corners) {
  check_local_warp_inputs(kFwd, image, params, theta, /*allow_uint8=*/true);
  check_out_size(kFwd, out_h, out_w);
  const WarpKind k = parse_kind(kFwd, kind);
  const Padding pad = parse_padding(kFwd, padding_mode);
  const c10::cuda::CUDAGuard guard(image.device());
  const int64_t B = image.size(0), C = image.size(1);
  at::Tensor out = at::empty({B, C, out_h, out_w}, image.options().memory_format(image.suggest_memory_format()));
  if (out.numel() == 0) return out;
  const bool has_theta = theta.has_value() && theta->defined();
  const bool i32 = offsets_fit_int32(image) && offsets_fit_int32(out) && pixels_fit_int32(out_h, out_w);
  const bool pairs = pairs_aligned(out);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, image.scalar_type(), "cwarp_local_warp_cuda",
                                  [&] {
    using T = compute_t<scalar_t>;
    const at::Tensor prm = as_opmath<T>(params);
    const at::Tensor th = has_theta ? as_opmath<T>(theta->reshape({B, 6})) : at::Tensor();
    const WarpConfig cfg = make_config(kFwd, image, params.size(1), out_h, out_w, k, pad, align_corners);
    const dim3 grid = forward_grid(out_h, out_w, B);
    const dim3 block(kFwdThreadsX, kFwdThreadsY);
    const T* th_ptr = has_theta ? th.const_data_ptr<T>() : nullptr;
    if (i32) {
      local_warp_forward_kernel<scalar_t, int32_t><<<grid, block, 0, stream>>>(
          image.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), prm.const_data_ptr<T>(), th_ptr, cfg,
          strides_of<int32_t>(image), strides_of<int32_t>(out), pairs);
    } else {
      local_warp_forward_kernel<scalar_t, int64_t><<<grid, block, 0, stream>>>(
          image.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), prm.const_data_ptr<T>(), th_ptr, cfg,
          strides_of<int64_t>(image), strides_of<int64_t>(out), pairs);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_warp_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& image_in, const at::Tensor& params,
    const c10::optional<at::Tensor>& theta, c10::string_view kind, c10::string_view padding_mode,
    bool align_corners, std::array<bool, 3> output_mask) {
  check_local_warp_backward_inputs(kBwd, grad_out, image_in, params, theta);
  const WarpKind k = parse_kind(kBwd, kind);
  const Padding pad = parse_padding(kBwd, padding_mode);
  const c10::cuda::CUDAGuard guard(image_in.device());
  const bool has_theta = theta.has_value() && theta->defined();
  const int64_t B = image_in.size(0), C = image_in.size(1), K = params.size(1);
  const int64_t out_h = grad_out.size(2), out_w = grad_out.size(3);
  const bool deterministic = at::globalContext().deterministicAlgorithms();

  // The image gradient shares the image's strides, so one offset addresses
  // both: make the image dense in its own memory format first.
  const at::Tensor image = image_in.contiguous(image_in.suggest_memory_format());
  const at::ScalarType opmath = at::toOpMathType(image.scalar_type());
  const bool want_image = output_mask[0];
  const bool want_params = output_mask[1] && K > 0;
  const bool want_theta = output_mask[2] && has_theta;
  const int64_t n_pix = out_h * out_w;
  const bool i32 = offsets_fit_int32(image) && offsets_fit_int32(grad_out) && pixels_fit_int32(out_h, out_w);
  const dim3 grid = grid_for(n_pix, B, i32 ? backward_pixels_per_thread<int32_t>()
                                           : backward_pixels_per_thread<int64_t>());
  const bool work = B > 0 && C > 0 && n_pix > 0;

  at::Tensor grad_image_acc, grad_image_fix, fix_scale;
  if (want_image) {
    if (deterministic) {
      grad_image_fix = at::zeros_like(image, image.options().dtype(at::kLong));
      fix_scale = at::empty({}, image.options().dtype(at::kDouble));
    } else {
      grad_image_acc = at::zeros_like(image, image.options().dtype(opmath));
    }
  }
  const at::TensorOptions dopt = params.options().dtype(at::kDouble);
  at::Tensor grad_params_acc = want_params ? at::zeros({B, K, 5}, dopt) : at::Tensor();
  at::Tensor grad_theta_acc = want_theta ? at::zeros({B, 6}, dopt) : at::Tensor();
  at::Tensor params_partials, theta_partials;
  if (deterministic && want_params) params_partials = at::empty({B, int64_t(grid.x), K * 5}, dopt);
  if (deterministic && want_theta) theta_partials = at::empty({B, int64_t(grid.x), 6}, dopt);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  if (work && (want_image || want_params || want_theta)) {
    if (want_image && deterministic) {
      // max|grad_out| as one reduction, without a full-size |grad_out| temporary.
      const at::Tensor max_abs = at::linalg_vector_norm(grad_out, INFINITY).to(at::kDouble);
      fixed_point_scale_kernel<<<1, 1, 0, stream>>>(max_abs.const_data_ptr<double>(),
                                                    fix_scale.mutable_data_ptr<double>(), n_pix);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "cwarp_local_warp_backward_cuda",
                                    [&] {
      using T = at::opmath_type<scalar_t>;
      const at::Tensor prm = as_opmath<T>(params);
      const at::Tensor th = has_theta ? as_opmath<T>(theta->reshape({B, 6})) : at::Tensor();
      const T* th_ptr = has_theta ? th.const_data_ptr<T>() : nullptr;
      ImageGradSink<T> gimg{nullptr, nullptr, nullptr};
      if (want_image && deterministic) {
        gimg.fix = reinterpret_cast<unsigned long long*>(grad_image_fix.mutable_data_ptr<int64_t>());
        gimg.scale = fix_scale.const_data_ptr<double>();
      } else if (want_image) {
        gimg.acc = grad_image_acc.mutable_data_ptr<T>();
      }
      ParamSink gprm{nullptr, nullptr, 0};
      if (want_params) {
        gprm.n = static_cast<int>(K * 5);
        if (deterministic) {
          gprm.partials = params_partials.mutable_data_ptr<double>();
        } else {
          gprm.atomic = grad_params_acc.mutable_data_ptr<double>();
        }
      }
      ParamSink gth{nullptr, nullptr, 0};
      if (want_theta) {
        gth.n = 6;
        if (deterministic) {
          gth.partials = theta_partials.mutable_data_ptr<double>();
        } else {
          gth.atomic = grad_theta_acc.mutable_data_ptr<double>();
        }
      }
      const WarpConfig cfg = make_config(kBwd, image, K, out_h, out_w, k, pad, align_corners);
      if (i32) {
        local_warp_backward_kernel<scalar_t, int32_t><<<grid, kThreads, 0, stream>>>(
            grad_out.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(), prm.const_data_ptr<T>(), th_ptr,
            gimg, gprm, gth, cfg, strides_of<int32_t>(grad_out), strides_of<int32_t>(image));
      } else {
        local_warp_backward_kernel<scalar_t, int64_t><<<grid, kThreads, 0, stream>>>(
            grad_out.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(), prm.const_data_ptr<T>(), th_ptr,
            gimg, gprm, gth, cfg, strides_of<int64_t>(grad_out), strides_of<int64_t>(image));
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();

      if (want_image && deterministic) {
        grad_image_acc = at::empty_like(image, image.options().dtype(opmath));
        const int64_t n = image.numel();
        fixed_point_to_float_kernel<T><<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
            reinterpret_cast<const unsigned long long*>(grad_image_fix.const_data_ptr<int64_t>()),
            fix_scale.const_data_ptr<double>(), grad_image_acc.mutable_data_ptr<T>(), n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
    const std::pair<at::Tensor*, at::Tensor*> reductions[] = {{&params_partials, &grad_params_acc},
                                                              {&theta_partials, &grad_theta_acc}};
    for (const auto& red : reductions) {
      if (!red.first->defined()) continue;
      const int64_t rows = red.second->numel(), n = red.first->size(2);
      reduce_partials_kernel<<<static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
          red.first->const_data_ptr<double>(), red.second->mutable_data_ptr<double>(), rows, red.first->size(1), n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  } else if (want_image && deterministic) {
    grad_image_acc = at::zeros_like(image, image.options().dtype(opmath));
  }

  at::Tensor grad_image = want_image ? grad_image_acc.to(image.scalar_type()) : at::empty({0}, image.options());
  at::Tensor grad_params;
  if (output_mask[1]) {
    grad_params = K > 0 ? grad_params_acc.to(params.scalar_type()) : at::zeros_like(params);
  } else {
    grad_params = at::empty({0}, params.options());
  }
  at::Tensor grad_theta = want_theta ? grad_theta_acc.to(theta->scalar_type()).view({B, 2, 3})
                                     : at::empty({0}, params.options());
  return {grad_image, grad_params, grad_theta};
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(cwarp, CUDA, m) {
  m.impl("local_warp", &cuda::local_warp_cuda);
  m.impl("local_warp_backward", &cuda::local_warp_backward_cuda);
}

}  // namespace cwarp
