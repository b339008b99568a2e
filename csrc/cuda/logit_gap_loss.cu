// CUDA kernel of ipguard::logit_gap_loss: one warp per row. Lanes sweep the
// row, reduce the runner-up t* and the row's finiteness with warp shuffles,
// then write the gradient row. Arithmetic: csrc/boundary_math.h.
//
// Rows with unit column stride are read with 16-byte vector loads (4 float32,
// 2 float64, 8 float16/bfloat16 per lane per load), kUnroll loads in flight per
// lane before any is used; the few columns before the row's first 16-byte
// boundary and after its last are read one by one. The gradient (always
// contiguous) is written the same way, with 16-byte stores. Other strides take
// scalar loads. Every column is offered to argmax_offer whatever order a lane
// sees it in: argmax_combine breaks ties by column, so the result, t* included,
// does not depend on the split. No host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../boundary_math.h"
#include "../checks.h"

namespace ipguard {
namespace {

using namespace ipguard::math;

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;
constexpr int kUnroll = 4;  // 16-byte loads a lane issues before it uses the first

// 16 bytes of scalar_t, moved as one uint4.
template <typename scalar_t>
union Pack {
  static constexpr int kN = 16 / sizeof(scalar_t);
  uint4 raw;
  scalar_t v[kN];
  __device__ Pack() {}
};

template <typename scalar_t>
__device__ __forceinline__ Pack<scalar_t> load_pack(const scalar_t* p) {
  Pack<scalar_t> out;
  out.raw = __ldg(reinterpret_cast<const uint4*>(p));
  return out;
}

// __stwb: a plain (write-back) store, but always one 16-byte st.global.v4: a
// plain assignment lets the compiler split it where it cannot see the alignment.
template <typename scalar_t>
__device__ __forceinline__ void store_pack(scalar_t* p, const Pack<scalar_t>& pack) {
  __stwb(reinterpret_cast<uint4*>(p), pack.raw);
}

// Columns [0, head) precede the row's first 16-byte boundary, [head, head +
// kN * packs) are whole packs, the rest is the tail. Needs p % sizeof == 0.
template <typename scalar_t>
struct RowSplit {
  int64_t head, packs, tail_begin;
};

template <typename scalar_t>
__device__ __forceinline__ RowSplit<scalar_t> split_row(const scalar_t* p, int64_t C) {
  constexpr int64_t kN = Pack<scalar_t>::kN;
  const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) & 15u);
  int64_t head = misalign == 0 ? 0 : (16 - misalign) / static_cast<int64_t>(sizeof(scalar_t));
  head = head < C ? head : C;
  RowSplit<scalar_t> s;
  s.head = head;
  s.packs = (C - head) / kN;
  s.tail_begin = head + s.packs * kN;
  return s;
}

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

// kUnitStride: logits.stride(1) == 1 and the data pointer a multiple of
// sizeof(scalar_t) (so that 16-byte boundaries fall between elements).
template <typename scalar_t, bool kUnitStride>
__global__ void __launch_bounds__(kWarp * kRowsPerBlock)
    logit_gap_loss_kernel(const scalar_t* __restrict__ logits, int64_t B, int64_t C,
                          int64_t s0, int64_t s1, const int64_t* __restrict__ i_ptr,
                          const int64_t* __restrict__ j_ptr, at::opmath_type<scalar_t> k,
                          at::opmath_type<scalar_t>* __restrict__ loss,
                          scalar_t* __restrict__ grad) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kN = Pack<scalar_t>::kN;
  const int lane = threadIdx.x % kWarp;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (b >= B) return;  // whole warp leaves together: shuffles stay full-mask
  const scalar_t* row = logits + b * s0;
  const int64_t i = i_ptr[b], j = j_ptr[b];
  const bool labels_ok = labels_valid(i, j, C);

  bool finite = true;
  ArgMax<acc_t> best = argmax_empty<acc_t>();
  const auto offer = [&](scalar_t x, int64_t c) {
    const acc_t v = static_cast<acc_t>(x);
    finite = finite && is_finite(v);
    best = argmax_offer(best, v, c, i, j);
  };
  if (kUnitStride) {
    const RowSplit<scalar_t> s = split_row(row, C);
    if (lane < s.head) offer(row[lane], lane);
    for (int64_t p0 = lane; p0 < s.packs; p0 += int64_t(kWarp) * kUnroll) {
      Pack<scalar_t> packs[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = p0 + int64_t(u) * kWarp;
        if (p < s.packs) packs[u] = load_pack(row + s.head + p * kN);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = p0 + int64_t(u) * kWarp;
        if (p < s.packs) {
#pragma unroll
          for (int e = 0; e < kN; ++e) offer(packs[u].v[e], s.head + p * kN + e);
        }
      }
    }
    if (s.tail_begin + lane < C) offer(row[s.tail_begin + lane], s.tail_begin + lane);
  } else {
    for (int64_t c = lane; c < C; c += kWarp) offer(row[c * s1], c);
  }
  best = warp_argmax(best);
  finite = __all_sync(0xffffffffu, finite);

  const acc_t g_i = labels_ok ? static_cast<acc_t>(row[i * s1]) : acc_t(0);
  const acc_t g_j = labels_ok ? static_cast<acc_t>(row[j * s1]) : acc_t(0);
  const GapRow<acc_t> r = gap_row(g_i, g_j, best, k, finite && labels_ok);
  if (lane == 0) loss[b] = r.loss;

  // The gradient row: contiguous, so 16-byte stores in whatever way its own
  // alignment splits it.
  scalar_t* out = grad + b * C;
  const RowSplit<scalar_t> o = split_row(out, C);
  if (lane < o.head) out[lane] = static_cast<scalar_t>(gap_grad_at(lane, i, j, r));
  for (int64_t p = lane; p < o.packs; p += kWarp) {
    const int64_t c0 = o.head + p * kN;
    Pack<scalar_t> pack;
#pragma unroll
    for (int e = 0; e < kN; ++e) pack.v[e] = static_cast<scalar_t>(gap_grad_at(c0 + e, i, j, r));
    store_pack(out + c0, pack);
  }
  if (o.tail_begin + lane < C) {
    const int64_t c = o.tail_begin + lane;
    out[c] = static_cast<scalar_t>(gap_grad_at(c, i, j, r));
  }
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
        const scalar_t* data = logits.const_data_ptr<scalar_t>();
        const bool unit_stride = logits.stride(1) == 1 &&
                                 reinterpret_cast<uintptr_t>(data) % sizeof(scalar_t) == 0;
        auto kernel = unit_stride ? logit_gap_loss_kernel<scalar_t, true>
                                  : logit_gap_loss_kernel<scalar_t, false>;
        kernel<<<grid, block, 0, stream>>>(
            data, B, C, logits.stride(0), logits.stride(1), i_c.const_data_ptr<int64_t>(),
            j_c.const_data_ptr<int64_t>(), static_cast<acc_t>(k), loss.mutable_data_ptr<acc_t>(),
            grad.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ipguard, CUDA, m) { m.impl("logit_gap_loss", &logit_gap_loss_cuda); }

}  // namespace ipguard
