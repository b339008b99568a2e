// CPU kernel of ipguard::logit_gap_loss: one pass over each row to find the
// runner-up t* (and whether the row is finite), one pass writing its gradient.
// Rows are independent, so they are split across threads with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../boundary_math.h"
#include "../checks.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

template <typename scalar_t>
void logit_gap_rows(const at::Tensor& logits, const int64_t* i_ptr, const int64_t* j_ptr,
                    double k, at::Tensor& loss, at::Tensor& grad) {
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
      ArgMax<acc_t> best = argmax_empty<acc_t>();
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(row[c * s1]);
        finite = finite && is_finite(v);
        best = argmax_offer(best, v, c, i, j);
      }
      const acc_t g_i = labels_ok ? static_cast<acc_t>(row[i * s1]) : acc_t(0);
      const acc_t g_j = labels_ok ? static_cast<acc_t>(row[j * s1]) : acc_t(0);
      const GapRow<acc_t> r = gap_row(g_i, g_j, best, k_acc, finite && labels_ok);
      loss_ptr[b] = r.loss;
      scalar_t* out = grad_ptr + b * C;
      for (int64_t c = 0; c < C; ++c) out[c] = scalar_t(0);
      if (r.first_active || r.second_active) {
        // Only columns i, j and t* can be non-zero.
        out[i] = static_cast<scalar_t>(gap_grad_at(i, i, j, r));
        out[j] = static_cast<scalar_t>(gap_grad_at(j, i, j, r));
        if (r.t_star >= 0) out[r.t_star] = static_cast<scalar_t>(gap_grad_at(r.t_star, i, j, r));
      }
    }
  });
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "logit_gap_loss_cpu", [&] {
                                    logit_gap_rows<scalar_t>(logits, ip, jp, k, loss, grad);
                                  });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CPU, m) { m.impl("logit_gap_loss", &logit_gap_loss_cpu); }

}  // namespace ipguard
