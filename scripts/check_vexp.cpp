// Exhaustive accuracy check of csrc/vec_exp.h's float vexp against the
// correctly rounded exp (double exp rounded to float), over every finite
// float in [-104, 89], plus the special cases. `make check-vexp` builds and
// runs it (CI does).
// Exit 0 when every result is within 1 ulp and the special cases hold.
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

#include "../csrc/vec_exp.h"

static int64_t ordered(float f) {  // floats as integers in the order of their values
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i < 0 ? -static_cast<int64_t>(i & 0x7fffffff) : i;
}

int main() {
  const float lo = -104.f, hi = 89.f;
  int64_t worst = 0, over1 = 0, n = 0;
  float worst_x = 0.f;
  // Walk the floats upward from lo to hi.
  for (float x = lo; x <= hi; x = std::nextafter(x, std::numeric_limits<float>::infinity())) {
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    const float got = cwarp::cpu::vexp(x);
    ++n;
    if (std::isinf(want) || want == 0.f) {
      if (!(got == want || (want == 0.f && got <= std::numeric_limits<float>::denorm_min()))) ++over1;
      continue;
    }
    const int64_t d = ordered(got) > ordered(want) ? ordered(got) - ordered(want) : ordered(want) - ordered(got);
    if (d > worst) {
      worst = d;
      worst_x = x;
    }
    if (d > 1) ++over1;
  }
  const float inf = std::numeric_limits<float>::infinity();
  const bool specials = cwarp::cpu::vexp(-inf) == 0.f && cwarp::cpu::vexp(inf) == inf &&
                        std::isnan(cwarp::cpu::vexp(std::nanf(""))) && cwarp::cpu::vexp(0.f) == 1.f &&
                        cwarp::cpu::vexp(-200.f) == 0.f && cwarp::cpu::vexp(100.f) == inf;
  std::printf("%" PRId64 " floats in [%g, %g]: max error %" PRId64 " ulp (at x = %.9g), %" PRId64
              " results off by more than 1 ulp; special cases %s\n",
              n, lo, hi, worst, worst_x, over1, specials ? "ok" : "WRONG");
  return (over1 == 0 && specials) ? 0 : 1;
}
