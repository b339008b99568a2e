// Which build of the CPU row kernels this process runs (logit_gap_kernels.h),
// decided once when the library loads, from the CPU's features and the
// environment variable IPGUARD_FAST_CPU_CAPABILITY (after ATen's
// ATEN_CPU_CAPABILITY):
//
//   unset    avx2 where the CPU has AVX2 and F16C (and this build has the AVX2
//            kernels) and ATen itself runs at AVX2 or above, else default;
//   default  the baseline build, on any CPU (for tests and A/B runs);
//   avx2     the AVX2 build; on a CPU without it, a warning and default.
//
// Any other value: a warning naming the variable, and it is ignored. The choice
// is readable as torch.ops.ipguard._cpu_capability() ("default" or "avx2").
#pragma once

namespace ipguard {
namespace cpu {

enum class Capability { kDefault, kAvx2 };

Capability capability();

const char* capability_name(Capability c);

}  // namespace cpu
}  // namespace ipguard
