// Activation functions with their first and second derivatives, shared by the CPU and CUDA kernels.
// The definitions follow stylegan2_ops/ref.py (which uses torch's own functions), including torch's
// conventions at the kinks (relu'(0) = 0, leaky relu'(0) = alpha) and softplus' threshold of 20.
#pragma once

#ifdef __CUDACC__
#define SG2_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define SG2_HD inline
#endif

namespace sg2 {

enum Act : int { LINEAR = 0, RELU = 1, LRELU = 2, TANH = 3, SIGMOID = 4, ELU = 5, SELU = 6, SOFTPLUS = 7, SWISH = 8 };

SG2_HD float ex(float x) { return expf(x); }
SG2_HD double ex(double x) { return exp(x); }
SG2_HD float th(float x) { return tanhf(x); }
SG2_HD double th(double x) { return tanh(x); }
SG2_HD float l1p(float x) { return log1pf(x); }
SG2_HD double l1p(double x) { return log1p(x); }

constexpr double SELU_SCALE = 1.0507009873554804934193349852946;
constexpr double SELU_ALPHA = 1.6732632423543772848170429916717;

// f(x): the activation itself.
template <int A, typename T>
SG2_HD T act_f(T x, T alpha) {
  if (A == LINEAR) return x;
  if (A == RELU) return x > T(0) ? x : T(0);
  if (A == LRELU) return x > T(0) ? x : x * alpha;
  if (A == TANH) return th(x);
  if (A == SIGMOID) return T(1) / (T(1) + ex(-x));
  if (A == ELU) return x > T(0) ? x : ex(x) - T(1);
  if (A == SELU) return x > T(0) ? T(SELU_SCALE) * x : T(SELU_SCALE * SELU_ALPHA) * (ex(x) - T(1));
  if (A == SOFTPLUS) return x > T(20) ? x : l1p(ex(x));
  if (A == SWISH) return x / (T(1) + ex(-x));
  return x;
}

// f'(x).
template <int A, typename T>
SG2_HD T act_d1(T x, T alpha) {
  if (A == LINEAR) return T(1);
  if (A == RELU) return x > T(0) ? T(1) : T(0);
  if (A == LRELU) return x > T(0) ? T(1) : alpha;
  if (A == TANH) { T t = th(x); return T(1) - t * t; }
  if (A == SIGMOID) { T s = T(1) / (T(1) + ex(-x)); return s * (T(1) - s); }
  if (A == ELU) return x > T(0) ? T(1) : ex(x);
  if (A == SELU) return x > T(0) ? T(SELU_SCALE) : T(SELU_SCALE * SELU_ALPHA) * ex(x);
  if (A == SOFTPLUS) { if (x > T(20)) return T(1); T z = ex(x); return z / (z + T(1)); }
  if (A == SWISH) { T s = T(1) / (T(1) + ex(-x)); return s + x * s * (T(1) - s); }
  return T(1);
}

// f''(x) (zero almost everywhere for the piecewise-linear activations).
template <int A, typename T>
SG2_HD T act_d2(T x, T alpha) {
  if (A == TANH) { T t = th(x); return T(-2) * t * (T(1) - t * t); }
  if (A == SIGMOID) { T s = T(1) / (T(1) + ex(-x)); return s * (T(1) - s) * (T(1) - T(2) * s); }
  if (A == ELU) return x > T(0) ? T(0) : ex(x);
  if (A == SELU) return x > T(0) ? T(0) : T(SELU_SCALE * SELU_ALPHA) * ex(x);
  if (A == SOFTPLUS) { if (x > T(20)) return T(0); T s = T(1) / (T(1) + ex(-x)); return s * (T(1) - s); }
  if (A == SWISH) { T s = T(1) / (T(1) + ex(-x)); return s * (T(1) - s) * (T(2) + x * (T(1) - T(2) * s)); }
  return T(0);
}

// y = clamp(f(x) * gain); the mask of torch.clamp's gradient is 1 where -c <= f(x) * gain <= c.
template <typename T>
SG2_HD T apply_clamp(T z, T c) { return c >= T(0) ? (z < -c ? -c : (z > c ? c : z)) : z; }
template <typename T>
SG2_HD bool inside_clamp(T z, T c) { return c < T(0) || (z >= -c && z <= c); }

// Dispatch a runtime activation id to a template argument.
#define SG2_DISPATCH_ACT(act, ...)                               \
  switch (act) {                                                 \
    case sg2::LINEAR: { constexpr int A = sg2::LINEAR; __VA_ARGS__ } break;     \
    case sg2::RELU: { constexpr int A = sg2::RELU; __VA_ARGS__ } break;         \
    case sg2::LRELU: { constexpr int A = sg2::LRELU; __VA_ARGS__ } break;       \
    case sg2::TANH: { constexpr int A = sg2::TANH; __VA_ARGS__ } break;         \
    case sg2::SIGMOID: { constexpr int A = sg2::SIGMOID; __VA_ARGS__ } break;   \
    case sg2::ELU: { constexpr int A = sg2::ELU; __VA_ARGS__ } break;           \
    case sg2::SELU: { constexpr int A = sg2::SELU; __VA_ARGS__ } break;         \
    case sg2::SOFTPLUS: { constexpr int A = sg2::SOFTPLUS; __VA_ARGS__ } break; \
    case sg2::SWISH: { constexpr int A = sg2::SWISH; __VA_ARGS__ } break;       \
    default: TORCH_CHECK(false, "unknown activation id ", act);                 \
  }

}  // namespace sg2
