// CPU kernel of ipguard::boundary_adam_step_: one fused pass over x, grad and
// the Adam moments of each active sample (torch.optim.Adam + clamp, with the
// sample's own step count). Inactive samples are skipped, so they stay
// bit-identical. Work is split over (sample, chunk) pairs for parallelism.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../boundary_math.h"
#include "../checks.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

template <typename step_t>
void adam_step_samples(float* x, const float* grad, float* m, float* v, step_t* step,
                       const bool* active, int64_t B, int64_t per_sample, double lr,
                       double beta1, double beta2, const AdamConstants& c) {
  // Advance step counts first (cheap, serial), so each chunk below can read them.
  for (int64_t b = 0; b < B; ++b) step[b] += active[b] ? 1 : 0;

  constexpr int64_t kChunk = 1 << 14;  // elements per task: large enough to vectorise
  const int64_t chunks_per_sample = (per_sample + kChunk - 1) / kChunk;
  at::parallel_for(0, B * chunks_per_sample, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks_per_sample;
      if (!active[b]) continue;
      const AdamSampleScalars s = adam_sample_scalars(step[b], lr, beta1, beta2);
      const int64_t begin = b * per_sample + (t % chunks_per_sample) * kChunk;
      const int64_t end = std::min(begin + kChunk, (b + 1) * per_sample);
      for (int64_t e = begin; e < end; ++e) adam_clamp_element(x[e], m[e], v[e], grad[e], c, s);
    }
  });
}

void boundary_adam_step_cpu(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg,
                            at::Tensor& exp_avg_sq, at::Tensor& step,
                            const at::Tensor& active, double lr, double beta1,
                            double beta2, double eps, double lo, double hi) {
  check_adam_args(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi);
  const int64_t B = x.size(0);
  if (B == 0 || x.numel() == 0) {
    if (B > 0) step.add_(active.to(step.scalar_type()));
    return;
  }
  // Read grad in x's memory layout (a copy only when its strides differ).
  const at::Tensor g = grad.strides() == x.strides() ? grad : at::empty_like(x).copy_(grad);
  const at::Tensor active_c = active.contiguous();
  at::Tensor step_c = step.contiguous();
  const AdamConstants c{static_cast<float>(1.0 - beta1), static_cast<float>(beta2),
                        static_cast<float>(1.0 - beta2), static_cast<float>(eps),
                        static_cast<float>(lo), static_cast<float>(hi)};
  const int64_t per_sample = x.numel() / B;
  if (step_c.scalar_type() == at::kLong) {
    adam_step_samples(x.mutable_data_ptr<float>(), g.const_data_ptr<float>(),
                      exp_avg.mutable_data_ptr<float>(), exp_avg_sq.mutable_data_ptr<float>(),
                      step_c.mutable_data_ptr<int64_t>(), active_c.const_data_ptr<bool>(), B,
                      per_sample, lr, beta1, beta2, c);
  } else {
    adam_step_samples(x.mutable_data_ptr<float>(), g.const_data_ptr<float>(),
                      exp_avg.mutable_data_ptr<float>(), exp_avg_sq.mutable_data_ptr<float>(),
                      step_c.mutable_data_ptr<int32_t>(), active_c.const_data_ptr<bool>(), B,
                      per_sample, lr, beta1, beta2, c);
  }
  if (!step_c.is_same(step)) step.copy_(step_c);
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CPU, m) { m.impl("boundary_adam_step_", &boundary_adam_step_cpu); }

}  // namespace ipguard
