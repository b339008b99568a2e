// The unit-stride row kernel of logit_gap_loss (../logit_gap_rows.h) with AVX2
// and F16C intrinsics. setup.py and CMakeLists.txt compile every file in
// csrc/cpu/avx2/ on its own with -mavx2 -mf16c, and ../logit_gap_loss.cpp calls
// it only on CPUs that have both (../cpu_capability.h).
//
// The rest of the library must never run an instruction from this file on a
// CPU without AVX2. The linker keeps one copy of each inline function for the
// whole library, and it could be the copy compiled here; so this file includes
// no torch, ATen or c10 header, and from the standard library only C headers
// and <cmath>'s declarations. Its own functions are in an anonymous namespace,
// boundary_math.h's are `static` here (IPGUARD_MATH_STATIC), and its one
// external symbol, ipguard::cpu_avx2::logit_gap_rows, has the plain interface of
// ../logit_gap_kernels.h. tests/test_cpu_dispatch.py checks the library's symbols.
#if !defined(__AVX2__) || !defined(__F16C__)
#error "csrc/cpu/avx2/ is compiled with -mavx2 -mf16c (setup.py and CMakeLists.txt pass them)"
#endif

#define IPGUARD_MATH_STATIC 1

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../logit_gap_kernels.h"
#include "../logit_gap_rows.h"

namespace ipguard {
namespace {

// The two instructions whose intrinsics differ by lane type; the rest is GCC's
// vector extensions on __v8sf / __v4df (__m256 / __m256d without may_alias).
inline __v8sf lanes_max(__v8sf a, __v8sf m) { return _mm256_max_ps(m, a); }
inline __v4df lanes_max(__v4df a, __v4df m) { return _mm256_max_pd(m, a); }
inline unsigned equal_lanes(__v8sf a, __v8sf t) { return _mm256_movemask_ps(_mm256_cmp_ps(a, t, _CMP_EQ_OQ)); }
inline unsigned equal_lanes(__v4df a, __v4df t) { return _mm256_movemask_pd(_mm256_cmp_pd(a, t, _CMP_EQ_OQ)); }

// One 256-bit register of acc_t: 8 float lanes (float32, and float16/bfloat16
// converted exactly) or 4 double lanes (float64).
template <typename A, typename V>
struct Avx2Vec {
  using acc_t = A;
  using Vec = V;
  static constexpr int kLanes = sizeof(V) / sizeof(A);
  static inline Vec loadu(const A* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline Vec splat(A x) {
    Vec v;
    for (int l = 0; l < kLanes; ++l) v[l] = x;
    return v;
  }
  static inline Vec max(Vec a, Vec m) { return lanes_max(a, m); }
  static inline Vec add(Vec a, Vec b) { return a + b; }
  static inline Vec sub(Vec a, Vec b) { return a - b; }
  static inline void store(Vec a, A* out) { std::memcpy(out, &a, sizeof(a)); }
  static inline unsigned equal_mask(Vec a, Vec t) { return equal_lanes(a, t); }
};
using F32x8 = Avx2Vec<float, __v8sf>;
using F64x4 = Avx2Vec<double, __v4df>;

// The gradient row written with non-temporal (streaming) stores, for gradients
// too large to stay in cache: no read-for-ownership of the destination, a third
// less memory traffic. Each 32-byte block is written once, the 2-3 non-zero
// entries placed in their blocks first (storing them after a streamed block
// would fetch its line back from memory). stream_fence() before the rows are
// read by another thread.
template <typename L>
struct StreamStores {
  static constexpr bool kCanStream = true;
  static inline void stream_fence() { _mm_sfence(); }

