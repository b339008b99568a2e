// Row kernels of ipguard::logit_gap_loss on CPU. Included by logit_gap_loss.cpp
// (baseline flags) and logit_gap_loss_avx2.cpp (AVX2), each of which defines
// IPGUARD_CPU_KERNEL_NS first: everything here is either in an anonymous
// namespace or in that one, so the two builds never share a symbol.
//
// Unit column stride (contiguous rows, or a row-padded view): the running max
// and finiteness of the row, columns i and j left out, are reduced with
// at::vec::Vectorized; only in a finite row does a second vectorised pass look
// for the first column holding that max (t*: ties go to the lowest index, as
// argmax_offer's fold), and it stops there. The next row is prefetched during
// the sweep. The gradient row is zeroed in bulk and its 2-3 non-zero entries
// written after, or, in the AVX2 build and for gradients of 4 MB or more,
// streamed past the cache with the entries in place. The per-row arithmetic
// (loss, gradient coefficients) is csrc/boundary_math.h, shared with CUDA.
#pragma once

#ifndef IPGUARD_CPU_KERNEL_NS
#error "define IPGUARD_CPU_KERNEL_NS before including logit_gap_rows.h"
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "../boundary_math.h"
#include "logit_gap_kernels.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

// Loads kStep consecutive logits as kParts vectors of acc_t: one vector for
// float/double, two float vectors for float16/bfloat16 (converted exactly).
template <typename scalar_t>
struct RowLoad {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  using ScalarVec = at::vec::Vectorized<scalar_t>;
  static constexpr int64_t kStep = ScalarVec::size();
  static constexpr int kParts = static_cast<int>(kStep / Vec::size());
  static_assert(kParts == 1 || kParts == 2, "unexpected vector widths");
  using Parts = std::array<Vec, kParts>;

  static inline Parts load(const scalar_t* p) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return Parts{Vec::loadu(p)};
    } else {
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(ScalarVec::loadu(p));
      return Parts{lo, hi};
    }
  }
};

// Running max and finiteness of the columns offered so far. `bad` collects
// v - v, which is 0 for a finite v and NaN for an infinite or NaN one, so the
// columns are all finite iff every lane of `bad` is still 0. The max is only
// used for finite rows, so how it treats NaN does not matter. Two loads per
// iteration, each into its own accumulators: independent dependency chains.
template <typename scalar_t>
struct RowMaxFinite {
  using L = RowLoad<scalar_t>;
  using acc_t = typename L::acc_t;
  using Vec = typename L::Vec;
  static constexpr int kAcc = 2 * L::kParts;

  std::array<Vec, kAcc> vmax;
  std::array<Vec, kAcc> vbad;
  acc_t smax = -std::numeric_limits<acc_t>::infinity();
  acc_t sbad = acc_t(0);

  RowMaxFinite() {
    vmax.fill(Vec(-std::numeric_limits<acc_t>::infinity()));
    vbad.fill(Vec(acc_t(0)));
  }

  // Offers columns [begin, end) of `row`; `next`, when not null, is the row
  // after it, whose same columns are prefetched (rows are 4 KB at C = 1000 in
  // float32, and the hardware prefetcher does not cross a page).
  inline void offer(const scalar_t* row, int64_t begin, int64_t end, const scalar_t* next) {
    constexpr int64_t kStep = L::kStep;
    constexpr int kParts = L::kParts;
    int64_t c = begin;
    for (; c + 2 * kStep <= end; c += 2 * kStep) {
      if (next != nullptr) __builtin_prefetch(next + c);  // 2 * kStep columns = 64 bytes
      const auto a = L::load(row + c);
      const auto b = L::load(row + c + kStep);
      for (int p = 0; p < kParts; ++p) {
        // clamp_min(v, m) is max(m, v) without maximum()'s NaN propagation,
        // which a non-finite row does not need: its max is never used.
        vmax[p] = at::vec::clamp_min(a[p], vmax[p]);
        vbad[p] = vbad[p] + (a[p] - a[p]);
        vmax[kParts + p] = at::vec::clamp_min(b[p], vmax[kParts + p]);
        vbad[kParts + p] = vbad[kParts + p] + (b[p] - b[p]);
      }
    }
    for (; c + kStep <= end; c += kStep) {
      const auto a = L::load(row + c);
      for (int p = 0; p < kParts; ++p) {
        vmax[p] = at::vec::clamp_min(a[p], vmax[p]);
        vbad[p] = vbad[p] + (a[p] - a[p]);
      }
    }
    for (; c < end; ++c) {
      const acc_t v = static_cast<acc_t>(row[c]);
      smax = v > smax ? v : smax;
      sbad = sbad + (v - v);
    }
  }

