// CPU kernel of ipguard::logit_gap_loss. Rows are independent, so they are
// split across threads with at::parallel_for. Two paths, equal bit for bit:
//
//  - unit column stride (contiguous rows, or a row-padded view): vectorised
//    row reductions, logit_gap_rows.h, built here with the baseline flags
//    (cpu_default) and in logit_gap_loss_avx2.cpp for AVX2 (cpu_avx2); the
//    AVX2 build runs where the CPU and ATen's CPU capability allow it.
//  - any other strides (transposed, every other column...): the scalar fold of
//    argmax_offer over each row, below.
//
// The per-row arithmetic (loss, gradient coefficients) is csrc/boundary_math.h,
// shared with the CUDA kernel; only the reductions over a row live here.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <string>

#include "../boundary_math.h"
#include "../checks.h"
#include "logit_gap_kernels.h"

#define IPGUARD_CPU_KERNEL_NS cpu_default
#include "logit_gap_rows.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

// Any strides.
template <typename scalar_t>
void logit_gap_rows_strided(const at::Tensor& logits, const int64_t* i_ptr,
                            const int64_t* j_ptr, double k, at::Tensor& loss,
                            at::Tensor& grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = logits.size(0), C = logits.size(1);
  const int64_t s0 = logits.stride(0), s1 = logits.stride(1);
  const scalar_t* g = logits.const_data_ptr<scalar_t>();
  acc_t* loss_ptr = loss.mutable_data_ptr<acc_t>();
  scalar_t* grad_ptr = grad.mutable_data_ptr<scalar_t>();
  const acc_t k_acc = static_cast<acc_t>(k);

  at::parallel_for(0, B, /*grain_size=*/std::max<int64_t>(1, 16384 / C), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* row = g + b * s0;
      const int64_t i = i_ptr[b], j = j_ptr[b];
      // Labels were checked before the launch; re-guard so no read is out of bounds.
      const bool labels_ok = labels_valid(i, j, C);
      bool finite = true;
      const ArgMax<acc_t> best = runner_up_fold(row, C, s1, i, j, finite);
      const acc_t g_i = labels_ok ? static_cast<acc_t>(row[i * s1]) : acc_t(0);
      const acc_t g_j = labels_ok ? static_cast<acc_t>(row[j * s1]) : acc_t(0);
      const GapRow<acc_t> r = gap_row(g_i, g_j, best, k_acc, finite && labels_ok);
      loss_ptr[b] = r.loss;
      write_grad_row(grad_ptr + b * C, C, i, j, r);
    }
  });
}

// Whether the AVX2 build of the unit-stride kernel may run: the CPU has AVX2,
// FMA and F16C, and ATen's own kernels run at AVX2 or above (so
// ATEN_CPU_CAPABILITY=default turns it off here as well). Decided once.
bool use_avx2_kernels() {
#if IPGUARD_CPU_AVX2_KERNELS
  static const bool use = [] {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
          __builtin_cpu_supports("f16c"))) {
      return false;
    }
    const std::string aten = at::get_cpu_capability();
    return aten.find("AVX2") != std::string::npos || aten.find("AVX512") != std::string::npos;
  }();
  return use;
#else
  return false;
#endif
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
  if (logits.stride(1) == 1) {
#if IPGUARD_CPU_AVX2_KERNELS
    if (use_avx2_kernels()) {
      cpu_avx2::logit_gap_loss_unit_stride(logits, ip, jp, k, loss, grad);
      return {loss, grad};
    }
#endif
    cpu_default::logit_gap_loss_unit_stride(logits, ip, jp, k, loss, grad);
    return {loss, grad};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "logit_gap_loss_cpu", [&] {
                                    logit_gap_rows_strided<scalar_t>(logits, ip, jp, k, loss, grad);
                                  });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CPU, m) { m.impl("logit_gap_loss", &logit_gap_loss_cpu); }

}  // namespace ipguard
