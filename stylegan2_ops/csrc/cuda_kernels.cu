// CUDA kernels for stylegan2_ops: fused bias + activation (and its derivatives) and polyphase
// upfirdn2d. Arithmetic runs in float for half inputs (at::opmath_type).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "activations.h"

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return int(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

// mode 0: y = clamp(f(x + b) * gain)
// mode 1: out = dy * f'(x + b) * gain * mask
// mode 2: out = ddx * dy * f''(x + b) * gain * mask
template <int A, int MODE, typename T>
__global__ void bias_act_kernel(const T* __restrict__ x, const T* __restrict__ b, const T* __restrict__ dy,
                                const T* __restrict__ ddx, T* __restrict__ out, int64_t numel, int64_t channels,
                                int64_t inner, at::opmath_type<T> alpha, at::opmath_type<T> gain,
                                at::opmath_type<T> clamp) {
  using acc = at::opmath_type<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel; i += int64_t(blockDim.x) * gridDim.x) {
    const acc v = acc(x[i]) + (b ? acc(b[(i / inner) % channels]) : acc(0));
    if (MODE == 0) {
      out[i] = T(sg2::apply_clamp(sg2::act_f<A>(v, alpha) * gain, clamp));
    } else {
      const acc m = sg2::inside_clamp(sg2::act_f<A>(v, alpha) * gain, clamp) ? gain : acc(0);
      if (MODE == 1)
        out[i] = T(acc(dy[i]) * sg2::act_d1<A>(v, alpha) * m);
      else
        out[i] = T(acc(ddx[i]) * acc(dy[i]) * sg2::act_d2<A>(v, alpha) * m);
    }
  }
}

// One thread per output sample; only the taps that land on real (not inserted-zero) samples run.
template <typename T>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const T* __restrict__ f, T* __restrict__ y, int64_t planes,
                                 int H, int W, int OH, int OW, int fh, int fw, int upx, int upy, int downx, int downy,
                                 int px0, int py0) {
  using acc = at::opmath_type<T>;
  const int64_t total = planes * OH * OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int ox = int(i % OW);
    const int oy = int((i / OW) % OH);
    const int64_t plane = i / (int64_t(OW) * OH);
    const T* xp = x + plane * H * W;
    const int uy = oy * downy - py0;  // upsampled row of tap 0
    const int ux = ox * downx - px0;
    const int ky0 = ((-uy) % upy + upy) % upy;
    const int kx0 = ((-ux) % upx + upx) % upx;
    acc s = 0;
    for (int ky = ky0; ky < fh; ky += upy) {
      const int iy = (uy + ky) / upy;
      if (iy < 0 || iy >= H) continue;
      for (int kx = kx0; kx < fw; kx += upx) {
        const int ix = (ux + kx) / upx;
        if (ix < 0 || ix >= W) continue;
        s += acc(xp[int64_t(iy) * W + ix]) * acc(f[ky * fw + kx]);
      }
    }
    y[i] = T(s);
  }
}

}  // namespace

void bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, const at::Tensor& ddx,
                   at::Tensor& out, int64_t channels, int64_t inner, int64_t act, double alpha, double gain,
                   double clamp, int mode) {
  const int64_t numel = x.numel();
  if (numel == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
    using T = scalar_t;
    using acc = at::opmath_type<T>;
    const T* bp = b.numel() ? b.data_ptr<T>() : nullptr;
    const T* gp = mode >= 1 ? dy.data_ptr<T>() : nullptr;
    const T* hp = mode == 2 ? ddx.data_ptr<T>() : nullptr;
    SG2_DISPATCH_ACT(act, {
      if (mode == 0)
        bias_act_kernel<A, 0, T><<<blocks_for(numel), kThreads, 0, stream>>>(
            x.data_ptr<T>(), bp, gp, hp, out.data_ptr<T>(), numel, channels, inner, acc(alpha), acc(gain), acc(clamp));
      else if (mode == 1)
        bias_act_kernel<A, 1, T><<<blocks_for(numel), kThreads, 0, stream>>>(
            x.data_ptr<T>(), bp, gp, hp, out.data_ptr<T>(), numel, channels, inner, acc(alpha), acc(gain), acc(clamp));
      else
        bias_act_kernel<A, 2, T><<<blocks_for(numel), kThreads, 0, stream>>>(
            x.data_ptr<T>(), bp, gp, hp, out.data_ptr<T>(), numel, channels, inner, acc(alpha), acc(gain), acc(clamp));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, int upx, int upy, int downx, int downy,
                    int px0, int py0) {
  const int64_t total = y.numel();
  if (total == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
    upfirdn2d_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), x.size(0) * x.size(1),
        int(x.size(2)), int(x.size(3)), int(y.size(2)), int(y.size(3)), int(f.size(0)), int(f.size(1)), upx, upy,
        downx, downy, px0, py0);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