  // Folds the vector lanes into the scalar ones; call once, after the last offer.
  inline void finish() {
    Vec m = vmax[0], s = vbad[0];
    for (int a = 1; a < kAcc; ++a) {
      m = at::vec::clamp_min(vmax[a], m);
      s = s + vbad[a];
    }
    std::array<acc_t, Vec::size()> mb, sb;
    m.store(mb.data());
    s.store(sb.data());
    for (int64_t l = 0; l < Vec::size(); ++l) {
      smax = mb[l] > smax ? mb[l] : smax;
      sbad = sbad + sb[l];
    }
  }

  bool finite() const { return sbad == acc_t(0); }
  acc_t max() const { return smax; }
};

// First column c in [begin, end) whose logit equals `target` (compared in
// acc_t, as argmax_offer compares), or `end` when there is none.
template <typename scalar_t>
inline int64_t first_equal(const scalar_t* row, int64_t begin, int64_t end,
                           at::opmath_type<scalar_t> target) {
  using L = RowLoad<scalar_t>;
  using Vec = typename L::Vec;
  const Vec t(target);
  int64_t c = begin;
  for (; c + L::kStep <= end; c += L::kStep) {
    const auto a = L::load(row + c);
    for (int p = 0; p < L::kParts; ++p) {
      // Lanes equal to target are all-zero bits in (a != t): zero_mask() flags them.
      unsigned hit = static_cast<unsigned>((a[p] != t).zero_mask());
      if (hit != 0u) {
        int lane = 0;
        while (!(hit & 1u)) {
          hit >>= 1;
          ++lane;
        }
        return c + p * Vec::size() + lane;
      }
    }
  }
  for (; c < end; ++c) {
    if (static_cast<at::opmath_type<scalar_t>>(row[c]) == target) return c;
  }
  return end;
}

// The runner-up of a row (columns other than i and j) by the scalar fold, any
// column stride; clears `finite` if a logit is not finite.
template <typename scalar_t>
inline ArgMax<at::opmath_type<scalar_t>> runner_up_fold(const scalar_t* row, int64_t C,
                                                        int64_t s1, int64_t i, int64_t j,
                                                        bool& finite) {
  using acc_t = at::opmath_type<scalar_t>;
  ArgMax<acc_t> best = argmax_empty<acc_t>();
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(row[c * s1]);
    finite = finite && is_finite(v);
    best = argmax_offer(best, v, c, i, j);
  }
  return best;
}

// One contiguous gradient row: zeros, then the entries at i, j and t*.
template <typename scalar_t, typename acc_t>
inline void write_grad_row(scalar_t* out, int64_t C, int64_t i, int64_t j,
                           const GapRow<acc_t>& r) {
  std::memset(out, 0, sizeof(scalar_t) * C);  // all-zero bits: +0 in every dtype
  const GapGradEntries<acc_t> e = gap_grad_entries(i, j, r);
  if (e.any) {
    out[i] = static_cast<scalar_t>(e.at_i);
    out[j] = static_cast<scalar_t>(e.at_j);
    if (r.t_star >= 0) out[r.t_star] = static_cast<scalar_t>(e.at_t);
  }
}

