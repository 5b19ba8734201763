// IoU of every pair of two sets of boxes (x0, y0, x1, y1), float32, CPU: d2_nucleus::pairwise_iou.
// Built by d2_nucleus/modeling/cpu/native.py.
//
// Detectron2's pairwise_iou builds several [N, M, 2] temporaries; matching a 512 px training crop's
// ~65,000 anchors against its hundreds of nuclei made it a fifth of a CPU training step. This
// computes each value in one pass (anchors transposed to one array a coordinate, so the loop over
// them vectorises), row by row on at::parallel_for, with Detectron2's formula and operation order
// (structures/boxes.py: width and height clamped at 0, their product, inter / (area1 + area2 -
// inter) where inter > 0, else 0); compiled without floating-point contraction, the values equal
// Detectron2's bit for bit.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

at::Tensor pairwise_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  TORCH_CHECK(boxes1.device().is_cpu() && boxes2.device().is_cpu(), "pairwise_iou: CPU tensors");
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4 && boxes2.dim() == 2 && boxes2.size(1) == 4,
              "pairwise_iou: boxes must be [N, 4] and [M, 4]");
  TORCH_CHECK(boxes1.scalar_type() == at::kFloat && boxes2.scalar_type() == at::kFloat, "pairwise_iou: float32 boxes");
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  at::Tensor out = at::empty({n, m}, boxes1.options());
  if (n == 0 || m == 0) return out;
  at::Tensor b1 = boxes1.contiguous();
  at::Tensor t2 = boxes2.t().contiguous();  // [4, M]
  const float* p1 = b1.data_ptr<float>();
  const float* x0 = t2.data_ptr<float>();
  const float* y0 = x0 + m;
  const float* x1 = y0 + m;
  const float* y1 = x1 + m;
  std::vector<float> area2(m);
  for (int64_t j = 0; j < m; j++) area2[j] = (x1[j] - x0[j]) * (y1[j] - y0[j]);
  const float* a2 = area2.data();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const float bx0 = p1[i * 4], by0 = p1[i * 4 + 1], bx1 = p1[i * 4 + 2], by1 = p1[i * 4 + 3];
      const float a1 = (bx1 - bx0) * (by1 - by0);
      float* row = o + i * m;
      for (int64_t j = 0; j < m; j++) {
        float w = std::min(bx1, x1[j]) - std::max(bx0, x0[j]);
        float h = std::min(by1, y1[j]) - std::max(by0, y0[j]);
        w = w < 0.f ? 0.f : w;
        h = h < 0.f ? 0.f : h;
        const float inter = w * h;
        row[j] = inter > 0.f ? inter / ((a1 + a2[j]) - inter) : 0.f;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(d2_nucleus, m) {
  m.def("pairwise_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}

TORCH_LIBRARY_IMPL(d2_nucleus, CPU, m) {
  m.impl("pairwise_iou", pairwise_iou);
}
