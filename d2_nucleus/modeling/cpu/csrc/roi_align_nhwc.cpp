// RoIAlign over the levels of a feature pyramid for channels-last (NHWC) CPU feature maps, and its
// gradient: d2_nucleus::roi_align_nhwc, d2_nucleus::roi_align_nhwc_backward. Built by
// d2_nucleus/modeling/cpu/native.py.
//
// torchvision's CPU RoIAlign reads NCHW float32 input and computes one channel at a time with
// scalar code; this kernel computes the bilinear weights of a sample once and applies them to
// all C channels of the 4 neighbouring pixels, which lie contiguous in channels-last memory (a
// loop the compiler vectorises). It reads float32 or bfloat16 maps (a bfloat16 value converts to
// float32 exactly) and writes float32 or bfloat16. The arithmetic of every output channel is
// torchvision's, in its order (roi_align_kernel.cpp: sample positions, clamping, weights,
// accumulation, division by the count), and the file is compiled without floating-point
// contraction, so float32 outputs equal torchvision's bit for bit.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "bf16.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Tap {
  int64_t pos1, pos2, pos3, pos4;  // pixel offsets (y * W + x), in pixels
  float w1, w2, w3, w4;
  bool valid;
};

using d2_nucleus::load;
using d2_nucleus::store;

// torchvision's bilinear_interpolate pre-calculation for one sample point
inline Tap make_tap(int64_t height, int64_t width, float y, float x) {
  Tap t{0, 0, 0, 0, 0.f, 0.f, 0.f, 0.f, false};
  if (y < -1.0 || y > height || x < -1.0 || x > width) return t;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = (int64_t)y;
  int64_t x_low = (int64_t)x;
  int64_t y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = (float)y_low;
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = (float)x_low;
  } else {
    x_high = x_low + 1;
  }
  float ly = y - y_low;
  float lx = x - x_low;
  float hy = 1. - ly, hx = 1. - lx;
  t.w1 = hy * hx;
  t.w2 = hy * lx;
  t.w3 = ly * hx;
  t.w4 = ly * lx;
  t.pos1 = y_low * width + x_low;
  t.pos2 = y_low * width + x_high;
  t.pos3 = y_high * width + x_low;
  t.pos4 = y_high * width + x_high;
  t.valid = true;
  return t;
}

// torchvision's per-RoI quantities (roi_align_kernel.cpp), forward and backward
struct Geometry {
  float start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
  float sample_y(int64_t ph, int64_t iy) const {
    return start_h + ph * bin_h + static_cast<float>(iy + .5f) * bin_h / static_cast<float>(grid_h);
  }
  float sample_x(int64_t pw, int64_t ix) const {
    return start_w + pw * bin_w + static_cast<float>(ix + .5f) * bin_w / static_cast<float>(grid_w);
  }
};

inline Geometry roi_geometry(const float* r, float spatial_scale, int64_t pooled, int64_t sampling_ratio,
                             bool aligned) {
  float offset = aligned ? (float)0.5 : (float)0.0;
  float roi_start_w = r[1] * spatial_scale - offset;
  float roi_start_h = r[2] * spatial_scale - offset;
  float roi_end_w = r[3] * spatial_scale - offset;
  float roi_end_h = r[4] * spatial_scale - offset;
  float roi_width = roi_end_w - roi_start_w;
  float roi_height = roi_end_h - roi_start_h;
  if (!aligned) {
    roi_width = std::max(roi_width, (float)1.);
    roi_height = std::max(roi_height, (float)1.);
  }
  Geometry g;
  g.start_h = roi_start_h;
  g.start_w = roi_start_w;
  g.bin_h = static_cast<float>(roi_height) / static_cast<float>(pooled);
  g.bin_w = static_cast<float>(roi_width) / static_cast<float>(pooled);
  g.grid_h = (sampling_ratio > 0) ? sampling_ratio : (int64_t)std::ceil(roi_height / pooled);
  g.grid_w = (sampling_ratio > 0) ? sampling_ratio : (int64_t)std::ceil(roi_width / pooled);
  return g;
}

