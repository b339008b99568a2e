// Picks the CPU kernels' instruction set once, when the library loads (see
// cpu_capability.h), and registers the op that reports it. A bad setting is a
// warning, never an exception: this runs while the library is being loaded.
#include "cpu_capability.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

namespace ipguard {
namespace cpu {
namespace {

constexpr const char* kEnvVar = "IPGUARD_FAST_CPU_CAPABILITY";

bool cpu_runs_avx2_kernels() {
#ifdef IPGUARD_CPU_AVX2_KERNELS
  __builtin_cpu_init();  // this runs from a static initialiser, maybe before libgcc's
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
  return false;  // this build has no AVX2 kernels (not x86-64)
#endif
}

Capability detect() {
  // ATEN_CPU_CAPABILITY=default (ATen's own switch) turns the AVX2 kernels off too.
  const std::string aten = at::get_cpu_capability();
  const bool aten_simd = aten.find("AVX2") != std::string::npos || aten.find("AVX512") != std::string::npos;
  return cpu_runs_avx2_kernels() && aten_simd ? Capability::kAvx2 : Capability::kDefault;
}

Capability choose() {
  const char* env = std::getenv(kEnvVar);
  if (env == nullptr || *env == '\0') return detect();
  const std::string want(env);
  if (want == "default") return Capability::kDefault;
  if (want == "avx2") {
    if (cpu_runs_avx2_kernels()) return Capability::kAvx2;
    TORCH_WARN(kEnvVar, "=avx2, but this CPU lacks AVX2 or F16C (or this build has no AVX2 "
               "kernels): using the default kernels");
    return Capability::kDefault;
  }
  TORCH_WARN("ignoring invalid value of ", kEnvVar, ": '", want,
             "' (expected 'default' or 'avx2'); choosing by the CPU's features");
  return detect();
}

const Capability kChosen = choose();  // once, at load

std::string capability_op() { return capability_name(kChosen); }

}  // namespace

Capability capability() { return kChosen; }

const char* capability_name(Capability c) { return c == Capability::kAvx2 ? "avx2" : "default"; }

}  // namespace cpu

// The op has no tensor arguments, so it dispatches to this kernel on any device.
TORCH_LIBRARY_IMPL(ipguard, CompositeExplicitAutograd, m) {
  m.impl("_cpu_capability", &cpu::capability_op);
}

}  // namespace ipguard
