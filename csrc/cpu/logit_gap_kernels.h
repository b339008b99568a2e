// The plain C++ interface between the logit_gap_loss op (logit_gap_loss.cpp:
// checks, outputs, threads, which build to call) and its row kernels, which
// are compiled once per instruction set:
//
//   cpu_default: logit_gap_rows_default.cpp, the compiler's baseline flags.
//   cpu_avx2:    avx2/logit_gap_rows.cpp, built on its own with -mavx2 -mf16c
//                (x86-64 only; the build defines IPGUARD_CPU_AVX2_KERNELS when
//                it links it). Called only where cpu_capability.h says so.
//
// No torch type crosses this interface (raw pointers, sizes, strides), so the
// AVX2 file includes no torch header: an inline torch function compiled there
// for AVX2 could otherwise be the one copy the linker keeps for the library.
#pragma once

#include <cstdint>

namespace ipguard {

enum class GapDtype : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

// One call of logit_gap_loss: rows b of the logits are at b * row_stride,
// column c of a row at c * col_stride (elements, not bytes).
struct GapRowsArgs {
  GapDtype dtype;
  const void* logits;  // [B, C] in `dtype`
  int64_t B, C, row_stride, col_stride;
  const int64_t* i;  // [B] labels, already checked: in [0, C), i != j
  const int64_t* j;
  double k;
  void* loss;  // [B] float32 (float64 for float64 logits)
  void* grad;  // [B, C] contiguous, in `dtype`
};

// Computes rows [b0, b1) of loss and grad; called from one thread per range.
using GapRowsKernel = void (*)(const GapRowsArgs& args, int64_t b0, int64_t b1);

namespace cpu_default {
void logit_gap_rows(const GapRowsArgs& args, int64_t b0, int64_t b1);  // col_stride == 1
void logit_gap_rows_strided(const GapRowsArgs& args, int64_t b0, int64_t b1);  // any strides
}  // namespace cpu_default

#ifdef IPGUARD_CPU_AVX2_KERNELS
namespace cpu_avx2 {
void logit_gap_rows(const GapRowsArgs& args, int64_t b0, int64_t b1);  // col_stride == 1
}  // namespace cpu_avx2
#endif

}  // namespace ipguard
