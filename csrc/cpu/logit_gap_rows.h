// Row kernels of ipguard::logit_gap_loss on CPU, written once over a "lanes"
// type L and compiled per instruction set: logit_gap_rows_default.cpp (plain
// lane arrays, baseline flags) and avx2/logit_gap_rows.cpp (AVX2 intrinsics).
// No torch header: the AVX2 file includes this one. Everything here is in an
// anonymous namespace, so each file keeps its own copy.
//
// L, for one logits dtype, provides:
//   scalar_t, acc_t     storage and math types (acc_t: float, double for float64)
//   Vec, kLanes         kLanes acc_t values
//   kStep, kParts       a load reads kStep scalars into kParts Vecs
//   load(p, out), splat(x), max(a, m), add(a, b), sub(a, b), store(v, out)
//   equal_mask(a, t)    bit l set where lane l of a equals lane l of t
//   to_acc(s), from_acc(x)
//   kCanStream          true when stream_grad_row(...) and stream_fence() exist
//
// Unit column stride (contiguous rows, or a row-padded view): the running max
// and finiteness of the row, columns i and j left out, are reduced over Vecs;
// only in a finite row does a second pass look for the first column holding
// that max (t*: ties go to the lowest index, as argmax_offer's fold), and it
// stops there. The next row is prefetched during the sweep. The gradient row
// is zeroed in bulk and its 2-3 non-zero entries written after, or, where L
// can and for gradients of 4 MB or more, streamed past the cache with the
// entries in place. Other strides take the scalar fold of argmax_offer. The
// per-row arithmetic (loss, gradient coefficients) is csrc/boundary_math.h,
// shared with CUDA; only the reductions over a row live here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../boundary_math.h"
#include "logit_gap_kernels.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

// Gradients at least this large are streamed past the cache (where L can):
// the kernel then writes memory once instead of reading it first.
constexpr int64_t kStreamGradBytes = int64_t(4) << 20;

// Running max and finiteness of the columns offered so far. `bad` collects
// v - v, which is 0 for a finite v and NaN for an infinite or NaN one, so the
// columns are all finite iff every lane of `bad` is still 0. The max is only
// used for finite rows, so how it treats NaN does not matter. Two loads per
// iteration, each into its own accumulators: independent dependency chains.
template <typename L>
struct RowMaxFinite {
  using scalar_t = typename L::scalar_t;
  using acc_t = typename L::acc_t;
  using Vec = typename L::Vec;
  static constexpr int kParts = L::kParts;
  static constexpr int kAcc = 2 * kParts;

  Vec vmax[kAcc];
  Vec vbad[kAcc];
  acc_t smax = -acc_t(INFINITY);
  acc_t sbad = acc_t(0);

  RowMaxFinite() {
    for (int a = 0; a < kAcc; ++a) {
      vmax[a] = L::splat(-acc_t(INFINITY));
      vbad[a] = L::splat(acc_t(0));
    }
  }

  inline void take(const Vec* x, int first) {
    for (int p = 0; p < kParts; ++p) {
      vmax[first + p] = L::max(x[p], vmax[first + p]);
      vbad[first + p] = L::add(vbad[first + p], L::sub(x[p], x[p]));
    }
  }

  // Offers columns [begin, end) of `row`; `next`, when not null, is the row
  // after it, whose same columns are prefetched (rows are 4 KB at C = 1000 in
  // float32, and the hardware prefetcher does not cross a page).
  inline void offer(const scalar_t* row, int64_t begin, int64_t end, const scalar_t* next) {
    constexpr int64_t kStep = L::kStep;
    Vec a[kParts], b[kParts];
    int64_t c = begin;
    for (; c + 2 * kStep <= end; c += 2 * kStep) {
      if (next != nullptr) __builtin_prefetch(next + c);  // 2 * kStep columns = 64 bytes
      L::load(row + c, a);
      L::load(row + c + kStep, b);
      take(a, 0);
      take(b, kParts);
    }
    for (; c + kStep <= end; c += kStep) {
      L::load(row + c, a);
      take(a, 0);
    }
    for (; c < end; ++c) {
      const acc_t v = L::to_acc(row[c]);
      smax = v > smax ? v : smax;
      sbad = sbad + (v - v);
    }
  }

