// CUDA kernel of ipguard::logit_gap_loss: one warp per row. Lanes stride over
// the row's columns (coalesced when the row is contiguous), reduce the
// runner-up t* and the row's finiteness with warp shuffles, then each lane
// writes its columns of the gradient. Arithmetic: csrc/boundary_math.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../boundary_math.h"
#include "../checks.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;

template <typename acc_t>
__device__ __forceinline__ ArgMax<acc_t> warp_argmax(ArgMax<acc_t> a) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    ArgMax<acc_t> other;
    other.value = __shfl_down_sync(0xffffffffu, a.value, offset);
    other.index = __shfl_down_sync(0xffffffffu, a.index, offset);
    a = argmax_combine(a, other);
  }
  // Lane 0 holds the result; hand it to every lane.
  a.value = __shfl_sync(0xffffffffu, a.value, 0);
  a.index = __shfl_sync(0xffffffffu, a.index, 0);
  return a;
}

template <typename scalar_t>
__global__ void logit_gap_loss_kernel(const scalar_t* __restrict__ logits, int64_t B,
                                      int64_t C, int64_t s0, int64_t s1,
                                      const int64_t* __restrict__ i_ptr,
                                      const int64_t* __restrict__ j_ptr,
                                      at::opmath_type<scalar_t> k,
                                      at::opmath_type<scalar_t>* __restrict__ loss,
                                      scalar_t* __restrict__ grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (b >= B) return;  // whole warp leaves together: shuffles stay full-mask
  const scalar_t* row = logits + b * s0;
  const int64_t i = i_ptr[b], j = j_ptr[b];
  const bool labels_ok = labels_valid(i, j, C);

  bool finite = true;
  ArgMax<acc_t> best = argmax_empty<acc_t>();
  for (int64_t c = lane; c < C; c += kWarp) {
    const acc_t v = static_cast<acc_t>(row[c * s1]);
    finite = finite && is_finite(v);
    best = argmax_offer(best, v, c, i, j);
  }
  best = warp_argmax(best);
  finite = __all_sync(0xffffffffu, finite);

  const acc_t g_i = labels_ok ? static_cast<acc_t>(row[i * s1]) : acc_t(0);
  const acc_t g_j = labels_ok ? static_cast<acc_t>(row[j * s1]) : acc_t(0);
  const GapRow<acc_t> r = gap_row(g_i, g_j, best, k, finite && labels_ok);
  if (lane == 0) loss[b] = r.loss;
  scalar_t* out = grad + b * C;
  for (int64_t c = lane; c < C; c += kWarp) out[c] = static_cast<scalar_t>(gap_grad_at(c, i, j, r));
}

std::tuple<at::Tensor, at::Tensor> logit_gap_loss_cuda(const at::Tensor& logits,
                                                       const at::Tensor& i,
                                                       const at::Tensor& j, double k) {
  check_logit_gap_args(logits, i, j, k);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto loss_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = at::empty({B}, logits.options().dtype(loss_dtype));
  at::Tensor grad = at::empty({B, C}, logits.options());
  if (B == 0) return {loss, grad};
  const auto i_c = i.contiguous(), j_c = j.contiguous();
  const dim3 block(kWarp * kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((B + kRowsPerBlock - 1) / kRowsPerBlock));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "logit_gap_loss_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        logit_gap_loss_kernel<scalar_t><<<grid, block, 0, stream>>>(
            logits.const_data_ptr<scalar_t>(), B, C, logits.stride(0), logits.stride(1),
            i_c.const_data_ptr<int64_t>(), j_c.const_data_ptr<int64_t>(),
            static_cast<acc_t>(k), loss.mutable_data_ptr<acc_t>(),
            grad.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CUDA, m) { m.impl("logit_gap_loss", &logit_gap_loss_cuda); }

}  // namespace ipguard
