// Fused CPU kernels for stylegan2_ops: bias + activation (+ its first and second derivatives) and
// upfirdn2d (polyphase: only the filter taps that meet real samples are visited, so zero insertion
// costs nothing). Parallelised with ATen's intra-op thread pool (OpenMP), so torch.set_num_threads
// applies.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "activations.h"

namespace {

// ------------------------------------------------------------------------------------------------
// bias_act

struct BiasLayout {
  int64_t channels;  // bias length (1 when there is no bias)
  int64_t inner;     // elements after the bias dimension
};

BiasLayout bias_layout(const torch::Tensor& x, const torch::Tensor& b, int64_t dim) {
  BiasLayout l{1, x.numel() > 0 ? x.numel() : 1};
  if (b.defined() && b.numel() > 0) {
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: bias must be 1D with length x.shape[dim]");
    l.channels = b.size(0);
    l.inner = 1;
    for (int64_t d = dim + 1; d < x.dim(); ++d) l.inner *= x.size(d);
  }
  return l;
}

// Calls body(begin, end, bias_value) over contiguous runs of elements that share one bias value.
template <typename T, typename Body>
void for_each_run(int64_t numel, const BiasLayout& l, const T* bias, Body body) {
  at::parallel_for(0, numel, 32768, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      const int64_t row = i / l.inner;
      const int64_t stop = std::min(end, (row + 1) * l.inner);
      body(i, stop, bias ? bias[row % l.channels] : T(0));
      i = stop;
    }
  });
}

void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64");
}

template <int A, typename T>
void bias_act_forward_kernel(const T* xp, const T* bp, T* yp, int64_t numel, const BiasLayout& l, T a, T g, T c) {
  for_each_run<T>(numel, l, bp, [&](int64_t s, int64_t e, T bias) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) yp[i] = sg2::apply_clamp(sg2::act_f<A>(xp[i] + bias, a) * g, c);
  });
}

template <int A, typename T>
void bias_act_grad1_kernel(const T* gp, const T* xp, const T* bp, T* op, int64_t numel, const BiasLayout& l, T a,
                           T g, T c) {
  for_each_run<T>(numel, l, bp, [&](int64_t s, int64_t e, T bias) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) {
      const T v = xp[i] + bias;
      const T m = sg2::inside_clamp(sg2::act_f<A>(v, a) * g, c) ? g : T(0);
      op[i] = gp[i] * sg2::act_d1<A>(v, a) * m;
    }
  });
}

template <int A, typename T>
void bias_act_grad2_kernel(const T* hp, const T* gp, const T* xp, const T* bp, T* op, int64_t numel,
                           const BiasLayout& l, T a, T g, T c) {
  for_each_run<T>(numel, l, bp, [&](int64_t s, int64_t e, T bias) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) {
      const T v = xp[i] + bias;
      const T m = sg2::inside_clamp(sg2::act_f<A>(v, a) * g, c) ? g : T(0);
      op[i] = hp[i] * gp[i] * sg2::act_d2<A>(v, a) * m;
    }
  });
}

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha,
                               double gain, double clamp) {
  check_float(x, "x");
  x = x.contiguous();
  if (b.defined()) b = b.to(x.dtype()).contiguous();
  const BiasLayout l = bias_layout(x, b, dim);
  auto y = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_forward", [&] {
    using T = scalar_t;
    const T* bp = (b.defined() && b.numel() > 0) ? b.data_ptr<T>() : nullptr;
    SG2_DISPATCH_ACT(act, bias_act_forward_kernel<A, T>(x.data_ptr<T>(), bp, y.data_ptr<T>(), x.numel(), l,
                                                        T(alpha), T(gain), T(clamp));)
  });
  return y;
}

// order 1: dy * d/dx[clamp(f(x + b) * gain)]             (ddx unused)
// order 2: ddx * dy * f''(x + b) * gain * clamp_mask      (the x-derivative of the order-1 result)
torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, torch::Tensor ddx,
                                int64_t dim, int64_t act, double alpha, double gain, double clamp,
                                int64_t order) {
  check_float(x, "x");
  x = x.contiguous();
  dy = dy.to(x.dtype()).contiguous();
  TORCH_CHECK(dy.sizes() == x.sizes(), "bias_act_backward: gradient shape differs from input shape");
  if (b.defined()) b = b.to(x.dtype()).contiguous();
  if (order == 2) {
    ddx = ddx.to(x.dtype()).contiguous();
    TORCH_CHECK(ddx.sizes() == x.sizes(), "bias_act_backward: ddx shape differs from input shape");
  }
  const BiasLayout l = bias_layout(x, b, dim);
  auto out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_backward", [&] {
    using T = scalar_t;
    const T* bp = (b.defined() && b.numel() > 0) ? b.data_ptr<T>() : nullptr;
    const T a = T(alpha), g = T(gain), c = T(clamp);
    if (order == 1) {
      SG2_DISPATCH_ACT(act, bias_act_grad1_kernel<A, T>(dy.data_ptr<T>(), x.data_ptr<T>(), bp, out.data_ptr<T>(),
                                                        x.numel(), l, a, g, c);)
    } else {
      SG2_DISPATCH_ACT(act, bias_act_grad2_kernel<A, T>(ddx.data_ptr<T>(), dy.data_ptr<T>(), x.data_ptr<T>(), bp,
                                                        out.data_ptr<T>(), x.numel(), l, a, g, c);)
    }
  });
  return out;
}

