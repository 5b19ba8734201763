// GroupNorm (+ ReLU) of a batch of small channels-last CPU maps, inference only:
// d2_nucleus::group_norm_nhwc. Built by d2_nucleus/modeling/native.py.
//
// The RoI heads normalise hundreds of RoIs of 7 x 7 or 14 x 14 pixels at a time. PyTorch's
// channels-last GroupNorm kernel is slow on such batches and its NCHW kernel needs a layout copy
// each way (modeling/group_norm.py), and the ReLU after it is one more pass over the batch. Here
// each RoI (one task of at::parallel_for) is read twice and written once: per-channel sums and
// sums of squares over its pixels (contiguous channels: a vectorised loop), combined into the
// group statistics, then y = max(0, x * a[c] + b[c]) with a = rstd * weight, b = bias - mean * a.
// Statistics are float32 (double for the final combination), as PyTorch's kernels compute them for
// float32 and bfloat16 input; results equal PyTorch's up to summation order.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "bf16.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using d2_nucleus::load;
using d2_nucleus::store;

template <typename T>
void group_norm_nhwc_impl(const at::Tensor& x, int64_t groups, const float* weight, const float* bias,
                          double eps, bool relu, at::Tensor& y) {
  const int64_t n = x.size(0), channels = x.size(1), hw = x.size(2) * x.size(3);
  const int64_t per_group = channels / groups;
  const T* xd = x.data_ptr<T>();
  T* yd = y.data_ptr<T>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(channels), sq(channels), a(channels), b(channels);
    for (int64_t i = begin; i < end; i++) {
      const T* xi = xd + i * hw * channels;
      T* yi = yd + i * hw * channels;
      std::fill(sum.begin(), sum.end(), 0.f);
      std::fill(sq.begin(), sq.end(), 0.f);
      float* s = sum.data();
      float* q = sq.data();
      for (int64_t p = 0; p < hw; p++) {
        const T* row = xi + p * channels;
        for (int64_t c = 0; c < channels; c++) {
          const float v = load(row + c);
          s[c] += v;
          q[c] += v * v;
        }
      }
      for (int64_t g = 0; g < groups; g++) {
        double gs = 0, gq = 0;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
          gs += s[c];
          gq += q[c];
        }
        const double count = (double)hw * per_group;
        const double mean = gs / count;
        const double var = std::max(gq / count - mean * mean, 0.0);
        const double rstd = 1.0 / std::sqrt(var + eps);
        for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
          const double w = weight ? weight[c] : 1.0;
          const double bb = bias ? bias[c] : 0.0;
          a[c] = (float)(rstd * w);
          b[c] = (float)(bb - mean * rstd * w);
        }
      }
      const float* av = a.data();
      const float* bv = b.data();
      for (int64_t p = 0; p < hw; p++) {
        const T* row = xi + p * channels;
        T* out = yi + p * channels;
        if (relu) {
          for (int64_t c = 0; c < channels; c++) {
            const float v = load(row + c) * av[c] + bv[c];
            store(out + c, v < 0.f ? 0.f : v);  // ReLU; NaN stays NaN
          }
        } else {
          for (int64_t c = 0; c < channels; c++) store(out + c, load(row + c) * av[c] + bv[c]);
        }
      }
    }
  });
}

at::Tensor group_norm_nhwc(const at::Tensor& x, int64_t groups, const c10::optional<at::Tensor>& weight,
                           const c10::optional<at::Tensor>& bias, double eps, bool relu) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, "group_norm_nhwc: a CPU [N, C, H, W] tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "group_norm_nhwc: channels-last input");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "group_norm_nhwc: float32 or bfloat16 input");
  TORCH_CHECK(groups > 0 && x.size(1) % groups == 0, "group_norm_nhwc: channels must divide into groups");
  at::Tensor w, b;
  if (weight.has_value() && weight->defined()) {
    w = weight->to(at::kFloat).contiguous();
    TORCH_CHECK(w.numel() == x.size(1), "group_norm_nhwc: one weight a channel");
  }
  if (bias.has_value() && bias->defined()) {
    b = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(b.numel() == x.size(1), "group_norm_nhwc: one bias a channel");
  }
  at::Tensor y = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
  if (x.numel() == 0) return y;
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  if (x.scalar_type() == at::kFloat) {
    group_norm_nhwc_impl<float>(x, groups, wp, bp, eps, relu, y);
  } else {
    group_norm_nhwc_impl<c10::BFloat16>(x, groups, wp, bp, eps, relu, y);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(d2_nucleus, m) {
  m.def("group_norm_nhwc(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps, bool relu) -> Tensor");
}

TORCH_LIBRARY_IMPL(d2_nucleus, CPU, m) {
  m.impl("group_norm_nhwc", group_norm_nhwc);
}