#if defined(CPU_CAPABILITY_AVX2)
// The same row written with non-temporal (streaming) stores, for gradients too
// large to stay in cache: no read-for-ownership of the destination, a third
// less memory traffic. Each 32-byte block is written once, the 2-3 non-zero
// entries placed in their blocks first (storing them after a streamed block
// would fetch its line back from memory). Callers _mm_sfence() before the
// rows are read by another thread.
template <typename scalar_t, typename acc_t>
inline void stream_grad_row(scalar_t* out, int64_t C, int64_t i, int64_t j,
                            const GapRow<acc_t>& r) {
  const GapGradEntries<acc_t> e = gap_grad_entries(i, j, r);
  // The non-zero entries, by column.
  int64_t col[3] = {-1, -1, -1};  // initialised only to quiet -Wmaybe-uninitialized: read below n
  scalar_t val[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
  int n = 0;
  if (e.any) {
    col[n] = i, val[n++] = static_cast<scalar_t>(e.at_i);
    col[n] = j, val[n++] = static_cast<scalar_t>(e.at_j);
    if (r.t_star >= 0) col[n] = r.t_star, val[n++] = static_cast<scalar_t>(e.at_t);
    for (int a = 1; a < n; ++a) {
      for (int b = a; b > 0 && col[b] < col[b - 1]; --b) {
        std::swap(col[b], col[b - 1]);
        std::swap(val[b], val[b - 1]);
      }
    }
  }
  const auto scalar_at = [&](int64_t c) {
    for (int a = 0; a < n; ++a) {
      if (col[a] == c) return val[a];
    }
    return scalar_t(0);
  };
  constexpr int64_t kBlock = 32 / sizeof(scalar_t);
  int64_t c = 0;
  // The row starts at a multiple of sizeof(scalar_t): scalar stores up to the
  // first 32-byte boundary.
  for (; c < C && (reinterpret_cast<uintptr_t>(out + c) & 31) != 0; ++c) out[c] = scalar_at(c);
  int s = 0;
  while (s < n && col[s] < c) ++s;
  const __m256i zero = _mm256_setzero_si256();
  for (; c + kBlock <= C; c += kBlock) {
    if (s < n && col[s] < c + kBlock) {
      alignas(32) scalar_t block[kBlock];
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
#endif

// Gradients at least this large are streamed past the cache (where the build
// can): the kernel then writes memory once instead of reading it first.
constexpr int64_t kStreamGradBytes = int64_t(4) << 20;

template <typename scalar_t>
void logit_gap_rows_unit_stride(const scalar_t* g, int64_t B, int64_t C, int64_t s0,
                                const int64_t* i_ptr, const int64_t* j_ptr,
                                at::opmath_type<scalar_t> k, at::opmath_type<scalar_t>* loss,
                                scalar_t* grad) {
  using acc_t = at::opmath_type<scalar_t>;
#if defined(CPU_CAPABILITY_AVX2)
  const bool stream = B * C * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamGradBytes;
#endif
  at::parallel_for(0, B, /*grain_size=*/std::max<int64_t>(1, 16384 / C), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* row = g + b * s0;
      const scalar_t* next = b + 1 < b1 ? row + s0 : nullptr;
      const int64_t i = i_ptr[b], j = j_ptr[b];
      ArgMax<acc_t> best = argmax_empty<acc_t>();
      acc_t g_i = acc_t(0), g_j = acc_t(0);
      // Labels were checked before the launch; re-guard so no read is out of
      // bounds (a bad row is NaN with a zero gradient, as on CUDA).
      bool row_ok = labels_valid(i, j, C);
      if (row_ok) {
        const int64_t lo = i < j ? i : j, hi = i < j ? j : i;
        RowMaxFinite<scalar_t> m;
        m.offer(row, 0, lo, next);
        m.offer(row, lo + 1, hi, next);
        m.offer(row, hi + 1, C, next);
        m.finish();
        // Read after the sweep, from cache: at the start of a row these two
        // scattered loads were its first (and slowest) misses.
        g_i = static_cast<acc_t>(row[i]);
        g_j = static_cast<acc_t>(row[j]);
        row_ok = m.finite() && is_finite(g_i) && is_finite(g_j);
        if (row_ok && C > 2) {
          // The max was taken over the columns other than i and j, so one of
          // them holds it: step past i or j where they tie with it.
          int64_t t = first_equal(row, 0, C, m.max());
          while (t == i || t == j) t = first_equal(row, t + 1, C, m.max());
          if (t < C) {
            best = ArgMax<acc_t>{static_cast<acc_t>(row[t]), t};
          } else {  // unreachable; stay exact anyway
            bool unused = true;
            best = runner_up_fold(row, C, 1, i, j, unused);
          }
        }
      }
      const GapRow<acc_t> r = gap_row(g_i, g_j, best, k, row_ok);
      loss[b] = r.loss;
#if defined(CPU_CAPABILITY_AVX2)
      if (stream) {
        stream_grad_row(grad + b * C, C, i, j, r);
        continue;
      }
#endif
      write_grad_row(grad + b * C, C, i, j, r);
    }
#if defined(CPU_CAPABILITY_AVX2)
    if (stream) _mm_sfence();  // streamed rows visible before the op returns
#endif
  });
}

}  // namespace

namespace IPGUARD_CPU_KERNEL_NS {

void logit_gap_loss_unit_stride(const at::Tensor& logits, const int64_t* i_ptr,
                                const int64_t* j_ptr, double k, at::Tensor& loss,
                                at::Tensor& grad) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "logit_gap_loss_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        logit_gap_rows_unit_stride<scalar_t>(
            logits.const_data_ptr<scalar_t>(), logits.size(0), logits.size(1),
            logits.stride(0), i_ptr, j_ptr, static_cast<acc_t>(k),
            loss.mutable_data_ptr<acc_t>(), grad.mutable_data_ptr<scalar_t>());
      });
}

}  // namespace IPGUARD_CPU_KERNEL_NS
}  // namespace ipguard
