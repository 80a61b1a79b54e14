// Fused post-norm transformer layer on the CPU:
//   x1 = LN1(x + attention(x) Wo^T + bo),   out = LN2(x1 + relu(x1 W1^T + b1) W2^T + b2)
// where attention(x) is the masked multi-head attention of cpu_attention.cpp on
// x Wqkv^T + bqkv. transformer_forward is the whole layer without gradients (acting,
// evaluation); feed_forward_forward / _backward are its second half with gradients
// (training).
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

// out[t] = LayerNorm(x[t] + residual[t]) for rows of M features (M small).
void add_layer_norm(const float* x, const float* residual, int64_t rows, int64_t M,
                    const float* weight, const float* bias, float eps, float* out) {
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
    for (int64_t m = 0; m < M; ++m)
      out[t * M + m] = (sum[m] - mean) * inverse * weight[m] + bias[m];
  }
}

const float* weights(const torch::Tensor& t, const char* name, int64_t rows,
                     int64_t cols) {
  pvg_gin::check(t, name, cols == 0 ? 1 : 2);
  TORCH_CHECK(t.size(0) == rows && (cols == 0 || t.size(1) == cols), name,
              " has the wrong shape");
  return t.data_ptr<float>();
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
  pvg_gin::check(tokens, "tokens", 3);
  pvg_gin::check(bias, "bias", 3);
  const int64_t B = tokens.size(0), L = tokens.size(1), M = tokens.size(2);
  const int64_t F = w1_t.size(1), Lp = bias.size(2);
  TORCH_CHECK(M % H == 0 && M % kLanes == 0 && F % kLanes == 0,
              "d_model must be a multiple of the heads and of lanes(), d_mlp of lanes()");
  TORCH_CHECK(bias.size(0) == B && bias.size(1) == L && Lp % kLanes == 0 && Lp >= L,
              "bias must be (batch, tokens, tokens padded to lanes())");
  const float* wqkv = weights(wqkv_t, "wqkv_t", M, 3 * M);
  const float* bq = weights(bqkv, "bqkv", 3 * M, 0);
  const float* wout = weights(wout_t, "wout_t", M, M);
  const float* bo = weights(bout, "bout", M, 0);
  const float* g1 = weights(norm1_weight, "norm1_weight", M, 0);
  const float* s1 = weights(norm1_bias, "norm1_bias", M, 0);
  const float* w1 = weights(w1_t, "w1_t", M, F);
  const float* bh = weights(b1, "b1", F, 0);
  const float* w2 = weights(w2_t, "w2_t", F, M);
  const float* bm = weights(b2, "b2", M, 0);
  const float* g2 = weights(norm2_weight, "norm2_weight", M, 0);
  const float* s2 = weights(norm2_bias, "norm2_bias", M, 0);
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
      pvg_gin::gemm(xb, M, 1, L, M, wqkv, 3 * M, 3 * M, bq, qkv.data(), 3 * M, false,
                    false);
      pvg_attention::attend_row(qkv.data(), mask + b * L * Lp, L, Lp, Lq, M, H,
                                static_cast<float>(scale), attended.data(), nullptr,
                                buf);
      pvg_gin::gemm(attended.data(), M, 1, L, M, wout, M, M, bo, projected.data(), M,
                    false, false);
      add_layer_norm(projected.data(), xb, L, M, g1, s1,
                     static_cast<float>(norm1_eps), x1.data());
      pvg_gin::gemm(x1.data(), M, 1, L, M, w1, F, F, bh, hidden.data(), F, false,
                    true);
      pvg_gin::gemm(hidden.data(), F, 1, L, F, w2, M, M, bm, projected.data(), M,
                    false, false);
      add_layer_norm(projected.data(), x1.data(), L, M, g2, s2,
                     static_cast<float>(norm2_eps), o + b * L * M);
    }
  });
  return out;
}

