// GroupNorm (+ ReLU) of channels-last CPU maps, and its gradient: d2_nucleus::group_norm_nhwc,
// d2_nucleus::group_norm_nhwc_train, d2_nucleus::group_norm_nhwc_backward. Built by
// d2_nucleus/modeling/cpu/native.py.
//
// PyTorch's channels-last GroupNorm is slow on the RoI heads' batches (hundreds of 7 x 7 or
// 14 x 14 RoIs; its NCHW kernel needs a layout copy each way: modeling/group_norm.py) and its
// channels-last backward is slow on whole feature maps (~40 ms for a [1, 128, 256, 256] bf16 map
// whose forward takes 2 ms, on 2 cores), and the ReLU after the norm is one more pass. Here each
// sample's pixels are split into chunks (one chunk a sample when there are enough samples for the
// threads); a task sums its chunk per channel (contiguous channels: vectorised loops), the
// chunks' sums are combined per sample and group in a fixed order (double precision), and a second
// pass writes y = max(0, x * a[c] + b[c]) with a = rstd * weight, b = bias - mean * a.
// The backward is PyTorch's formula (aten/src/ATen/native/cpu/group_norm_kernel.cpp): with the
// per-channel sums ds = sum(dy * x), db = sum(dy) (dy masked by y > 0 after a fused ReLU),
// dx = rstd * weight * dy + c2 * x + c3 per group, dweight = sum_n (ds - db * mean) * rstd,
// dbias = sum_n db. Values equal PyTorch's up to summation order.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "bf16.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

using d2_nucleus::load;
using d2_nucleus::store;

// pixels of one sample a task: all of them when the samples alone keep every thread busy
int64_t chunks_per_sample(int64_t n, int64_t hw) {
  const int64_t threads = std::max<int64_t>(at::get_num_threads(), 1);
  if (n >= 4 * threads) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(hw / 64, (4 * threads + n - 1) / n));
}

// each sample's pixels in chunks_per_sample chunks, one task a chunk: fn(task, sample, p0, p1)
template <typename F>
void for_chunks(int64_t n, int64_t hw, int64_t k, F fn) {
  const int64_t per = (hw + k - 1) / k;
  at::parallel_for(0, n * k, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t i = t / k, p0 = (t % k) * per;
      fn(t, i, p0, std::min(hw, p0 + per));
    }
  });
}

// per (sample, channel): two sums over the sample's pixels, fn(sample, pixel, s, q) adding to
// s[C] and q[C] -> out[n][2C]
template <typename F>
void channel_sums(int64_t n, int64_t hw, int64_t channels, F fn, std::vector<double>& out) {
  const int64_t k = chunks_per_sample(n, hw);
  std::vector<float> partial(n * k * 2 * channels, 0.f);
  for_chunks(n, hw, k, [&](int64_t t, int64_t i, int64_t p0, int64_t p1) {
    float* s = partial.data() + t * 2 * channels;
    for (int64_t p = p0; p < p1; p++) fn(i, p, s, s + channels);
  });
  out.assign(n * 2 * channels, 0.0);
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < k; j++) {
      const float* s = partial.data() + (i * k + j) * 2 * channels;
      double* o = out.data() + i * 2 * channels;
      for (int64_t c = 0; c < 2 * channels; c++) o[c] += s[c];
    }
  }
}

// pass over every (sample, pixel) on the threads: fn(sample, pixel)
template <typename F>
void for_pixels(int64_t n, int64_t hw, F fn) {
  for_chunks(n, hw, chunks_per_sample(n, hw), [&](int64_t, int64_t i, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) fn(i, p);
  });
}