  // Folds the vector lanes into the scalar ones; call once, after the last offer.
  inline void finish() {
    Vec m = vmax[0], s = vbad[0];
    for (int a = 1; a < kAcc; ++a) {
      m = L::max(vmax[a], m);
      s = L::add(s, vbad[a]);
    }
    acc_t mb[L::kLanes], sb[L::kLanes];
    L::store(m, mb);
    L::store(s, sb);
    for (int l = 0; l < L::kLanes; ++l) {
      smax = mb[l] > smax ? mb[l] : smax;
      sbad = sbad + sb[l];
    }
  }

  bool finite() const { return sbad == acc_t(0); }
  acc_t max() const { return smax; }
};

// First column c in [begin, end) whose logit equals `target` (compared in
// acc_t, as argmax_offer compares), or `end` when there is none.
template <typename L>
inline int64_t first_equal(const typename L::scalar_t* row, int64_t begin, int64_t end,
                           typename L::acc_t target) {
  const typename L::Vec t = L::splat(target);
  typename L::Vec a[L::kParts];
  int64_t c = begin;
  for (; c + L::kStep <= end; c += L::kStep) {
    L::load(row + c, a);
    for (int p = 0; p < L::kParts; ++p) {
      const unsigned hit = L::equal_mask(a[p], t);
      if (hit != 0u) return c + p * L::kLanes + __builtin_ctz(hit);
    }
  }
  for (; c < end; ++c) {
    if (L::to_acc(row[c]) == target) return c;
  }
  return end;
}

// The runner-up of a row (columns other than i and j) by the scalar fold, any
// column stride; clears `finite` if a logit is not finite.
template <typename L>
inline ArgMax<typename L::acc_t> runner_up_fold(const typename L::scalar_t* row, int64_t C,
                                                int64_t s1, int64_t i, int64_t j, bool& finite) {
  using acc_t = typename L::acc_t;
  ArgMax<acc_t> best = argmax_empty<acc_t>();
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = L::to_acc(row[c * s1]);
    finite = finite && is_finite(v);
    best = argmax_offer(best, v, c, i, j);
  }
  return best;
}

// One contiguous gradient row: zeros, then the entries at i, j and t*.
template <typename L>
inline void write_grad_row(typename L::scalar_t* out, int64_t C, int64_t i, int64_t j,
                           const GapRow<typename L::acc_t>& r) {
  std::memset(out, 0, sizeof(*out) * C);  // all-zero bits: +0 in every dtype
  const auto e = gap_grad_entries(i, j, r);
  if (e.any) {
    out[i] = L::from_acc(e.at_i);
    out[j] = L::from_acc(e.at_j);
    if (r.t_star >= 0) out[r.t_star] = L::from_acc(e.at_t);
  }
}

// Loss terms of one row with unit column stride; `next` is prefetched.
template <typename L>
inline GapRow<typename L::acc_t> unit_stride_row(const typename L::scalar_t* row,
                                                 const typename L::scalar_t* next, int64_t C,
                                                 int64_t i, int64_t j, typename L::acc_t k) {
  using acc_t = typename L::acc_t;
  ArgMax<acc_t> best = argmax_empty<acc_t>();
  acc_t g_i = acc_t(0), g_j = acc_t(0);
  // Labels were checked before the launch; re-guard so no read is out of
  // bounds (a bad row is NaN with a zero gradient, as on CUDA).
  bool row_ok = labels_valid(i, j, C);
  if (row_ok) {
    const int64_t lo = i < j ? i : j, hi = i < j ? j : i;
    RowMaxFinite<L> m;
    m.offer(row, 0, lo, next);
    m.offer(row, lo + 1, hi, next);
    m.offer(row, hi + 1, C, next);
    m.finish();
    // Read after the sweep, from cache: at the start of a row these two
    // scattered loads were its first (and slowest) misses.
    g_i = L::to_acc(row[i]);
    g_j = L::to_acc(row[j]);
    row_ok = m.finite() && is_finite(g_i) && is_finite(g_j);
    if (row_ok && C > 2) {
      // The max was taken over the columns other than i and j, so one of
      // them holds it: step past i or j where they tie with it.
      int64_t t = first_equal<L>(row, 0, C, m.max());
      while (t == i || t == j) t = first_equal<L>(row, t + 1, C, m.max());
      if (t < C) {
        best = ArgMax<acc_t>{L::to_acc(row[t]), t};
      } else {  // unreachable; stay exact anyway
        bool unused = true;
        best = runner_up_fold<L>(row, C, 1, i, j, unused);
      }
    }
  }
  return gap_row(g_i, g_j, best, k, row_ok);
}

