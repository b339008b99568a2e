// The arithmetic of ipguard's two fused ops, in one place.
//
// Every function here is `__host__ __device__` inline so that the CPU kernels
// (csrc/cpu) and the CUDA kernels (csrc/cuda) run literally the same math: the
// CPU parity tests therefore also exercise what the GPU computes. Kernels only
// decide how rows / elements are laid out over threads; they never re-derive a
// formula. The pure-PyTorch oracle is ipguard_fast/reference.py.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define IPG_HD __host__ __device__ __forceinline__
#elif defined(IPGUARD_MATH_STATIC)
// A file built for another instruction set (csrc/cpu/avx2/) defines this to get
// its own copies: with plain `inline` the linker keeps one copy of a function
// for the whole library, and that could be one compiled for AVX2.
#define IPG_HD static inline
#else
#define IPG_HD inline
#endif

namespace ipguard {
namespace math {

// ---------------------------------------------------------------------------
// logit_gap_loss
//
//   loss = relu(g_i - g_j + k) + relu(g_t* - g_i),
//   t*   = argmax over t not in {i, j} of g_t (lowest index on ties).
// With C == 2 there is no t* and the second term is 0. A row holding any
// non-finite logit (or labels outside [0, C), which the ops reject before
// launching but kernels still guard against) gets loss NaN and a zero grad row.
// `acc_t` is float for float32/float16/bfloat16 logits, double for float64.
// ---------------------------------------------------------------------------

// Running "best runner-up" candidate: value and column, column -1 = none yet.
template <typename acc_t>
struct ArgMax {
  acc_t value;
  int64_t index;
};

template <typename acc_t>
IPG_HD ArgMax<acc_t> argmax_empty() {
  return ArgMax<acc_t>{acc_t(0), -1};
}

// Combine two partial argmaxes; the larger value wins, the lower column on a
// tie, so the result does not depend on the order of a parallel reduction.
template <typename acc_t>
IPG_HD ArgMax<acc_t> argmax_combine(ArgMax<acc_t> a, ArgMax<acc_t> b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

// Offer column t with logit g to the runner-up search (skips i and j).
template <typename acc_t>
IPG_HD ArgMax<acc_t> argmax_offer(ArgMax<acc_t> best, acc_t g, int64_t t, int64_t i,
                                  int64_t j) {
  if (t == i || t == j) return best;
  return argmax_combine(best, ArgMax<acc_t>{g, t});
}

template <typename acc_t>
IPG_HD bool is_finite(acc_t g) {
  // Written out (not std::isfinite) so host and device agree under fast-math.
  return g == g && g - g == acc_t(0);
}

IPG_HD bool labels_valid(int64_t i, int64_t j, int64_t num_classes) {
  return i >= 0 && i < num_classes && j >= 0 && j < num_classes && i != j;
}

// What a row contributes: its loss and which of the two terms are active.
template <typename acc_t>
struct GapRow {
  acc_t loss;
  bool first_active;   // relu(g_i - g_j + k) > 0: push g_i down, g_j up
  bool second_active;  // relu(g_t* - g_i) > 0: push g_t* down, g_i up
  int64_t t_star;      // -1 when C == 2
};

// `row_ok` is false when the row had a non-finite logit or bad labels.
template <typename acc_t>
IPG_HD GapRow<acc_t> gap_row(acc_t g_i, acc_t g_j, ArgMax<acc_t> runner_up, acc_t k,
                             bool row_ok) {
  GapRow<acc_t> r;
  r.t_star = runner_up.index;
  if (!row_ok) {
    r.loss = acc_t(NAN);
    r.first_active = false;
    r.second_active = false;
    return r;
  }
  const acc_t first = g_i - g_j + k;
  const acc_t second = runner_up.index >= 0 ? runner_up.value - g_i : acc_t(0);
  r.first_active = first > acc_t(0);
  r.second_active = second > acc_t(0);
  r.loss = (r.first_active ? first : acc_t(0)) + (r.second_active ? second : acc_t(0));
  return r;
}

// d loss / d g_c for column c of a row (exactly 0, +1, -1 or, when t* == i is
// impossible, never +-2: i, j and t* are distinct columns).
template <typename acc_t>
IPG_HD acc_t gap_grad_at(int64_t c, int64_t i, int64_t j, const GapRow<acc_t>& r) {
  acc_t d = acc_t(0);
  if (r.first_active) d += acc_t(c == i) - acc_t(c == j);
  if (r.second_active) d += acc_t(c == r.t_star) - acc_t(c == i);
  return d;
}

// The only entries of a row's gradient that can be non-zero: columns i, j and
// t* (at_t is unused when t* == -1). Kernels that zero the row in bulk write
// these three after; `any` is false when the whole row is zero.
template <typename acc_t>
struct GapGradEntries {
  bool any;
  acc_t at_i, at_j, at_t;
};

template <typename acc_t>
IPG_HD GapGradEntries<acc_t> gap_grad_entries(int64_t i, int64_t j, const GapRow<acc_t>& r) {
  GapGradEntries<acc_t> e;
  e.any = r.first_active || r.second_active;
  e.at_i = gap_grad_at(i, i, j, r);
  e.at_j = gap_grad_at(j, i, j, r);
  e.at_t = r.t_star >= 0 ? gap_grad_at(r.t_star, i, j, r) : acc_t(0);
  return e;
}

// ---------------------------------------------------------------------------
// boundary_adam_step_
//
// torch.optim.Adam's update (no weight decay, no amsgrad), with each sample's
// own step count, followed by a clamp to [lo, hi]:
//   m  = lerp(m, g, 1 - beta1)
//   v  = beta2 * v + (1 - beta2) * g * g
//   x  = clamp(x - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), lo, hi)
// with bc1 = 1 - beta1^step and bc2 = 1 - beta2^step, computed in double per
// sample as torch.optim.Adam computes them in Python floats.
// ---------------------------------------------------------------------------

// Per-sample scalars: computed once per sample, shared by all its elements.
struct AdamSampleScalars {
  float step_size;           // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};

IPG_HD AdamSampleScalars adam_sample_scalars(int64_t step, double lr, double beta1,
                                             double beta2) {
  const double s = static_cast<double>(step);
  AdamSampleScalars out;
  out.step_size = static_cast<float>(lr / (1.0 - pow(beta1, s)));
  out.bias_correction2_sqrt = static_cast<float>(sqrt(1.0 - pow(beta2, s)));
  return out;
}

// Scalars shared by every element of every sample, precomputed on the host in
// double like torch.optim.Adam, then rounded to float once.
struct AdamConstants {
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float lo;
  float hi;
};

// Clamp that lets NaN through, as torch.clamp does (a NaN must stay visible).
IPG_HD float clamp_keep_nan(float x, float lo, float hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// One element's update, in place.
IPG_HD void adam_clamp_element(float& x, float& m, float& v, float g,
                               const AdamConstants& c, const AdamSampleScalars& s) {
  m = m + c.one_minus_beta1 * (g - m);  // torch.lerp with weight < 0.5
  v = v * c.beta2 + c.one_minus_beta2 * g * g;
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + c.eps;
  x = clamp_keep_nan(x - s.step_size * (m / denom), c.lo, c.hi);
}

}  // namespace math
}  // namespace ipguard
