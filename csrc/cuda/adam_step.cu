// CUDA kernel of ipguard::boundary_adam_step_. Two launches on the current
// stream, no host synchronisation (capturable in a CUDA graph):
//   1. advance step[b] for active samples;
//   2. one fused pass over x, grad, exp_avg, exp_avg_sq: each block owns one
//      chunk of one sample, reads that sample's step and active flag once, and
//      leaves an inactive sample untouched. 16-byte vector accesses when every
//      buffer is aligned and the sample size is a multiple of 4.
// Arithmetic: csrc/boundary_math.h.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../boundary_math.h"
#include "../checks.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

constexpr int kThreads = 256;
constexpr int kVecPerThread = 4;  // float4s per thread per block chunk
constexpr int64_t kChunk = int64_t(kThreads) * kVecPerThread * 4;  // floats per block

template <typename step_t>
__global__ void advance_step_kernel(step_t* step, const bool* active, int64_t B) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < B && active[b]) step[b] += 1;
}

template <typename step_t, bool kVector>
__global__ void __launch_bounds__(kThreads)
    adam_step_kernel(float* __restrict__ x, const float* __restrict__ grad,
                     float* __restrict__ m, float* __restrict__ v,
                     const step_t* __restrict__ step, const bool* __restrict__ active,
                     int64_t per_sample, int64_t chunks_per_sample, double lr, double beta1,
                     double beta2, AdamConstants c) {
  const int64_t b = blockIdx.x / chunks_per_sample;
  if (!active[b]) return;
  const AdamSampleScalars s = adam_sample_scalars(static_cast<int64_t>(step[b]), lr, beta1, beta2);
  const int64_t begin = b * per_sample + (blockIdx.x % chunks_per_sample) * kChunk;
  const int64_t end = min(begin + kChunk, (b + 1) * per_sample);
  if (kVector) {
    // begin and end are multiples of 4 here (per_sample % 4 == 0, kChunk % 4 == 0).
    for (int64_t e = begin + 4 * threadIdx.x; e < end; e += 4 * kThreads) {
      float4 xv = *reinterpret_cast<const float4*>(x + e);
      const float4 gv = *reinterpret_cast<const float4*>(grad + e);
      float4 mv = *reinterpret_cast<const float4*>(m + e);
      float4 vv = *reinterpret_cast<const float4*>(v + e);
      adam_clamp_element(xv.x, mv.x, vv.x, gv.x, c, s);
      adam_clamp_element(xv.y, mv.y, vv.y, gv.y, c, s);
      adam_clamp_element(xv.z, mv.z, vv.z, gv.z, c, s);
      adam_clamp_element(xv.w, mv.w, vv.w, gv.w, c, s);
      *reinterpret_cast<float4*>(x + e) = xv;
      *reinterpret_cast<float4*>(m + e) = mv;
      *reinterpret_cast<float4*>(v + e) = vv;
    }
  } else {
    for (int64_t e = begin + threadIdx.x; e < end; e += kThreads) {
      adam_clamp_element(x[e], m[e], v[e], grad[e], c, s);
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename step_t>
void launch_adam(at::Tensor& x, const at::Tensor& g, at::Tensor& m, at::Tensor& v,
                 at::Tensor& step, const at::Tensor& active, double lr, double beta1,
                 double beta2, const AdamConstants& c) {
  const int64_t B = x.size(0);
  const int64_t per_sample = x.numel() / B;
  auto stream = at::cuda::getCurrentCUDAStream();
  step_t* step_ptr = step.mutable_data_ptr<step_t>();
  const bool* active_ptr = active.const_data_ptr<bool>();
  advance_step_kernel<step_t><<<(B + 255) / 256, 256, 0, stream>>>(step_ptr, active_ptr, B);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (per_sample == 0) return;
  const int64_t chunks_per_sample = (per_sample + kChunk - 1) / kChunk;
  const int64_t blocks = B * chunks_per_sample;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "boundary_adam_step_: tensor too large");
  float* xp = x.mutable_data_ptr<float>();
  const float* gp = g.const_data_ptr<float>();
  float* mp = m.mutable_data_ptr<float>();
  float* vp = v.mutable_data_ptr<float>();
  const bool vector = per_sample % 4 == 0 && aligned16(xp) && aligned16(gp) &&
                      aligned16(mp) && aligned16(vp);
  auto kernel = vector ? adam_step_kernel<step_t, true> : adam_step_kernel<step_t, false>;
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      xp, gp, mp, vp, step_ptr, active_ptr, per_sample, chunks_per_sample, lr, beta1, beta2, c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void boundary_adam_step_cuda(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg,
                             at::Tensor& exp_avg_sq, at::Tensor& step,
                             const at::Tensor& active, double lr, double beta1,
                             double beta2, double eps, double lo, double hi) {
  check_adam_args(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi);
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.size(0) == 0) return;
  // A strided step (a view) is counted in a contiguous copy and written back, as on the CPU.
  at::Tensor step_c = step.contiguous();
  const at::Tensor g = grad.strides() == x.strides() ? grad : at::empty_like(x).copy_(grad);
  const at::Tensor active_c = active.contiguous();
  const AdamConstants c{static_cast<float>(1.0 - beta1), static_cast<float>(beta2),
                        static_cast<float>(1.0 - beta2), static_cast<float>(eps),
                        static_cast<float>(lo), static_cast<float>(hi)};
  if (step.scalar_type() == at::kLong) {
    launch_adam<int64_t>(x, g, exp_avg, exp_avg_sq, step_c, active_c, lr, beta1, beta2, c);
  } else {
    launch_adam<int32_t>(x, g, exp_avg, exp_avg_sq, step_c, active_c, lr, beta1, beta2, c);
  }
  if (!step_c.is_same(step)) step.copy_(step_c);
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CUDA, m) {
  m.impl("boundary_adam_step_", &boundary_adam_step_cuda);
}

}  // namespace ipguard