// ------------------------------------------------------------------------------------------------
// upfirdn2d

// For one axis: the (input index, filter tap) pairs that contribute to each output index, in CSR
// form. Output o reads the upsampled-and-padded signal at o * down + k - p0 for taps k; only
// positions that are multiples of `up` inside the input hold real samples.
struct Taps {
  std::vector<int32_t> start;  // size out + 1
  std::vector<int32_t> index;  // input index
  std::vector<int32_t> tap;    // filter tap
};

Taps make_taps(int64_t in, int64_t out, int64_t up, int64_t down, int64_t p0, int64_t k) {
  Taps t;
  t.start.reserve(out + 1);
  t.start.push_back(0);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t u = o * down + j - p0;
      if (u >= 0 && u % up == 0 && u / up < in) {
        t.index.push_back(int32_t(u / up));
        t.tap.push_back(int32_t(j));
      }
    }
    t.start.push_back(int32_t(t.index.size()));
  }
  return t;
}

// For one filter tap along x, the outputs it contributes to form an arithmetic progression
// (ox = o0 + m * os reads input ix = i0 + m * is, m < count): the congruence that picks real samples
// out of the zero-inserted signal repeats every up / gcd(up, down) outputs.
struct Run {
  int64_t o0, os, i0, is, count;
};

std::vector<Run> make_runs(int64_t in, int64_t out, int64_t up, int64_t down, int64_t p0, int64_t k) {
  std::vector<Run> runs(k, Run{0, 1, 0, 1, 0});
  for (int64_t j = 0; j < k; ++j) {
    std::vector<int64_t> os, is;
    for (int64_t o = 0; o < out; ++o) {
      const int64_t u = o * down + j - p0;
      if (u >= 0 && u % up == 0 && u / up < in) {
        os.push_back(o);
        is.push_back(u / up);
      }
    }
    if (os.empty()) continue;
    Run r{os[0], 1, is[0], 1, int64_t(os.size())};
    if (os.size() > 1) {
      r.os = os[1] - os[0];
      r.is = is[1] - is[0];
    }
    for (size_t m = 0; m < os.size(); ++m)  // cannot fail; guards the reasoning above
      TORCH_CHECK(os[m] == r.o0 + int64_t(m) * r.os && is[m] == r.i0 + int64_t(m) * r.is, "upfirdn2d: bad run");
    runs[j] = r;
  }
  return runs;
}

// out[o0 + m * OS] += in[i0 + m * IS] * w; the common strides are compile-time so loops vectorise.
template <typename T, int OS, int IS>
inline void axpy_fixed(T* out, const T* in, T w, int64_t count) {
#pragma omp simd
  for (int64_t m = 0; m < count; ++m) out[m * OS] += in[m * IS] * w;
}

template <typename T>
inline void axpy_run(T* out, const T* in, T w, const Run& r) {
  T* o = out + r.o0;
  const T* x = in + r.i0;
  if (r.os == 1 && r.is == 1) return axpy_fixed<T, 1, 1>(o, x, w, r.count);
  if (r.os == 1 && r.is == 2) return axpy_fixed<T, 1, 2>(o, x, w, r.count);
  if (r.os == 2 && r.is == 1) return axpy_fixed<T, 2, 1>(o, x, w, r.count);
  for (int64_t m = 0; m < r.count; ++m) o[m * r.os] += x[m * r.is] * w;
}

// f is the correlation kernel [fh, fw] (already flipped and scaled by the Python side).
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2, "upfirdn2d: the kernel must be 2D");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: factors must be >= 1");
  x = x.contiguous();
  f = f.to(x.dtype()).contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t fh = f.size(0), fw = f.size(1);
  TORCH_CHECK(H * upy + py0 + py1 >= fh && W * upx + px0 + px1 >= fw,
              "upfirdn2d: the padded input is smaller than the filter");
  const int64_t OH = (H * upy + py0 + py1 - fh + downy) / downy;
  const int64_t OW = (W * upx + px0 + px1 - fw + downx) / downx;
  auto y = torch::empty({N, C, OH, OW}, x.options());
  if (y.numel() == 0) return y;
  const Taps ty = make_taps(H, OH, upy, downy, py0, fh);
  const std::vector<Run> rx = make_runs(W, OW, upx, downx, px0, fw);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* fp = f.data_ptr<T>();
    T* yp = y.data_ptr<T>();
    const int64_t rows = N * C * OH;
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(OW * fw, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t plane = r / OH, oy = r % OH;
        T* out = yp + r * OW;
        std::fill(out, out + OW, T(0));
        for (int32_t a = ty.start[oy]; a < ty.start[oy + 1]; ++a) {
          const T* xrow = xp + (plane * H + ty.index[a]) * W;
          const T* frow = fp + int64_t(ty.tap[a]) * fw;
          for (int64_t kx = 0; kx < fw; ++kx)
            if (rx[kx].count > 0) axpy_run(out, xrow, frow[kx], rx[kx]);
        }
      }
    });
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward, "fused bias + activation + gain + clamp");
  m.def("bias_act_backward", &bias_act_backward, "first (order=1) or second (order=2) derivative of bias_act");
  m.def("upfirdn2d", &upfirdn2d, "polyphase upsample + pad + FIR + downsample");
}
