// CPU kernel of ipguard::logit_gap_loss: checks the arguments, allocates the
// outputs and splits the rows across threads (at::parallel_for; rows are
// independent). The rows themselves are computed by one of the builds of
// logit_gap_kernels.h, equal bit for bit:
//
//  - unit column stride (contiguous rows, or a row-padded view): the vectorised
//    row kernel, in its AVX2 build where cpu_capability.h says so, else in its
//    baseline build;
//  - any other strides (transposed, every other column...): the scalar fold.
//
// The per-row arithmetic (loss, gradient coefficients) is csrc/boundary_math.h,
// shared with the CUDA kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "cpu_capability.h"
#include "logit_gap_kernels.h"

namespace ipguard {
namespace {

GapDtype gap_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return GapDtype::kFloat64;
    case at::kHalf: return GapDtype::kFloat16;
    case at::kBFloat16: return GapDtype::kBFloat16;
    default: return GapDtype::kFloat32;  // check_logit_gap_args allows no other dtype
  }
}

// The row kernel for these logits: strided, or unit stride in the chosen build.
GapRowsKernel rows_kernel(const at::Tensor& logits) {
  if (logits.stride(1) != 1) return &cpu_default::logit_gap_rows_strided;
#ifdef IPGUARD_CPU_AVX2_KERNELS
  if (cpu::capability() == cpu::Capability::kAvx2) return &cpu_avx2::logit_gap_rows;
#endif
  return &cpu_default::logit_gap_rows;
}

std::tuple<at::Tensor, at::Tensor> logit_gap_loss_cpu(const at::Tensor& logits,
                                                      const at::Tensor& i,
                                                      const at::Tensor& j, double k) {
  check_logit_gap_args(logits, i, j, k);
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto i_c = i.contiguous(), j_c = j.contiguous();
  const int64_t* ip = i_c.const_data_ptr<int64_t>();
  const int64_t* jp = j_c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(ip[b] >= 0 && ip[b] < C, "i: label ", ip[b], " at row ", b,
                      " is outside [0, ", C, ")");
    TORCH_CHECK_VALUE(jp[b] >= 0 && jp[b] < C, "j: label ", jp[b], " at row ", b,
                      " is outside [0, ", C, ")");
    TORCH_CHECK_VALUE(ip[b] != jp[b], "i, j: i == j == ", ip[b], " at row ", b);
  }
  const auto loss_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = at::empty({B}, logits.options().dtype(loss_dtype));
  at::Tensor grad = at::empty({B, C}, logits.options());
  if (B == 0) return {loss, grad};
  const GapRowsArgs args{gap_dtype(logits.scalar_type()), logits.const_data_ptr(), B, C,
                         logits.stride(0), logits.stride(1), ip, jp, k,
                         loss.mutable_data_ptr(), grad.mutable_data_ptr()};
  const GapRowsKernel kernel = rows_kernel(logits);
  at::parallel_for(0, B, /*grain_size=*/std::max<int64_t>(1, 16384 / C),
                   [&](int64_t b0, int64_t b1) { kernel(args, b0, b1); });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CPU, m) { m.impl("logit_gap_loss", &logit_gap_loss_cpu); }

}  // namespace ipguard