// The arguments with their element types.
template <typename L>
struct TypedRows {
  using scalar_t = typename L::scalar_t;
  using acc_t = typename L::acc_t;
  const scalar_t* logits;
  acc_t* loss;
  scalar_t* grad;
  acc_t k;

  explicit TypedRows(const GapRowsArgs& a)
      : logits(static_cast<const scalar_t*>(a.logits)), loss(static_cast<acc_t*>(a.loss)),
        grad(static_cast<scalar_t*>(a.grad)), k(static_cast<acc_t>(a.k)) {}
};

// Rows [b0, b1) with unit column stride.
template <typename L>
void unit_stride_rows(const GapRowsArgs& a, int64_t b0, int64_t b1) {
  const TypedRows<L> t(a);
  const int64_t C = a.C, s0 = a.row_stride;
  const bool stream = L::kCanStream && a.B * C * static_cast<int64_t>(sizeof(*t.grad)) >= kStreamGradBytes;
  for (int64_t b = b0; b < b1; ++b) {
    const auto* row = t.logits + b * s0;
    const int64_t i = a.i[b], j = a.j[b];
    const auto r = unit_stride_row<L>(row, b + 1 < b1 ? row + s0 : nullptr, C, i, j, t.k);
    t.loss[b] = r.loss;
    if constexpr (L::kCanStream) {
      if (stream) {
        L::stream_grad_row(t.grad + b * C, C, i, j, r);
        continue;
      }
    }
    write_grad_row<L>(t.grad + b * C, C, i, j, r);
  }
  if constexpr (L::kCanStream) {
    if (stream) L::stream_fence();  // streamed rows visible before the op returns
  }
}

// Rows [b0, b1) with any strides: the scalar fold.
template <typename L>
void strided_rows(const GapRowsArgs& a, int64_t b0, int64_t b1) {
  using acc_t = typename L::acc_t;
  const TypedRows<L> t(a);
  const int64_t C = a.C, s0 = a.row_stride, s1 = a.col_stride;
  for (int64_t b = b0; b < b1; ++b) {
    const auto* row = t.logits + b * s0;
    const int64_t i = a.i[b], j = a.j[b];
    // Labels were checked before the launch; re-guard so no read is out of bounds.
    const bool labels_ok = labels_valid(i, j, C);
    bool finite = true;
    const ArgMax<acc_t> best = runner_up_fold<L>(row, C, s1, i, j, finite);
    const acc_t g_i = labels_ok ? L::to_acc(row[i * s1]) : acc_t(0);
    const acc_t g_j = labels_ok ? L::to_acc(row[j * s1]) : acc_t(0);
    const GapRow<acc_t> r = gap_row(g_i, g_j, best, t.k, finite && labels_ok);
    t.loss[b] = r.loss;
    write_grad_row<L>(t.grad + b * C, C, i, j, r);
  }
}

// Calls visit(Lanes<dtype>{}) for the logits' dtype.
template <template <GapDtype> class Lanes, typename Visit>
inline void visit_dtype(GapDtype dtype, Visit&& visit) {
  switch (dtype) {
    case GapDtype::kFloat32: visit(Lanes<GapDtype::kFloat32>{}); return;
    case GapDtype::kFloat64: visit(Lanes<GapDtype::kFloat64>{}); return;
    case GapDtype::kFloat16: visit(Lanes<GapDtype::kFloat16>{}); return;
    case GapDtype::kBFloat16: visit(Lanes<GapDtype::kBFloat16>{}); return;
  }
}

}  // namespace
}  // namespace ipguard