template <typename T>
void forward_impl(const at::Tensor& x, int64_t groups, const float* weight, const float* bias, double eps,
                  bool relu, at::Tensor& y, float* mean_out, float* rstd_out) {
  const int64_t n = x.size(0), channels = x.size(1), hw = x.size(2) * x.size(3);
  const int64_t per_group = channels / groups;
  const T* xd = x.data_ptr<T>();
  T* yd = y.data_ptr<T>();
  std::vector<double> sums;
  channel_sums(n, hw, channels, [&](int64_t i, int64_t p, float* s, float* q) {
    const T* row = xd + (i * hw + p) * channels;
    for (int64_t c = 0; c < channels; c++) {
      const float v = load(row + c);
      s[c] += v;
      q[c] += v * v;
    }
  }, sums);
  std::vector<float> a(n * channels), b(n * channels);
  for (int64_t i = 0; i < n; i++) {
    const double* s = sums.data() + i * 2 * channels;
    const double* q = s + channels;
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
      mean_out[i * groups + g] = (float)mean;
      rstd_out[i * groups + g] = (float)rstd;
      for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
        const double w = weight ? weight[c] : 1.0;
        const double bb = bias ? bias[c] : 0.0;
        a[i * channels + c] = (float)(rstd * w);
        b[i * channels + c] = (float)(bb - mean * rstd * w);
      }
    }
  }
  for_pixels(n, hw, [&](int64_t i, int64_t p) {
    const T* row = xd + (i * hw + p) * channels;
    T* out = yd + (i * hw + p) * channels;
    const float* av = a.data() + i * channels;
    const float* bv = b.data() + i * channels;
    if (relu) {
      for (int64_t c = 0; c < channels; c++) {
        const float v = load(row + c) * av[c] + bv[c];
        store(out + c, v < 0.f ? 0.f : v);  // ReLU; NaN stays NaN
      }
    } else {
      for (int64_t c = 0; c < channels; c++) store(out + c, load(row + c) * av[c] + bv[c]);
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& y, const float* mean,
                   const float* rstd, const float* weight, int64_t groups, bool relu, at::Tensor& dx,
                   float* dweight, float* dbias) {
  const int64_t n = x.size(0), channels = x.size(1), hw = x.size(2) * x.size(3);
  const int64_t per_group = channels / groups;
  const T* dyd = dy.data_ptr<T>();
  const T* xd = x.data_ptr<T>();
  const T* yd = relu ? y.data_ptr<T>() : nullptr;
  T* dxd = dx.data_ptr<T>();
  // dy through the fused ReLU: zero where y <= 0
  auto grad_at = [&](int64_t off) -> float {
    const float g = load(dyd + off);
    if (!relu) return g;
    return load(yd + off) > 0.f ? g : 0.f;
  };
  std::vector<double> sums;  // [n][ds (C), db (C)]
  channel_sums(n, hw, channels, [&](int64_t i, int64_t p, float* ds, float* db) {
    const int64_t off = (i * hw + p) * channels;
    for (int64_t c = 0; c < channels; c++) {
      const float g = grad_at(off + c);
      ds[c] += g * load(xd + off + c);
      db[c] += g;
    }
  }, sums);
  // per (sample, channel): dx = c1 * dy + c2 * x + c3 (c2, c3 repeated over a group's channels)
  std::vector<float> c1(n * channels), c2(n * channels), c3(n * channels);
  const double s = 1.0 / ((double)per_group * hw);
  for (int64_t i = 0; i < n; i++) {
    const double* ds = sums.data() + i * 2 * channels;
    const double* db = ds + channels;
    for (int64_t g = 0; g < groups; g++) {
      const double m = mean[i * groups + g], r = rstd[i * groups + g];
      double ds_g = 0, db_g = 0;
      for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
        const double w = weight ? weight[c] : 1.0;
        ds_g += ds[c] * w;
        db_g += db[c] * w;
        c1[i * channels + c] = (float)(r * w);
      }
      const double k2 = (db_g * m - ds_g) * r * r * r * s;
      const double k3 = -k2 * m - db_g * r * s;
      for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
        c2[i * channels + c] = (float)k2;
        c3[i * channels + c] = (float)k3;
      }
    }
  }
  for_pixels(n, hw, [&](int64_t i, int64_t p) {
    const int64_t off = (i * hw + p) * channels;
    const float* a = c1.data() + i * channels;
    const float* b = c2.data() + i * channels;
    const float* c = c3.data() + i * channels;
    for (int64_t ch = 0; ch < channels; ch++) {
      store(dxd + off + ch, a[ch] * grad_at(off + ch) + b[ch] * load(xd + off + ch) + c[ch]);
    }
  });
  for (int64_t c = 0; c < channels; c++) {
    const int64_t g = c / per_group;
    double dw = 0, dbb = 0;
    for (int64_t i = 0; i < n; i++) {
      const double* ds = sums.data() + i * 2 * channels;
      dw += (ds[c] - ds[channels + c] * mean[i * groups + g]) * rstd[i * groups + g];
      dbb += ds[channels + c];
    }
    dweight[c] = (float)dw;
    dbias[c] = (float)dbb;
  }
}

