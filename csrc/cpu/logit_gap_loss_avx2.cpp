// The unit-stride logit_gap_loss kernel (logit_gap_rows.h) built for AVX2 +
// FMA + F16C, so that at::vec::Vectorized is 256-bit SIMD code rather than its
// scalar fallback. setup.py compiles every source with one set of flags, so
// the instruction set is raised here with `#pragma GCC target`, and
// logit_gap_loss.cpp calls this build only on CPUs that have it (see
// logit_gap_kernels.h).
//
// Only code first defined after the pragma is compiled for AVX2. Every header
// that the vector headers pull in and that other sources of the library also
// include (ATen, c10, the standard library) is therefore included *before* the
// pragma, for the baseline target: an inline function compiled for AVX2 here
// could otherwise be the one copy the linker keeps for the whole library. What
// is defined after the pragma is ATen's vector code, in its own inline
// namespace at::vec::AVX2 (CPU_CAPABILITY, as ATen's own AVX2 kernels), and
// this file's kernels, in an anonymous namespace and ipguard::cpu_avx2.
#include "logit_gap_kernels.h"

#if IPGUARD_CPU_AVX2_KERNELS

// 1. Baseline target: everything that is not ATen's vector code.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <ATen/native/quantized/AffineQuantizerBase.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/MathConstants.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../boundary_math.h"

// 2. AVX2: ATen's vector headers and the kernels.
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
// g++ does not define the target macros after the pragma (the C++ front end
// reads pragmas late), and sleef.h, which ATen's AVX2 vectors include, declares
// its 256-bit functions only under __AVX__. Nothing else reads them here: the
// compiler's intrinsics headers declare every instruction set regardless.
#define __AVX__ 1
#define __AVX2__ 1

#define IPGUARD_CPU_KERNEL_NS cpu_avx2
#include "logit_gap_rows.h"

#undef __AVX__
#undef __AVX2__
#pragma GCC pop_options

#endif  // IPGUARD_CPU_AVX2_KERNELS