template <typename in_t, typename out_t>
void roi_align_nhwc_impl(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                         const at::Tensor& levels, const std::vector<double>& scales,
                         int64_t pooled, int64_t sampling_ratio, bool aligned, at::Tensor& out) {
  const int64_t num_rois = rois.size(0);
  const int64_t channels = features[0].size(1);
  const float* roi_data = rois.data_ptr<float>();
  const int64_t* level_data = levels.data_ptr<int64_t>();
  out_t* out_data = out.data_ptr<out_t>();

  at::parallel_for(0, num_rois, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(channels);
    for (int64_t n = begin; n < end; n++) {
      const float* r = roi_data + n * 5;
      const int64_t level = level_data[n];
      const at::Tensor& f = features[level];
      const int64_t batch = (int64_t)r[0];
      const int64_t height = f.size(2), width = f.size(3);
      const in_t* image = f.data_ptr<in_t>() + batch * height * width * channels;
      const Geometry geo = roi_geometry(r, (float)scales[level], pooled, sampling_ratio, aligned);
      const float count = std::max(geo.grid_h * geo.grid_w, (int64_t)1);

      out_t* out_roi = out_data + n * pooled * pooled * channels;
      for (int64_t ph = 0; ph < pooled; ph++) {
        for (int64_t pw = 0; pw < pooled; pw++) {
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t iy = 0; iy < geo.grid_h; iy++) {
            const float yy = geo.sample_y(ph, iy);
            for (int64_t ix = 0; ix < geo.grid_w; ix++) {
              const Tap t = make_tap(height, width, yy, geo.sample_x(pw, ix));
              // torchvision adds 0 * input[0] for a sample outside the map: the same sum
              if (!t.valid) continue;
              const in_t* p1 = image + t.pos1 * channels;
              const in_t* p2 = image + t.pos2 * channels;
              const in_t* p3 = image + t.pos3 * channels;
              const in_t* p4 = image + t.pos4 * channels;
              float* a = acc.data();
              for (int64_t c = 0; c < channels; c++) {
                a[c] += t.w1 * load(p1 + c) + t.w2 * load(p2 + c) + t.w3 * load(p3 + c) +
                        t.w4 * load(p4 + c);
              }
            }
          }
          out_t* o = out_roi + (ph * pooled + pw) * channels;
          for (int64_t c = 0; c < channels; c++) store(o + c, acc[c] / count);
        }
      }
    }
  });
}

