// The cwarp operator library: every schema, in one place, and the Python
// module that loading cwarp._C needs. Backends register their kernels with
// TORCH_LIBRARY_IMPL next to the kernels (csrc/ops/<op>/<op>_cpu.cpp, <op>_cuda.cu); fake kernels
// and autograd are registered in cwarp/ops/*/register.py.
#include <Python.h>
#include <torch/library.h>

// `import cwarp._C` loads this shared library, which runs the static
// registrations below. The module has one attribute of its own: whether the
// CUDA kernels were compiled in.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cwarp's compiled kernels (torch.ops.cwarp)", -1, nullptr,
  };
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef CWARP_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddObject(m, "WITH_CUDA", PyBool_FromLong(with_cuda)) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

TORCH_LIBRARY(cwarp, m) {
  // out = bilinear sample of image at theta @ (p - sum_k w_k(p) d_k); see docs/api.md.
  m.def(
      "local_warp(Tensor image, Tensor params, Tensor? theta, int out_h, int out_w, str kind, "
      "str padding_mode, bool align_corners) -> Tensor");
  // Gradients for (image, params, theta) where output_mask asks; the others
  // come back empty (numel 0), as does theta's when theta is None.
  m.def(
      "local_warp_backward(Tensor grad_out, Tensor image, Tensor params, Tensor? theta, str kind, "
      "str padding_mode, bool align_corners, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Per-row values of the contrastive loss (docs/api.md): nce (B), s_pos (B),
  // and what the backward needs: the inverse row norms of p (B), z_pos (B)
  // and z_neg (B, N; (B, 0) when None) and the per-row logsumexp (B). All in
  // the compute dtype (float32 for half types). Weights and reduction are
  // applied in Python on these (B,) tensors.
  m.def(
      "contrastive_loss_forward(Tensor p, Tensor z_pos, Tensor? z_neg, float tau, bool in_batch) "
      "-> (Tensor nce, Tensor s_pos, Tensor inv_p, Tensor inv_z_pos, Tensor inv_z_neg, Tensor lse)");
  // Gradients for (p, z_pos, z_neg) from dL/dnce and dL/ds_pos, where
  // output_mask asks; the others come back empty (numel 0).
  m.def(
      "contrastive_loss_backward(Tensor grad_nce, Tensor grad_s_pos, Tensor p, Tensor z_pos, "
      "Tensor? z_neg, Tensor inv_p, Tensor inv_z_pos, Tensor inv_z_neg, Tensor lse, float tau, "
      "bool in_batch, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Where source points (B, P, 2) land in local_warp's output for the same
  // params, theta and kind: the pre-image of the sampling map nearest theta^-1
  // of the point (docs/api.md); NaN where there is none. Computed in float64,
  // returned in the points' dtype. A CPU kernel only: the points are few, and
  // cwarp.warp_points copies CUDA points to it.
  m.def("warp_points(Tensor points, Tensor params, Tensor? theta, str kind) -> Tensor");
  // Every view of a batch in one pass (docs/api.md): per output pixel of view v
  // of image b, the local warps warps[b, v] then the affine theta[b, v] (as in
  // local_warp), bilinear sampling of the uint8 / float32 source, the colour
  // ops of color[b, v] = (brightness, contrast, saturation, hue, grayscale),
  // then (x - mean) / std. Contrast blends with the source's mean gray value
  // (times the brightness factor), from a pre-pass inside the op.
  // Returns (B, V, C, size, size) of out_dtype.
  m.def(
      "augment_views(Tensor src, Tensor theta, Tensor warps, Tensor color, Tensor mean, Tensor std, int size, "
      "str kind, str padding_mode, ScalarType out_dtype) -> Tensor");
}
