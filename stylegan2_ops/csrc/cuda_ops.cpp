// Python bindings of the CUDA kernels in cuda_kernels.cu; same signatures as cpu_ops.cpp.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

void bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, const at::Tensor& ddx,
                   at::Tensor& out, int64_t channels, int64_t inner, int64_t act, double alpha, double gain,
                   double clamp, int mode);
void upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, int upx, int upy, int downx, int downy,
                    int px0, int py0);

namespace {

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || t.scalar_type() == at::kHalf,
              name, " must be float16, float32 or float64");
}

// (channels, inner) of the bias broadcast along dim.
std::pair<int64_t, int64_t> bias_layout(const torch::Tensor& x, const torch::Tensor& b, int64_t dim) {
  if (!b.defined() || b.numel() == 0) return {1, 1};
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
  TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: bias must be 1D with length x.shape[dim]");
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  return {b.size(0), inner};
}

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha,
                               double gain, double clamp) {
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  x = x.contiguous();
  b = b.defined() ? b.to(x.dtype()).contiguous() : x.new_empty({0});
  const auto [channels, inner] = bias_layout(x, b, dim);
  auto y = torch::empty_like(x);
  bias_act_cuda(x, b, x, x, y, channels, inner, act, alpha, gain, clamp, 0);
  return y;
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, torch::Tensor ddx,
                                int64_t dim, int64_t act, double alpha, double gain, double clamp,
                                int64_t order) {
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(order == 1 || order == 2, "bias_act_backward: order must be 1 or 2");
  x = x.contiguous();
  dy = dy.to(x.dtype()).contiguous();
  TORCH_CHECK(dy.sizes() == x.sizes(), "bias_act_backward: gradient shape differs from input shape");
  b = b.defined() ? b.to(x.dtype()).contiguous() : x.new_empty({0});
  if (order == 2) {
    ddx = ddx.to(x.dtype()).contiguous();
    TORCH_CHECK(ddx.sizes() == x.sizes(), "bias_act_backward: ddx shape differs from input shape");
  } else {
    ddx = x;
  }
  const auto [channels, inner] = bias_layout(x, b, dim);
  auto out = torch::empty_like(x);
  bias_act_cuda(x, b, dy, ddx, out, channels, inner, act, alpha, gain, clamp, int(order));
  return out;
}

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                        int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  check_cuda(x, "x");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2, "upfirdn2d: the kernel must be 2D");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: factors must be >= 1");
  const c10::cuda::CUDAGuard guard(x.device());
  x = x.contiguous();
  f = f.to(x.device(), x.scalar_type()).contiguous();
  const int64_t H = x.size(2), W = x.size(3), fh = f.size(0), fw = f.size(1);
  TORCH_CHECK(H * upy + py0 + py1 >= fh && W * upx + px0 + px1 >= fw,
              "upfirdn2d: the padded input is smaller than the filter");
  const int64_t OH = (H * upy + py0 + py1 - fh + downy) / downy;
  const int64_t OW = (W * upx + px0 + px1 - fw + downx) / downx;
  TORCH_CHECK(x.numel() < (int64_t(1) << 31) && OH * OW < (int64_t(1) << 31), "upfirdn2d: tensor too large");
  auto y = torch::empty({x.size(0), x.size(1), OH, OW}, x.options());
  upfirdn2d_cuda(x, f, y, int(upx), int(upy), int(downx), int(downy), int(px0), int(py0));
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward, "fused bias + activation + gain + clamp (CUDA)");
  m.def("bias_act_backward", &bias_act_backward, "first or second derivative of bias_act (CUDA)");
  m.def("upfirdn2d", &upfirdn2d, "polyphase upsample + pad + FIR + downsample (CUDA)");
}
