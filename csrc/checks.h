// Argument validation shared by the CPU and CUDA entry points of both ops.
//
// Every failure is a ValueError (TORCH_CHECK_VALUE) that names the argument,
// matching ipguard_fast/_checks.py, which the Python wrappers and the
// pure-PyTorch reference run. Only metadata is checked here (shapes, dtypes,
// devices, scalars): checks that read tensor values would force a host sync on
// CUDA, so label values are checked by the CPU kernel itself and guarded
// (NaN row, never an out-of-bounds read) inside the CUDA kernel. Adam's step
// counts are checked in Python only (_checks.adam_step_values, check=True): a
// negative count reads nothing out of bounds, and both kernels give the same NaN.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace ipguard {

inline void check_logit_gap_args(const at::Tensor& logits, const at::Tensor& i,
                                 const at::Tensor& j, double k) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "logits: expected a 2-D tensor [B, C], got ",
                    logits.dim(), " dimensions");
  TORCH_CHECK_VALUE(logits.size(1) >= 2, "logits: need at least 2 classes, got C = ",
                    logits.size(1));
  const auto dt = logits.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 ||
                        dt == at::kDouble,
                    "logits: expected float32, float16, bfloat16 or float64, got ", dt);
  for (const auto* t : {&i, &j}) {
    const char* name = t == &i ? "i" : "j";
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == logits.size(0), name,
                      ": expected shape [B] = [", logits.size(0), "], got ", t->sizes());
    TORCH_CHECK_VALUE(t->scalar_type() == at::kLong, name, ": expected int64, got ",
                      t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == logits.device(), name, ": on ", t->device(),
                      " but logits on ", logits.device());
  }
  TORCH_CHECK_VALUE(std::isfinite(k), "k: must be finite, got ", k);
}

inline void check_adam_args(const at::Tensor& x, const at::Tensor& grad,
                            const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                            const at::Tensor& step, const at::Tensor& active, double lr,
                            double beta1, double beta2, double eps, double lo, double hi) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected a tensor [B, ...], got a scalar");
  const auto B = x.size(0);
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat, "x: expected float32, got ",
                    x.scalar_type());
  for (const auto* t : {&grad, &exp_avg, &exp_avg_sq}) {
    const char* name = t == &grad ? "grad" : (t == &exp_avg ? "exp_avg" : "exp_avg_sq");
    TORCH_CHECK_VALUE(t->sizes() == x.sizes(), name, ": expected the shape of x ",
                      x.sizes(), ", got ", t->sizes());
    TORCH_CHECK_VALUE(t->scalar_type() == at::kFloat, name, ": expected float32, got ",
                      t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x.device(), name, ": on ", t->device(),
                      " but x on ", x.device());
  }
  // The kernel walks x, exp_avg and exp_avg_sq as one flat buffer each, sample
  // by sample, so they must be dense, share strides and keep samples contiguous.
  const bool batch_major_dense =
      x.is_contiguous() || (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
      (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d));
  TORCH_CHECK_VALUE(batch_major_dense,
                    "x: must be dense with the batch as its outermost dimension "
                    "(contiguous or channels_last)");
  TORCH_CHECK_VALUE(exp_avg.strides() == x.strides(),
                    "exp_avg: must have the strides of x (allocate it with torch.zeros_like(x))");
  TORCH_CHECK_VALUE(exp_avg_sq.strides() == x.strides(),
                    "exp_avg_sq: must have the strides of x (allocate it with torch.zeros_like(x))");
  TORCH_CHECK_VALUE(step.dim() == 1 && step.size(0) == B, "step: expected shape [B] = [",
                    B, "], got ", step.sizes());
  TORCH_CHECK_VALUE(step.scalar_type() == at::kLong || step.scalar_type() == at::kInt,
                    "step: expected int64 or int32, got ", step.scalar_type());
  TORCH_CHECK_VALUE(active.dim() == 1 && active.size(0) == B,
                    "active: expected shape [B] = [", B, "], got ", active.sizes());
  TORCH_CHECK_VALUE(active.scalar_type() == at::kBool, "active: expected bool, got ",
                    active.scalar_type());
  TORCH_CHECK_VALUE(step.device() == x.device(), "step: on ", step.device(), " but x on ",
                    x.device());
  TORCH_CHECK_VALUE(active.device() == x.device(), "active: on ", active.device(),
                    " but x on ", x.device());
  // The op writes these: an alias would make the kernels read what they just wrote.
  // x, exp_avg and exp_avg_sq are dense (checked above), so the status is exact.
  const auto share = [](const at::Tensor& a, const at::Tensor& b) {
    const auto s = at::get_overlap_status(a, b);
    return s == at::MemOverlapStatus::Full || s == at::MemOverlapStatus::Partial;
  };
  TORCH_CHECK_VALUE(!share(exp_avg, x), "exp_avg: must not share memory with x");
  TORCH_CHECK_VALUE(!share(exp_avg_sq, x), "exp_avg_sq: must not share memory with x");
  TORCH_CHECK_VALUE(!share(exp_avg_sq, exp_avg), "exp_avg_sq: must not share memory with exp_avg");
  TORCH_CHECK_VALUE(at::has_internal_overlap(step) != at::MemOverlap::Yes,
                    "step: elements share memory (an expanded tensor?); pass a tensor of its own");
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr >= 0, "lr: must be finite and >= 0, got ", lr);
  TORCH_CHECK_VALUE(beta1 >= 0 && beta1 < 1, "beta1: must be in [0, 1), got ", beta1);
  TORCH_CHECK_VALUE(beta2 >= 0 && beta2 < 1, "beta2: must be in [0, 1), got ", beta2);
  // The first step's size as the kernels compute it (adam_sample_scalars, step 1), the
  // largest of any step: inf in float32 would make a zero gradient's update inf * 0 = NaN.
  TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(lr / (1.0 - beta1))), "lr: ", lr,
                    " with beta1 = ", beta1,
                    " makes the first step's size lr / (1 - beta1) overflow float32 (the kernels' "
                    "type); need lr / (1 - beta1) <= 3.402823e+38");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "eps: must be finite and > 0, got ", eps);
  TORCH_CHECK_VALUE(static_cast<float>(eps) > 0, "eps: ", eps,
                    " is 0 in float32 (the kernels' type); need at least 1.4e-45");
  TORCH_CHECK_VALUE(!std::isnan(lo) && !std::isnan(hi) && lo <= hi,
                    "lo, hi: need lo <= hi, got lo = ", lo, ", hi = ", hi);
}

}  // namespace ipguard
