// Device functions of the CUDA emulation (cuda_on_cpu.h): vector types,
// cached loads and stores, atomics, conversions, bit tricks and the math
// intrinsics, with the semantics the CUDA Math API and the PTX ISA document.
//
// Where CUDA's fast intrinsic trades accuracy for speed (__expf, __logf,
// __fdividef, __sinf, rsqrtf, ...), the emulation returns the IEEE result of
// the same operation: it checks the logic around the intrinsic, not the
// GPU's error bound, which it cannot reproduce.
#pragma once

#include <math.h>  // libstdc++'s: the float overloads of the C math functions in the global namespace, as CUDA declares them

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <source_location>
#include <string>
#include <type_traits>

// ---------------------------------------------------------------------------
// Vector types, with CUDA's sizes and alignments.
// ---------------------------------------------------------------------------
#define CUDA_EMU_VEC2(name, T, align) \
  struct __attribute__((aligned(align))) name { T x, y; };                                  \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define CUDA_EMU_VEC3(name, T) \
  struct name { T x, y, z; };  \
  inline name make_##name(T x, T y, T z) { return name{x, y, z}; }
#define CUDA_EMU_VEC4(name, T, align) \
  struct __attribute__((aligned(align))) name { T x, y, z, w; };                            \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
CUDA_EMU_VEC2(char2, signed char, 2)
CUDA_EMU_VEC4(char4, signed char, 4)
CUDA_EMU_VEC2(uchar2, unsigned char, 2)
CUDA_EMU_VEC4(uchar4, unsigned char, 4)
CUDA_EMU_VEC2(short2, short, 4)
CUDA_EMU_VEC4(short4, short, 8)
CUDA_EMU_VEC2(ushort2, unsigned short, 4)
CUDA_EMU_VEC4(ushort4, unsigned short, 8)
CUDA_EMU_VEC2(int2, int, 8)
CUDA_EMU_VEC3(int3, int)
CUDA_EMU_VEC4(int4, int, 16)
CUDA_EMU_VEC2(uint2, unsigned int, 8)
CUDA_EMU_VEC4(uint4, unsigned int, 16)
CUDA_EMU_VEC2(longlong2, long long, 16)
CUDA_EMU_VEC2(ulonglong2, unsigned long long, 16)
CUDA_EMU_VEC2(float2, float, 8)
CUDA_EMU_VEC3(float3, float)
CUDA_EMU_VEC4(float4, float, 16)
CUDA_EMU_VEC2(double2, double, 16)
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
#undef CUDA_EMU_VEC2
#undef CUDA_EMU_VEC3
#undef CUDA_EMU_VEC4

namespace cuda_emu {

// A global-memory access of `bytes` at p: the GPU faults on a misaligned one.
inline void check_aligned(const void* p, size_t align, const char* name, const std::source_location& loc) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    running_block().fail(std::string(name) + " at " + where(loc) + ": misaligned address (a " +
                         std::to_string(align) + "-byte access at an address that is not a multiple of it)");
  }
}

template <typename T>
constexpr bool loadable() {
  return std::is_arithmetic_v<T> || std::is_class_v<T>;  // CUDA's overloads: scalars and the vector types
}

}  // namespace cuda_emu

