// Op schemas for the `ipguard` namespace. Kernels register per device in
// cpu/*.cpp and cuda/*.cu; fake (meta) kernels and autograd are registered
// from Python (ipguard_fast/ops.py), next to the pure-PyTorch reference.
#include <torch/library.h>

#ifdef IPGUARD_PYTHON_MODULE
#include <Python.h>
// Lets setuptools build this library as the Python module ipguard_fast._C;
// it is loaded with torch.ops.load_library, so the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif

TORCH_LIBRARY(ipguard, m) {
  // -> (loss [B] float32 (float64 for float64 logits), grad_logits [B, C] in the
  // logits' dtype). See csrc/boundary_math.h for the math.
  m.def("logit_gap_loss(Tensor logits, Tensor i, Tensor j, float k) -> (Tensor, Tensor)");
  // In place on x, exp_avg, exp_avg_sq and step; samples with active[b] false
  // are left untouched. No host synchronisation: CUDA-graph capturable.
  m.def(
      "boundary_adam_step_(Tensor(a!) x, Tensor grad, Tensor(b!) exp_avg, "
      "Tensor(c!) exp_avg_sq, Tensor(d!) step, Tensor active, float lr, float beta1, "
      "float beta2, float eps, float lo, float hi) -> ()");
  // Which build of the CPU loss kernels runs: "default" or "avx2" (cpu/cpu_capability.h).
  m.def("_cpu_capability() -> str");
}