at::Tensor roi_align_nhwc(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                          at::ArrayRef<double> scales, int64_t pooled, int64_t sampling_ratio,
                          bool aligned, at::ScalarType out_dtype) {
  TORCH_CHECK(!features.empty(), "roi_align_nhwc: no feature maps");
  TORCH_CHECK((int64_t)features.size() == (int64_t)scales.size(), "roi_align_nhwc: one scale a level");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align_nhwc: rois must be [R, 5]");
  TORCH_CHECK(levels.dim() == 1 && levels.size(0) == rois.size(0), "roi_align_nhwc: one level a roi");
  TORCH_CHECK(out_dtype == at::kFloat || out_dtype == at::kBFloat16, "roi_align_nhwc: float32 or bfloat16 output");
  const auto in_dtype = features[0].scalar_type();
  TORCH_CHECK(in_dtype == at::kFloat || in_dtype == at::kBFloat16, "roi_align_nhwc: float32 or bfloat16 input");
  const int64_t channels = features[0].size(1);
  std::vector<at::Tensor> maps;
  for (const auto& f : features) {
    TORCH_CHECK(f.device().is_cpu() && f.dim() == 4 && f.size(1) == channels && f.scalar_type() == in_dtype,
                "roi_align_nhwc: CPU [N, C, H, W] maps of one dtype and channel count");
    TORCH_CHECK(f.is_contiguous(at::MemoryFormat::ChannelsLast), "roi_align_nhwc: channels-last maps");
    maps.push_back(f);
  }
  at::Tensor r = rois.to(at::kFloat).contiguous();
  at::Tensor l = levels.to(at::kLong).contiguous();
  if (l.numel() > 0) {
    TORCH_CHECK(l.min().item<int64_t>() >= 0 && l.max().item<int64_t>() < (int64_t)maps.size(),
                "roi_align_nhwc: level out of range");
  }
  // [R, C, S, S] in channels-last memory ([R, S, S, C])
  at::Tensor out = at::empty({rois.size(0), channels, pooled, pooled},
                             at::TensorOptions().dtype(out_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  if (rois.size(0) == 0) return out;
  std::vector<double> s(scales.begin(), scales.end());
  if (in_dtype == at::kFloat && out_dtype == at::kFloat) {
    roi_align_nhwc_impl<float, float>(maps, r, l, s, pooled, sampling_ratio, aligned, out);
  } else if (in_dtype == at::kFloat) {
    roi_align_nhwc_impl<float, c10::BFloat16>(maps, r, l, s, pooled, sampling_ratio, aligned, out);
  } else if (out_dtype == at::kFloat) {
    roi_align_nhwc_impl<c10::BFloat16, float>(maps, r, l, s, pooled, sampling_ratio, aligned, out);
  } else {
    roi_align_nhwc_impl<c10::BFloat16, c10::BFloat16>(maps, r, l, s, pooled, sampling_ratio, aligned, out);
  }
  return out;
}

// The gradient of roi_align_nhwc for float32 channels-last maps. Threads take blocks of channels
// (no two write the same value); within a block the contributions to each value are added in
// torchvision's order (RoI, bin row, bin column, sample row, sample column, the four taps), each
// one computed as torchvision computes it (grad * w / count), so the result equals torchvision's
// single-threaded CPU backward bit for bit.
void roi_align_nhwc_backward_impl(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels,
                                  std::vector<at::Tensor>& grads, const std::vector<double>& scales,
                                  int64_t pooled, int64_t sampling_ratio, bool aligned) {
  const int64_t num_rois = rois.size(0);
  const int64_t channels = grads[0].size(1);
  const float* roi_data = rois.data_ptr<float>();
  const int64_t* level_data = levels.data_ptr<int64_t>();
  const float* grad_data = grad.data_ptr<float>();
  const int64_t threads = std::max<int64_t>(at::get_num_threads(), 1);
  const int64_t block = std::max<int64_t>(16, ((channels + threads - 1) / threads + 15) / 16 * 16);
  const int64_t num_blocks = (channels + block - 1) / block;
  at::parallel_for(0, num_blocks, 1, [&](int64_t bbegin, int64_t bend) {
    for (int64_t blk = bbegin; blk < bend; blk++) {
      const int64_t c0 = blk * block, c1 = std::min(channels, c0 + block);
      for (int64_t n = 0; n < num_rois; n++) {
        const float* r = roi_data + n * 5;
        const int64_t level = level_data[n];
        at::Tensor& gmap = grads[level];
        const int64_t batch = (int64_t)r[0];
        const int64_t height = gmap.size(2), width = gmap.size(3);
        float* gi = gmap.data_ptr<float>() + batch * height * width * channels;
        const Geometry geo = roi_geometry(r, (float)scales[level], pooled, sampling_ratio, aligned);
        const float count = geo.grid_h * geo.grid_w;  // torchvision's backward: no max(., 1)
        for (int64_t ph = 0; ph < pooled; ph++) {
          for (int64_t pw = 0; pw < pooled; pw++) {
            const float* g = grad_data + ((n * pooled + ph) * pooled + pw) * channels;
            for (int64_t iy = 0; iy < geo.grid_h; iy++) {
              const float yy = geo.sample_y(ph, iy);
              for (int64_t ix = 0; ix < geo.grid_w; ix++) {
                const Tap t = make_tap(height, width, yy, geo.sample_x(pw, ix));
                if (!t.valid) continue;
                // tap by tap, as torchvision adds them (two taps may share a pixel at the border)
                float* p1 = gi + t.pos1 * channels;
                for (int64_t c = c0; c < c1; c++) p1[c] += g[c] * t.w1 / count;
                float* p2 = gi + t.pos2 * channels;
                for (int64_t c = c0; c < c1; c++) p2[c] += g[c] * t.w2 / count;
                float* p3 = gi + t.pos3 * channels;
                for (int64_t c = c0; c < c1; c++) p3[c] += g[c] * t.w3 / count;
                float* p4 = gi + t.pos4 * channels;
                for (int64_t c = c0; c < c1; c++) p4[c] += g[c] * t.w4 / count;
              }
            }
          }
        }
      }
    }
  });
}

std::vector<at::Tensor> roi_align_nhwc_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                const at::Tensor& levels, at::IntArrayRef batch_channels,
                                                at::IntArrayRef heights, at::IntArrayRef widths,
                                                at::ArrayRef<double> scales, int64_t pooled,
                                                int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(batch_channels.size() == 2, "roi_align_nhwc_backward: batch_channels is [N, C]");
  TORCH_CHECK(heights.size() == widths.size() && heights.size() == scales.size(),
              "roi_align_nhwc_backward: one height, width and scale a level");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == batch_channels[1] &&
                  grad.size(2) == pooled && grad.size(3) == pooled,
              "roi_align_nhwc_backward: grad must be [R, C, pooled, pooled]");
  at::Tensor g = grad.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor r = rois.to(at::kFloat).contiguous();
  at::Tensor l = levels.to(at::kLong).contiguous();
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < heights.size(); i++) {
    // (at::zeros ignores a memory format: empty in channels-last, then zeroed)
    grads.push_back(at::empty({batch_channels[0], batch_channels[1], heights[i], widths[i]},
                              at::TensorOptions().dtype(at::kFloat).memory_format(at::MemoryFormat::ChannelsLast))
                        .zero_());
  }
  if (rois.size(0) > 0) {
    std::vector<double> s(scales.begin(), scales.end());
    roi_align_nhwc_backward_impl(g, r, l, grads, s, pooled, sampling_ratio, aligned);
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY(d2_nucleus, m) {
  m.def("roi_align_nhwc(Tensor[] features, Tensor rois, Tensor levels, float[] scales, int pooled, "
        "int sampling_ratio, bool aligned, ScalarType out_dtype) -> Tensor");
  m.def("roi_align_nhwc_backward(Tensor grad, Tensor rois, Tensor levels, int[] batch_channels, int[] heights, "
        "int[] widths, float[] scales, int pooled, int sampling_ratio, bool aligned) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(d2_nucleus, CPU, m) {
  m.impl("roi_align_nhwc", roi_align_nhwc);
  m.impl("roi_align_nhwc_backward", roi_align_nhwc_backward);
}