// Cache-hinted loads and stores: plain memory accesses here.
#define CUDA_EMU_LOAD(fn)                                                                  \
  template <typename T>                                                                    \
  T fn(const T* p, std::source_location loc = std::source_location::current()) {          \
    static_assert(cuda_emu::loadable<T>(), #fn " takes a pointer to a scalar or vector"); \
    cuda_emu::check_aligned(p, alignof(T), #fn, loc);                                      \
    return *p;                                                                             \
  }
CUDA_EMU_LOAD(__ldg)
CUDA_EMU_LOAD(__ldca)
CUDA_EMU_LOAD(__ldcg)
CUDA_EMU_LOAD(__ldcs)
CUDA_EMU_LOAD(__ldlu)
CUDA_EMU_LOAD(__ldcv)
#undef CUDA_EMU_LOAD
#define CUDA_EMU_STORE(fn)                                                                      \
  template <typename T>                                                                         \
  void fn(T* p, T v, std::source_location loc = std::source_location::current()) {             \
    cuda_emu::check_aligned(p, alignof(T), #fn, loc);                                           \
    *p = v;                                                                                     \
  }
CUDA_EMU_STORE(__stwb)
CUDA_EMU_STORE(__stcg)
CUDA_EMU_STORE(__stcs)
CUDA_EMU_STORE(__stwt)
#undef CUDA_EMU_STORE

// ---------------------------------------------------------------------------
// Atomics. Fibers switch only at synchronization points and blocks run one
// at a time, so a read-modify-write cannot be interleaved: plain operations
// are atomic here. Only CUDA's overloads exist (no atomicAdd on long long).
// Each returns the old value.
// ---------------------------------------------------------------------------
namespace cuda_emu {
template <typename T, typename F>
T atomic_rmw(T* p, F f) {
  ++global().counters.atomics;
  const T old = *p;
  *p = f(old);
  return old;
}
}  // namespace cuda_emu

#define CUDA_EMU_ATOMIC(fn, T, expr) \
  inline T fn(T* p, T v) { return cuda_emu::atomic_rmw(p, [v](T old) { return static_cast<T>(expr); }); }
CUDA_EMU_ATOMIC(atomicAdd, int, static_cast<int>(static_cast<unsigned>(old) + static_cast<unsigned>(v)))
CUDA_EMU_ATOMIC(atomicAdd, unsigned int, old + v)
CUDA_EMU_ATOMIC(atomicAdd, unsigned long long, old + v)
CUDA_EMU_ATOMIC(atomicAdd, float, old + v)
CUDA_EMU_ATOMIC(atomicAdd, double, old + v)
CUDA_EMU_ATOMIC(atomicSub, int, static_cast<int>(static_cast<unsigned>(old) - static_cast<unsigned>(v)))
CUDA_EMU_ATOMIC(atomicSub, unsigned int, old - v)
CUDA_EMU_ATOMIC(atomicExch, int, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned int, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned long long, v)
CUDA_EMU_ATOMIC(atomicExch, float, v)
CUDA_EMU_ATOMIC(atomicMin, int, old < v ? old : v)
CUDA_EMU_ATOMIC(atomicMin, unsigned int, old < v ? old : v)
CUDA_EMU_ATOMIC(atomicMin, long long, old < v ? old : v)
CUDA_EMU_ATOMIC(atomicMin, unsigned long long, old < v ? old : v)
CUDA_EMU_ATOMIC(atomicMax, int, old > v ? old : v)
CUDA_EMU_ATOMIC(atomicMax, unsigned int, old > v ? old : v)
CUDA_EMU_ATOMIC(atomicMax, long long, old > v ? old : v)
CUDA_EMU_ATOMIC(atomicMax, unsigned long long, old > v ? old : v)
CUDA_EMU_ATOMIC(atomicAnd, int, old & v)
CUDA_EMU_ATOMIC(atomicAnd, unsigned int, old & v)
CUDA_EMU_ATOMIC(atomicAnd, unsigned long long, old & v)
CUDA_EMU_ATOMIC(atomicOr, int, old | v)
CUDA_EMU_ATOMIC(atomicOr, unsigned int, old | v)
CUDA_EMU_ATOMIC(atomicOr, unsigned long long, old | v)
CUDA_EMU_ATOMIC(atomicXor, int, old ^ v)
CUDA_EMU_ATOMIC(atomicXor, unsigned int, old ^ v)
CUDA_EMU_ATOMIC(atomicXor, unsigned long long, old ^ v)
// ((old >= v) ? 0 : old + 1) and (((old == 0) || (old > v)) ? v : old - 1), as documented.
CUDA_EMU_ATOMIC(atomicInc, unsigned int, old >= v ? 0u : old + 1u)
CUDA_EMU_ATOMIC(atomicDec, unsigned int, (old == 0u || old > v) ? v : old - 1u)
#undef CUDA_EMU_ATOMIC
#define CUDA_EMU_CAS(T) \
  inline T atomicCAS(T* p, T compare, T v) {                                                     \
    return cuda_emu::atomic_rmw(p, [compare, v](T old) { return old == compare ? v : old; });    \
  }
CUDA_EMU_CAS(int)
CUDA_EMU_CAS(unsigned int)
CUDA_EMU_CAS(unsigned long long)
CUDA_EMU_CAS(unsigned short)
#undef CUDA_EMU_CAS

// ---------------------------------------------------------------------------
// Bit reinterpretation and integer intrinsics.
// ---------------------------------------------------------------------------
namespace cuda_emu {
template <typename To, typename From>
To bits_as(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
}  // namespace cuda_emu
inline int __float_as_int(float x) { return cuda_emu::bits_as<int>(x); }
inline unsigned __float_as_uint(float x) { return cuda_emu::bits_as<unsigned>(x); }
inline float __int_as_float(int x) { return cuda_emu::bits_as<float>(x); }
inline float __uint_as_float(unsigned x) { return cuda_emu::bits_as<float>(x); }
inline long long __double_as_longlong(double x) { return cuda_emu::bits_as<long long>(x); }
inline double __longlong_as_double(long long x) { return cuda_emu::bits_as<double>(x); }
inline int __double2hiint(double x) { return static_cast<int>(cuda_emu::bits_as<unsigned long long>(x) >> 32); }
inline int __double2loint(double x) { return static_cast<int>(cuda_emu::bits_as<unsigned long long>(x)); }
inline double __hiloint2double(int hi, int lo) {
  return cuda_emu::bits_as<double>((static_cast<unsigned long long>(static_cast<unsigned>(hi)) << 32) |
                                   static_cast<unsigned>(lo));
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  unsigned long long r = 0;
  for (int i = 0; i < 64; ++i) r |= ((x >> i) & 1ull) << (63 - i);
  return r;
}
inline int __mulhi(int x, int y) { return static_cast<int>((static_cast<long long>(x) * y) >> 32); }
inline unsigned __umulhi(unsigned x, unsigned y) {
  return static_cast<unsigned>((static_cast<unsigned long long>(x) * y) >> 32);
}
inline long long __mul64hi(long long x, long long y) {
  return static_cast<long long>((static_cast<__int128>(x) * y) >> 64);
}
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(x) * y) >> 64);
}
inline int __mul24(int x, int y) {
  // The low 32 bits of the product of the low 24 bits (sign-extended) of each.
  const long long a = static_cast<long long>(static_cast<int>(static_cast<unsigned>(x) << 8) >> 8);
  const long long b = static_cast<long long>(static_cast<int>(static_cast<unsigned>(y) << 8) >> 8);
  return static_cast<int>(static_cast<unsigned>(a * b));
}
inline unsigned __umul24(unsigned x, unsigned y) { return (x & 0xFFFFFFu) * (y & 0xFFFFFFu); }

// min / max as CUDA overloads them in the global namespace.
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---------------------------------------------------------------------------
// Float -> integer conversions with a rounding mode. PTX's cvt saturates: out
// of range goes to the nearest representable integer, and NaN to 0 when a
// float becomes a 32-bit integer, otherwise to 1 << (bits - 1) (PTX ISA 9.0).
// ---------------------------------------------------------------------------
namespace cuda_emu {
enum class Round { Nearest, Zero, Down, Up };

template <typename I, typename F>
I float_to_int(F x, Round mode) {
  if (std::isnan(x)) {
    if (std::is_same_v<F, float> && sizeof(I) == 4) return I(0);
    return static_cast<I>(static_cast<std::make_unsigned_t<I>>(1) << (8 * sizeof(I) - 1));
  }
  F r;
  switch (mode) {
    case Round::Nearest: r = std::nearbyint(x); break;  // the default mode: ties to even
    case Round::Zero: r = std::trunc(x); break;
    case Round::Down: r = std::floor(x); break;
    default: r = std::ceil(x); break;
  }
  // Compared in long double, where every bound of a 64-bit integer is exact.
  const long double v = r;
  if (v <= static_cast<long double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v >= static_cast<long double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}
}  // namespace cuda_emu

#define CUDA_EMU_F2I(prefix, F, I)                                                                      \
  inline I prefix##_rn(F x) { return cuda_emu::float_to_int<I>(x, cuda_emu::Round::Nearest); }                  \
  inline I prefix##_rz(F x) { return cuda_emu::float_to_int<I>(x, cuda_emu::Round::Zero); }                     \
  inline I prefix##_rd(F x) { return cuda_emu::float_to_int<I>(x, cuda_emu::Round::Down); }                     \
  inline I prefix##_ru(F x) { return cuda_emu::float_to_int<I>(x, cuda_emu::Round::Up); }
CUDA_EMU_F2I(__float2int, float, int)
CUDA_EMU_F2I(__float2uint, float, unsigned int)
CUDA_EMU_F2I(__float2ll, float, long long)
CUDA_EMU_F2I(__float2ull, float, unsigned long long)
CUDA_EMU_F2I(__double2int, double, int)
CUDA_EMU_F2I(__double2uint, double, unsigned int)
CUDA_EMU_F2I(__double2ll, double, long long)
CUDA_EMU_F2I(__double2ull, double, unsigned long long)
#undef CUDA_EMU_F2I
// Integer -> float in round-to-nearest: the C++ conversion (the default mode).
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float __ull2float_rn(unsigned long long x) { return static_cast<float>(x); }
inline double __int2double_rn(int x) { return static_cast<double>(x); }
inline double __ll2double_rn(long long x) { return static_cast<double>(x); }
inline double __ull2double_rn(unsigned long long x) { return static_cast<double>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

// ---------------------------------------------------------------------------
// Arithmetic with an explicit rounding (round to nearest: IEEE, never
// contracted into an FMA) and the fast intrinsics (IEEE here, see the top).
// ---------------------------------------------------------------------------
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// Clamp to [+0, 1]; NaN gives 0.
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