// Training's feed-forward block, out = LN(x + relu(x W1^T + b1) W2^T + b2), over
// rows of tokens x (R, M). Keeps the hidden activations (R, F), the normalised sums
// (R, M) and the inverse standard deviations (R) for the backward pass.
std::vector<torch::Tensor> feed_forward_forward(
    const torch::Tensor& x, const torch::Tensor& w1_t, const torch::Tensor& b1,
    const torch::Tensor& w2_t, const torch::Tensor& b2, const torch::Tensor& gamma,
    const torch::Tensor& beta, double eps) {
  pvg_gin::check(x, "x", 2);
  const int64_t R = x.size(0), M = x.size(1), F = w1_t.size(1);
  TORCH_CHECK(M % kLanes == 0 && F % kLanes == 0,
              "d_model and d_mlp must be multiples of lanes()");
  const float* w1 = weights(w1_t, "w1_t", M, F);
  const float* bh = weights(b1, "b1", F, 0);
  const float* w2 = weights(w2_t, "w2_t", F, M);
  const float* bm = weights(b2, "b2", M, 0);
  const float* g = weights(gamma, "gamma", M, 0);
  const float* bt = weights(beta, "beta", M, 0);
  auto out = torch::empty_like(x);
  auto hidden = torch::empty({R, F}, x.options());
  auto normalized = torch::empty_like(x);
  auto rstd = torch::empty({R}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* hp = hidden.data_ptr<float>();
  float* np = normalized.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, (R + kRows - 1) / kRows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> y(kRows * M);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t first = c * kRows, rows = std::min(kRows, R - first);
      const float* xc = xp + first * M;
      float* hc = hp + first * F;
      pvg_gin::gemm(xc, M, 1, rows, M, w1, F, F, bh, hc, F, false, true);
      pvg_gin::gemm(hc, F, 1, rows, F, w2, M, M, bm, y.data(), M, false, false);
      for (int64_t r = 0; r < rows; ++r) {
        float* sum = &y[r * M];
        float mean = 0.f;
        for (int64_t m = 0; m < M; ++m) {
          sum[m] += xc[r * M + m];
          mean += sum[m];
        }
        mean /= static_cast<float>(M);
        float var = 0.f;
        for (int64_t m = 0; m < M; ++m) var += (sum[m] - mean) * (sum[m] - mean);
        const float inverse = 1.f / std::sqrt(var / static_cast<float>(M) + e);
        rp[first + r] = inverse;
        for (int64_t m = 0; m < M; ++m) {
          const float normal = (sum[m] - mean) * inverse;
          np[(first + r) * M + m] = normal;
          op[(first + r) * M + m] = normal * g[m] + bt[m];
        }
      }
    }
  });
  return {out, hidden, normalized, rstd};
}