  template <typename S, typename A>
  static void stream_grad_row(S* out, int64_t C, int64_t i, int64_t j, const GapRow<A>& r) {
    const GapGradEntries<A> e = gap_grad_entries(i, j, r);
    // The non-zero entries, sorted by column.
    int64_t col[3] = {-1, -1, -1};  // initialised only to quiet -Wmaybe-uninitialized: read below n
    S val[3] = {S(0), S(0), S(0)};
    int n = 0;
    if (e.any) {
      col[n] = i, val[n++] = L::from_acc(e.at_i);
      col[n] = j, val[n++] = L::from_acc(e.at_j);
      if (r.t_star >= 0) col[n] = r.t_star, val[n++] = L::from_acc(e.at_t);
      for (int a = 1; a < n; ++a) {
        for (int b = a; b > 0 && col[b] < col[b - 1]; --b) {
          const int64_t c = col[b];
          const S v = val[b];
          col[b] = col[b - 1], val[b] = val[b - 1];
          col[b - 1] = c, val[b - 1] = v;
        }
      }
    }
    const auto scalar_at = [&](int64_t c) {
      for (int a = 0; a < n; ++a) {
        if (col[a] == c) return val[a];
      }
      return S(0);
    };
    constexpr int64_t kBlock = 32 / sizeof(S);
    int64_t c = 0;
    // The row starts at a multiple of sizeof(S): scalar stores up to the
    // first 32-byte boundary.
    for (; c < C && (reinterpret_cast<uintptr_t>(out + c) & 31) != 0; ++c) out[c] = scalar_at(c);
    int s = 0;
    while (s < n && col[s] < c) ++s;
    const __m256i zero = _mm256_setzero_si256();
    for (; c + kBlock <= C; c += kBlock) {
      if (s < n && col[s] < c + kBlock) {
        alignas(32) S block[kBlock];
        std::memset(block, 0, sizeof(block));
        for (; s < n && col[s] < c + kBlock; ++s) block[col[s] - c] = val[s];
        _mm256_stream_si256(reinterpret_cast<__m256i*>(out + c),
                            _mm256_load_si256(reinterpret_cast<const __m256i*>(block)));
      } else {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(out + c), zero);
      }
    }
    for (; c < C; ++c) out[c] = scalar_at(c);
  }
};

template <GapDtype>
struct Lanes;

// float32 and float64: loaded as they are.
template <typename T, typename Base, GapDtype D>
struct SameTypeLanes : Base, StreamStores<Lanes<D>> {
  using scalar_t = T;
  static constexpr int kParts = 1;
  static constexpr int64_t kStep = Base::kLanes;
  static inline T to_acc(T x) { return x; }
  static inline T from_acc(T x) { return x; }
  static inline void load(const T* p, typename Base::Vec* out) { out[0] = Base::loadu(p); }
};

template <>
struct Lanes<GapDtype::kFloat32> : SameTypeLanes<float, F32x8, GapDtype::kFloat32> {};
template <>
struct Lanes<GapDtype::kFloat64> : SameTypeLanes<double, F64x4, GapDtype::kFloat64> {};

// IEEE binary16 as its bits (the layout of c10::Half); F16C converts exactly,
// and rounds float to half to nearest even, as c10::Half does.
template <>
struct Lanes<GapDtype::kFloat16> : F32x8, StreamStores<Lanes<GapDtype::kFloat16>> {
  using scalar_t = uint16_t;
  static constexpr int kParts = 2;
  static constexpr int64_t kStep = 16;
  static inline float to_acc(uint16_t h) { return _cvtsh_ss(h); }
  static inline uint16_t from_acc(float x) { return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
  static inline void load(const uint16_t* p, Vec* out) {
    out[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    out[1] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
};

// bfloat16 as its bits (the layout of c10::BFloat16): the top half of a float.
template <>
struct Lanes<GapDtype::kBFloat16> : F32x8, StreamStores<Lanes<GapDtype::kBFloat16>> {
  using scalar_t = uint16_t;
  static constexpr int kParts = 2;
  static constexpr int64_t kStep = 16;
  static inline float to_acc(uint16_t b) {
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  // Round to nearest even, NaN to 0x7FC0: c10::BFloat16's conversion.
  static inline uint16_t from_acc(float x) {
    if (x != x) return 0x7FC0;
    uint32_t u;
    std::memcpy(&u, &x, sizeof(u));
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
  static inline Vec widen(__m128i bits) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  static inline void load(const uint16_t* p, Vec* out) {
    out[0] = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    out[1] = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
};

}  // namespace

namespace cpu_avx2 {

void logit_gap_rows(const GapRowsArgs& args, int64_t b0, int64_t b1) {
  visit_dtype<Lanes>(args.dtype, [&](auto lanes) { unit_stride_rows<decltype(lanes)>(args, b0, b1); });
}

}  // namespace cpu_avx2
}  // namespace ipguard
