// The row kernels of logit_gap_loss (logit_gap_rows.h) with the compiler's
// baseline flags: they run on every CPU. Lanes are plain arrays of the widths
// the AVX2 build uses (8 float, 4 double; 16 float16/bfloat16 per load), which
// the compiler vectorises with what the baseline has (SSE2 on x86-64, NEON on
// arm64). Also the kernel for logits of any strides.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "logit_gap_kernels.h"
#include "logit_gap_rows.h"

namespace ipguard {
namespace {

template <typename acc_t, int N>
struct LaneArray {
  acc_t v[N];
};

// kParts vectors of N lanes per load; the storage type S converts with c10's casts.
template <typename S, typename A, int N, int P>
struct ArrayLanes {
  using scalar_t = S;
  using acc_t = A;
  using Vec = LaneArray<A, N>;
  static constexpr int kLanes = N;
  static constexpr int kParts = P;
  static constexpr int64_t kStep = N * P;
  static constexpr bool kCanStream = false;

  static inline acc_t to_acc(S x) { return static_cast<acc_t>(x); }
  static inline S from_acc(acc_t x) { return static_cast<S>(x); }
  static inline void load(const S* p, Vec* out) {
    for (int q = 0; q < P; ++q) {
      for (int l = 0; l < N; ++l) out[q].v[l] = to_acc(p[q * N + l]);
    }
  }
  static inline Vec splat(acc_t x) {
    Vec r;
    for (int l = 0; l < N; ++l) r.v[l] = x;
    return r;
  }
  static inline Vec max(Vec a, Vec m) {
    for (int l = 0; l < N; ++l) a.v[l] = a.v[l] > m.v[l] ? a.v[l] : m.v[l];
    return a;
  }
  static inline Vec add(Vec a, Vec b) {
    for (int l = 0; l < N; ++l) a.v[l] = a.v[l] + b.v[l];
    return a;
  }
  static inline Vec sub(Vec a, Vec b) {
    for (int l = 0; l < N; ++l) a.v[l] = a.v[l] - b.v[l];
    return a;
  }
  static inline void store(Vec a, acc_t* out) {
    for (int l = 0; l < N; ++l) out[l] = a.v[l];
  }
  static inline unsigned equal_mask(Vec a, Vec t) {
    unsigned bits = 0;
    for (int l = 0; l < N; ++l) bits |= static_cast<unsigned>(a.v[l] == t.v[l]) << l;
    return bits;
  }
};

template <GapDtype>
struct Lanes;
template <>
struct Lanes<GapDtype::kFloat32> : ArrayLanes<float, float, 8, 1> {};
template <>
struct Lanes<GapDtype::kFloat64> : ArrayLanes<double, double, 4, 1> {};
template <>
struct Lanes<GapDtype::kFloat16> : ArrayLanes<c10::Half, float, 8, 2> {};
template <>
struct Lanes<GapDtype::kBFloat16> : ArrayLanes<c10::BFloat16, float, 8, 2> {};

}  // namespace

namespace cpu_default {

void logit_gap_rows(const GapRowsArgs& args, int64_t b0, int64_t b1) {
  visit_dtype<Lanes>(args.dtype, [&](auto lanes) { unit_stride_rows<decltype(lanes)>(args, b0, b1); });
}

void logit_gap_rows_strided(const GapRowsArgs& args, int64_t b0, int64_t b1) {
  visit_dtype<Lanes>(args.dtype, [&](auto lanes) { strided_rows<decltype(lanes)>(args, b0, b1); });
}

}  // namespace cpu_default
}  // namespace ipguard
