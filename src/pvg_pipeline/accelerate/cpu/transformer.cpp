// Fused post-norm transformer layer on the CPU:
//   x1 = LN1(x + attention(x) Wo^T + bo),   out = LN2(x1 + relu(x1 W1^T + b1) W2^T + b2)
// where attention(x) is the masked multi-head attention of attention.cpp on
// x Wqkv^T + bqkv. transformer_forward is the whole layer without gradients (acting,
// evaluation); transformer_training.cpp has its two halves with gradients.
//
// With 24 tokens of 16 features a layer is ~12 PyTorch operations, each a pass over
// (rows, 24, <= 64) intermediates plus its dispatch; acting calls it on a few hundred
// rows at a time, so the overhead is most of its cost. Here each batch row goes
// through the whole layer in small buffers that stay in cache, with the GIN kernel's
// register-tiled products (pvg_gin::gemm) and the attention of pvg_attention.
//
// Layouts (contiguous float32): tokens (B, L, M); bias (B, L, Lp) as for
// attention_forward; wqkv_t (M, 3M), wout_t (M, M), w1_t (M, F), w2_t (F, M) the
// transposed Linear weights; M and F multiples of lanes().
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <vector>

namespace pvg_transformer {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
// Rows (tokens) per chunk of the feed-forward block: its buffers stay in cache, and
// the parameter gradients are summed per chunk.
constexpr int64_t kRows = 256;

// out[t] = LayerNorm(x[t] + residual[t]) over rows of M features (M small); keeps
// the normalised rows and their inverse deviations when asked (for the backward).
void add_layer_norm(const float* x, const float* residual, int64_t rows, int64_t M,
                    const float* weight, const float* bias, float eps, float* out,
                    float* normalized = nullptr, float* rstd = nullptr) {
  std::vector<float> sum(M);
  for (int64_t t = 0; t < rows; ++t) {
    float mean = 0.f;
    for (int64_t m = 0; m < M; ++m) {
      sum[m] = x[t * M + m] + residual[t * M + m];
      mean += sum[m];
    }
    mean /= static_cast<float>(M);
    float var = 0.f;
    for (int64_t m = 0; m < M; ++m) var += (sum[m] - mean) * (sum[m] - mean);
    const float inverse = 1.f / std::sqrt(var / static_cast<float>(M) + eps);
    if (rstd != nullptr) rstd[t] = inverse;
    for (int64_t m = 0; m < M; ++m) {
      const float normal = (sum[m] - mean) * inverse;
      if (normalized != nullptr) normalized[t * M + m] = normal;
      out[t * M + m] = normal * weight[m] + bias[m];
    }
  }
}

// Backward of add_layer_norm over rows: d(sum) = rstd (dn - mean(dn) - n mean(dn n))
// with dn = dout gamma. Writes dsum and adds to dgamma, dbeta and dbias (the bias
// of the linear layer whose output entered the sum).
void layer_norm_backward(const float* go, const float* normalized, const float* rstd,
                         int64_t rows, int64_t M, const float* gamma, float* dsum,
                         float* dgamma, float* dbeta, float* dbias) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = go + r * M;
    const float* nr = normalized + r * M;
    float mean_dn = 0.f, mean_dn_n = 0.f;
    for (int64_t m = 0; m < M; ++m) {
      const float dn = gr[m] * gamma[m];
      mean_dn += dn;
      mean_dn_n += dn * nr[m];
      dgamma[m] += gr[m] * nr[m];
      dbeta[m] += gr[m];
    }
    mean_dn /= static_cast<float>(M);
    mean_dn_n /= static_cast<float>(M);
    for (int64_t m = 0; m < M; ++m) {
      const float d = rstd[r] * (gr[m] * gamma[m] - mean_dn - nr[m] * mean_dn_n);
      dsum[r * M + m] = d;
      dbias[m] += d;
    }
  }
}

// Sums of chunks' parameter gradients, added in chunk order (so the same for any
// thread count), as tensors of the given shapes laid out one after the other.
std::vector<torch::Tensor> add_chunks(torch::Tensor& partial,
                                      const std::vector<std::vector<int64_t>>& shapes) {
  float* part = partial.data_ptr<float>();
  const int64_t chunks = partial.size(0), width = partial.size(1);
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t k = 0; k < width; ++k) part[k] += part[c * width + k];
  std::vector<torch::Tensor> sums;
  int64_t start = 0;
  for (const auto& shape : shapes) {
    int64_t size = 1;
    for (const int64_t n : shape) size *= n;
    sums.push_back(partial[0].narrow(0, start, size).view(shape));
    start += size;
  }
  return sums;
}

const float* weights(const torch::Tensor& t, const char* name, int64_t rows,
                     int64_t cols) {
  pvg_gin::check(t, name, cols == 0 ? 1 : 2);
  TORCH_CHECK(t.size(0) == rows && (cols == 0 || t.size(1) == cols), name,
              " has the wrong shape");
  return t.data_ptr<float>();
}