void check_input(const at::Tensor& x, int64_t groups, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, what, ": a CPU [N, C, H, W] tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), what, ": channels-last input");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, what,
              ": float32 or bfloat16 input");
  TORCH_CHECK(groups > 0 && x.size(1) % groups == 0, what, ": channels must divide into groups");
}

at::Tensor per_channel(const c10::optional<at::Tensor>& t, int64_t channels, const char* what) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  at::Tensor f = t->to(at::kFloat).contiguous();
  TORCH_CHECK(f.numel() == channels, what, ": one value a channel");
  return f;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_nhwc_train(
    const at::Tensor& x, int64_t groups, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, double eps, bool relu) {
  check_input(x, groups, "group_norm_nhwc");
  at::Tensor w = per_channel(weight, x.size(1), "group_norm_nhwc weight");
  at::Tensor b = per_channel(bias, x.size(1), "group_norm_nhwc bias");
  at::Tensor y = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
  at::Tensor mean = at::empty({x.size(0), groups}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({x.size(0), groups}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {y, mean, rstd};
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  if (x.scalar_type() == at::kFloat) {
    forward_impl<float>(x, groups, wp, bp, eps, relu, y, mean.data_ptr<float>(), rstd.data_ptr<float>());
  } else {
    forward_impl<c10::BFloat16>(x, groups, wp, bp, eps, relu, y, mean.data_ptr<float>(), rstd.data_ptr<float>());
  }
  return {y, mean, rstd};
}

at::Tensor group_norm_nhwc(const at::Tensor& x, int64_t groups, const c10::optional<at::Tensor>& weight,
                           const c10::optional<at::Tensor>& bias, double eps, bool relu) {
  return std::get<0>(group_norm_nhwc_train(x, groups, weight, bias, eps, relu));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_nhwc_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y, const at::Tensor& mean,
    const at::Tensor& rstd, const c10::optional<at::Tensor>& weight, int64_t groups, bool relu) {
  check_input(x, groups, "group_norm_nhwc_backward");
  TORCH_CHECK(grad.sizes() == x.sizes(), "group_norm_nhwc_backward: grad must have x's shape");
  at::Tensor dy = grad.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor yy = relu ? y.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  at::Tensor w = per_channel(weight, x.size(1), "group_norm_nhwc_backward weight");
  at::Tensor m = mean.to(at::kFloat).contiguous(), r = rstd.to(at::kFloat).contiguous();
  TORCH_CHECK(m.numel() == x.size(0) * groups && r.numel() == m.numel(), "group_norm_nhwc_backward: one mean a group");
  at::Tensor dx = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
  at::Tensor dw = at::zeros({x.size(1)}, x.options().dtype(at::kFloat));
  at::Tensor db = at::zeros({x.size(1)}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {dx, dw, db};
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  if (x.scalar_type() == at::kFloat) {
    backward_impl<float>(dy, x, yy, m.data_ptr<float>(), r.data_ptr<float>(), wp, groups, relu, dx,
                         dw.data_ptr<float>(), db.data_ptr<float>());
  } else {
    backward_impl<c10::BFloat16>(dy, x, yy, m.data_ptr<float>(), r.data_ptr<float>(), wp, groups, relu, dx,
                                 dw.data_ptr<float>(), db.data_ptr<float>());
  }
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(d2_nucleus, m) {
  m.def("group_norm_nhwc(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps, bool relu) -> Tensor");
  m.def("group_norm_nhwc_train(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps, bool relu) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("group_norm_nhwc_backward(Tensor grad, Tensor x, Tensor y, Tensor mean, Tensor rstd, Tensor? weight, "
        "int groups, bool relu) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(d2_nucleus, CPU, m) {
  m.impl("group_norm_nhwc", group_norm_nhwc);
  m.impl("group_norm_nhwc_train", group_norm_nhwc_train);
  m.impl("group_norm_nhwc_backward", group_norm_nhwc_backward);
}
