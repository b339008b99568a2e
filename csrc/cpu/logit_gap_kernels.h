// CPU kernels of ipguard::logit_gap_loss for rows with unit column stride,
// built once per instruction set and picked at run time:
//
//   cpu_default: logit_gap_loss.cpp, the compiler's baseline flags.
//   cpu_avx2:    logit_gap_loss_avx2.cpp, AVX2 + FMA + F16C (x86-64, GCC), used
//                when the CPU has them and ATen's own CPU capability
//                (ATEN_CPU_CAPABILITY, torch.backends.cpu.get_cpu_capability())
//                is AVX2 or AVX512, so ATEN_CPU_CAPABILITY=default forces the
//                baseline build here too.
//
// Both compile the same source, logit_gap_rows.h. at::vec::Vectorized only
// emits SIMD code under a CPU_CAPABILITY_* macro and the matching compiler
// flags; built with the extension's plain flags it is a scalar loop over an
// array, which is why the AVX2 build exists.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IPGUARD_CPU_AVX2_KERNELS 1
#else
#define IPGUARD_CPU_AVX2_KERNELS 0
#endif

namespace ipguard {

// loss [B] and grad [B, C] (contiguous) from logits [B, C] with stride(1) == 1;
// labels i, j already validated. Results equal the strided path's bit for bit.
#define IPGUARD_DECLARE_UNIT_STRIDE_KERNEL                                             \
  void logit_gap_loss_unit_stride(const at::Tensor& logits, const int64_t* i_ptr,     \
                                  const int64_t* j_ptr, double k, at::Tensor& loss,   \
                                  at::Tensor& grad);

namespace cpu_default {
IPGUARD_DECLARE_UNIT_STRIDE_KERNEL
}  // namespace cpu_default

#if IPGUARD_CPU_AVX2_KERNELS
namespace cpu_avx2 {
IPGUARD_DECLARE_UNIT_STRIDE_KERNEL
}  // namespace cpu_avx2
#endif

#undef IPGUARD_DECLARE_UNIT_STRIDE_KERNEL

}  // namespace ipguard