// Gradients of feed_forward_forward with respect to x, W1, b1, W2, b2, gamma and
// beta (w1 (F, M) and w2 (M, F) as the Linear layers store them). The parameter
// gradients are summed per fixed chunk of rows and the chunks added in order, so
// they do not depend on the number of threads.
std::vector<torch::Tensor> feed_forward_backward(
    const torch::Tensor& grad_out_in, const torch::Tensor& x,
    const torch::Tensor& hidden, const torch::Tensor& normalized,
    const torch::Tensor& rstd, const torch::Tensor& w1_in, const torch::Tensor& w2_in,
    const torch::Tensor& gamma) {
  const torch::Tensor grad_out = grad_out_in.contiguous();
  const torch::Tensor w1 = w1_in.contiguous(), w2 = w2_in.contiguous();
  pvg_gin::check(grad_out, "grad_out", 2);
  pvg_gin::check(x, "x", 2);
  const int64_t R = x.size(0), M = x.size(1), F = hidden.size(1);
  pvg_gin::check(hidden, "hidden", 2);
  pvg_gin::check(normalized, "normalized", 2);
  TORCH_CHECK(grad_out.size(0) == R && grad_out.size(1) == M && hidden.size(0) == R &&
                  normalized.size(0) == R && normalized.size(1) == M,
              "the backward pass needs the forward pass's kept activations");
  const float* w1p = weights(w1, "w1", F, M);
  const float* w2p = weights(w2, "w2", M, F);
  const float* g = weights(gamma, "gamma", M, 0);
  const float* rp = weights(rstd, "rstd", R, 0);
  const int64_t chunks = (R + kRows - 1) / kRows;
  // Per chunk: dW1 (F, M) | db1 (F) | dW2 (M, F) | db2 (M) | dgamma (M) | dbeta (M).
  const int64_t width = F * M + F + M * F + 3 * M;
  auto partial = torch::zeros({chunks, width}, x.options());
  auto grad_x = torch::empty_like(x);
  const float* go = grad_out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* hp = hidden.data_ptr<float>();
  const float* np = normalized.data_ptr<float>();
  float* part = partial.data_ptr<float>();
  float* gx = grad_x.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dpre(kRows * F);
    for (int64_t c = begin; c < end; ++c) {
      float* dW1 = part + c * width;
      float* db1 = dW1 + F * M;
      float* dW2 = db1 + F;
      float* db2 = dW2 + M * F;
      float* dgamma = db2 + M;
      float* dbeta = dgamma + M;
      const int64_t first = c * kRows, rows = std::min(kRows, R - first);
      const float* hc = hp + first * F;
      // Layer norm: d(sum) = rstd (dn - mean(dn) - n mean(dn n)), dn = dout gamma;
      // written to grad_x (the residual path), the MLP's part is added below.
      float* dsum = gx + first * M;
      for (int64_t r = 0; r < rows; ++r) {
        const float* gr = go + (first + r) * M;
        const float* nr = np + (first + r) * M;
        float mean_dn = 0.f, mean_dn_n = 0.f;
        for (int64_t m = 0; m < M; ++m) {
          const float dn = gr[m] * g[m];
          mean_dn += dn;
          mean_dn_n += dn * nr[m];
          dgamma[m] += gr[m] * nr[m];
          dbeta[m] += gr[m];
        }
        mean_dn /= static_cast<float>(M);
        mean_dn_n /= static_cast<float>(M);
        const float inverse = rp[first + r];
        for (int64_t m = 0; m < M; ++m) {
          const float d = inverse * (gr[m] * g[m] - mean_dn - nr[m] * mean_dn_n);
          dsum[r * M + m] = d;
          db2[m] += d;
        }
      }
      // Second linear: dW2 += dsum^T hidden, d(hidden) = dsum W2.
      pvg_gin::gemm(dsum, 1, M, M, rows, hc, F, F, nullptr, dW2, F, true, false);
      pvg_gin::gemm(dsum, M, 1, rows, M, w2p, F, F, nullptr, dpre.data(), F, false,
                    false);
      // ReLU passes the gradient where its output is positive (as PyTorch).
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < F; k += kLanes) {
          const Vec passed =
              Vec::loadu(&dpre[r * F + k]) & (Vec::loadu(hc + r * F + k) > Vec(0.f));
          passed.store(&dpre[r * F + k]);
          (Vec::loadu(db1 + k) + passed).store(db1 + k);
        }
      // First linear: dW1 += dpre^T x, grad_x += dpre W1.
      pvg_gin::gemm(dpre.data(), 1, F, F, rows, xp + first * M, M, M, nullptr, dW1, M,
                    true, false);
      pvg_gin::gemm(dpre.data(), F, 1, rows, F, w1p, M, M, nullptr, dsum, M, true,
                    false);
    }
  });
  // Chunks added in order: the same sums for any thread count.
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t k = 0; k < width; ++k) part[k] += part[c * width + k];
  auto total = partial[0];
  return {grad_x,
          total.narrow(0, 0, F * M).view({F, M}),
          total.narrow(0, F * M, F),
          total.narrow(0, F * M + F, M * F).view({M, F}),
          total.narrow(0, 2 * F * M + F, M),
          total.narrow(0, 2 * F * M + F + M, M),
          total.narrow(0, 2 * F * M + F + 2 * M, M)};
}

}  // namespace pvg_transformer