// The attention half's parameters: qkv and output products (transposed), norm.
struct AttentionWeights {
  const float *wqkv, *bqkv, *wout, *bout, *gamma, *beta;
  AttentionWeights(const torch::Tensor& wqkv_t, const torch::Tensor& bqkv_,
                   const torch::Tensor& wout_t, const torch::Tensor& bout_,
                   const torch::Tensor& gamma_, const torch::Tensor& beta_, int64_t M)
      : wqkv(weights(wqkv_t, "wqkv_t", M, 3 * M)),
        bqkv(weights(bqkv_, "bqkv", 3 * M, 0)),
        wout(weights(wout_t, "wout_t", M, M)),
        bout(weights(bout_, "bout", M, 0)),
        gamma(weights(gamma_, "norm_attention weight", M, 0)),
        beta(weights(beta_, "norm_attention bias", M, 0)) {}
};

// The feed-forward half's parameters: both MLP products (transposed), norm.
struct FeedForwardWeights {
  const float *w1, *b1, *w2, *b2, *gamma, *beta;
  FeedForwardWeights(const torch::Tensor& w1_t, const torch::Tensor& b1_,
                     const torch::Tensor& w2_t, const torch::Tensor& b2_,
                     const torch::Tensor& gamma_, const torch::Tensor& beta_,
                     int64_t M, int64_t F)
      : w1(weights(w1_t, "w1_t", M, F)),
        b1(weights(b1_, "b1", F, 0)),
        w2(weights(w2_t, "w2_t", F, M)),
        b2(weights(b2_, "b2", M, 0)),
        gamma(weights(gamma_, "norm_mlp weight", M, 0)),
        beta(weights(beta_, "norm_mlp bias", M, 0)) {}
};

// Tokens (B, L, M) and the attention bias (B, L, Lp) fit each other and H heads.
void check_tokens(const torch::Tensor& tokens, const torch::Tensor& bias, int64_t H) {
  pvg_gin::check(tokens, "tokens", 3);
  pvg_gin::check(bias, "bias", 3);
  const int64_t M = tokens.size(2), Lp = bias.size(2);
  TORCH_CHECK(M % H == 0 && M % kLanes == 0,
              "d_model must be a multiple of the heads and of lanes()");
  TORCH_CHECK(bias.size(0) == tokens.size(0) && bias.size(1) == tokens.size(1) &&
                  Lp % kLanes == 0 && Lp >= tokens.size(1),
              "bias must be (batch, tokens, tokens padded to lanes())");
}

}  // namespace

torch::Tensor transformer_forward(
    const torch::Tensor& tokens, const torch::Tensor& bias, int64_t H, double scale,
    const torch::Tensor& wqkv_t, const torch::Tensor& bqkv,
    const torch::Tensor& wout_t, const torch::Tensor& bout,
    const torch::Tensor& norm1_weight, const torch::Tensor& norm1_bias,
    double norm1_eps, const torch::Tensor& w1_t, const torch::Tensor& b1,
    const torch::Tensor& w2_t, const torch::Tensor& b2,
    const torch::Tensor& norm2_weight, const torch::Tensor& norm2_bias,
    double norm2_eps) {
  check_tokens(tokens, bias, H);
  const int64_t B = tokens.size(0), L = tokens.size(1), M = tokens.size(2);
  const int64_t F = w1_t.size(1), Lp = bias.size(2);
  TORCH_CHECK(F % kLanes == 0, "d_mlp must be a multiple of lanes()");
  const AttentionWeights a(wqkv_t, bqkv, wout_t, bout, norm1_weight, norm1_bias, M);
  const FeedForwardWeights f(w1_t, b1, w2_t, b2, norm2_weight, norm2_bias, M, F);
  auto out = torch::empty_like(tokens);
  const float* x = tokens.data_ptr<float>();
  const float* mask = bias.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t Lq = (L + kLanes - 1) / kLanes * kLanes;
  at::parallel_for(0, B, 4, [&](int64_t begin, int64_t end) {
    pvg_attention::RowBuffers buf(L, Lq, M / H);
    std::vector<float> qkv(L * 3 * M), attended(L * M), projected(L * M), x1(L * M),
        hidden(L * F);
    for (int64_t b = begin; b < end; ++b) {
      const float* xb = x + b * L * M;
      pvg_gin::gemm(xb, M, 1, L, M, a.wqkv, 3 * M, 3 * M, a.bqkv, qkv.data(), 3 * M,
                    false, false);
      pvg_attention::attend_row(qkv.data(), mask + b * L * Lp, L, Lp, Lq, M, H,
                                static_cast<float>(scale), attended.data(), nullptr,
                                buf);
      pvg_gin::gemm(attended.data(), M, 1, L, M, a.wout, M, M, a.bout,
                    projected.data(), M, false, false);
      add_layer_norm(projected.data(), xb, L, M, a.gamma, a.beta,
                     static_cast<float>(norm1_eps), x1.data());
      pvg_gin::gemm(x1.data(), M, 1, L, M, f.w1, F, F, f.b1, hidden.data(), F, false,
                    true);
      pvg_gin::gemm(hidden.data(), F, 1, L, F, f.w2, M, M, f.b2, projected.data(), M,
                    false, false);
      add_layer_norm(projected.data(), x1.data(), L, M, f.gamma, f.beta,
                     static_cast<float>(norm2_eps), o + b * L * M);
    }
  });
  return out;
}

}  // namespace pvg_transformer
