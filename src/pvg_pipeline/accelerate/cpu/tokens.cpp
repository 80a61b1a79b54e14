// The agents' transformer tokens from the GIN output on the CPU, forward and backward:
//   pooled_g = BN(sum_i h[g, i])        g = 0, 1 (the two graphs); BN in eval mode
//   pair     = [(pooled_0 + pooled_1) / 2, |pooled_0 - pooled_1| / 2]
//   tokens   = [pair Wp^T + bp + E[round], h Wn^T + bn]    (2 + 2N tokens of M)
// In PyTorch this is ~15 operations forward and as many backward on (rows, 2, N, 16)
// tensors (~1.5 ms per 256-row minibatch, most of it per-operation cost and a slow
// BLAS path for the 16 x 16 products). Here each row is done in one go with the GIN
// kernel's register-tiled products (compiled after gin.cpp and transformer.cpp,
// whose chunk sums it uses); the backward pass
// recomputes the pooled sums from h (cheaper than keeping them) and sums the
// parameter gradients per fixed chunk of rows, chunks added in order, so that they
// do not depend on the number of threads.
//
// Layouts (contiguous float32): h (B, 2, N, D); rounds (B) int64 in [0, R); wp_t and
// wn_t (D, M) the transposed Linear weights for the forward pass, wp and wn (M, D) as
// stored for the backward one; embedding (R, M); the batch norm's weight, bias,
// running mean and variance (D), or empty tensors without a batch norm. D and M are
// multiples of lanes().
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace pvg_tokens {
namespace {

using pvg_transformer::weights;  // shape-checked data pointers

constexpr int64_t kChunk = 32;  // batch rows per chunk of the backward pass

// The eval-mode batch norm y = (s - mean) rstd gamma + beta, or none (gamma null).
struct PoolNorm {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* mean = nullptr;
  std::vector<float> rstd;
  PoolNorm(const torch::Tensor& weight, const torch::Tensor& bias,
           const torch::Tensor& running_mean, const torch::Tensor& running_var,
           double eps, int64_t D) {
    if (weight.numel() == 0) return;
    gamma = weights(weight, "batch norm weight", D, 0);
    beta = weights(bias, "batch norm bias", D, 0);
    mean = weights(running_mean, "batch norm running mean", D, 0);
    const float* var = weights(running_var, "batch norm running var", D, 0);
    rstd.resize(D);
    for (int64_t d = 0; d < D; ++d)
      rstd[d] = 1.f / std::sqrt(var[d] + static_cast<float>(eps));
  }
  // The pooled token's input for feature d from its node sum s.
  float operator()(float s, int64_t d) const {
    return gamma ? (s - mean[d]) * rstd[d] * gamma[d] + beta[d] : s;
  }
};

// One row's node sums (2, D), pooled tokens' inputs pair (2, D) and the sign of
// pooled_0 - pooled_1 (D), from its h (2, N, D).
void pool_row(const float* hb, int64_t N, int64_t D, const PoolNorm& norm, float* sums,
              float* pair, float* sign) {
  std::fill(sums, sums + 2 * D, 0.f);
  for (int64_t g = 0; g < 2; ++g)
    for (int64_t i = 0; i < N; ++i)  // node by node: contiguous, vectorised
      for (int64_t d = 0; d < D; ++d) sums[g * D + d] += hb[(g * N + i) * D + d];
  for (int64_t d = 0; d < D; ++d) {
    const float first = norm(sums[d], d), second = norm(sums[D + d], d);
    const float difference = first - second;
    pair[d] = (first + second) / 2.f;
    pair[D + d] = std::abs(difference) / 2.f;
    sign[d] = difference > 0.f ? 1.f : (difference < 0.f ? -1.f : 0.f);
  }
}

void check_inputs(const torch::Tensor& h, const torch::Tensor& rounds,
                  const torch::Tensor& embedding, int64_t M) {
  pvg_gin::check(h, "h", 4);
  pvg_gin::check(rounds, "rounds", 1, torch::kLong);
  pvg_gin::check(embedding, "embedding", 2);
  TORCH_CHECK(h.size(1) == 2 && rounds.size(0) == h.size(0),
              "h must be (batch, 2, nodes, d_gnn) and rounds (batch)");
  TORCH_CHECK(embedding.size(1) == M && M % at::vec::Vectorized<float>::size() == 0 &&
                  h.size(3) % at::vec::Vectorized<float>::size() == 0,
              "d_gnn and d_transformer must be multiples of lanes()");
  const int64_t* r = rounds.data_ptr<int64_t>();
  for (int64_t b = 0; b < rounds.size(0); ++b)
    TORCH_CHECK(r[b] >= 0 && r[b] < embedding.size(0), "round ", r[b],
                " is outside the round embedding (", embedding.size(0), " rows)");
}

}  // namespace

// Tokens (B, 2 + 2N, M).
torch::Tensor tokens_forward(const torch::Tensor& h, const torch::Tensor& rounds,
                             const torch::Tensor& wp_t, const torch::Tensor& bp,
                             const torch::Tensor& embedding, const torch::Tensor& wn_t,
                             const torch::Tensor& bn, const torch::Tensor& norm_weight,
                             const torch::Tensor& norm_bias,
                             const torch::Tensor& running_mean,
                             const torch::Tensor& running_var, double norm_eps) {
  const int64_t M = wn_t.size(1);
  check_inputs(h, rounds, embedding, M);
  const int64_t B = h.size(0), N = h.size(2), D = h.size(3), L = 2 + 2 * N;
  const float* wp = weights(wp_t, "pool_in weight_t", D, M);
  const float* wn = weights(wn_t, "node_in weight_t", D, M);
  const float* bpp = weights(bp, "pool_in bias", M, 0);
  const float* bnp = weights(bn, "node_in bias", M, 0);
  const PoolNorm norm(norm_weight, norm_bias, running_mean, running_var, norm_eps, D);
  auto tokens = torch::empty({B, L, M}, h.options());
  const float* hp = h.data_ptr<float>();
  const int64_t* r = rounds.data_ptr<int64_t>();
  const float* e = embedding.data_ptr<float>();
  float* out = tokens.data_ptr<float>();
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> sums(2 * D), pair(2 * D), sign(D);
    for (int64_t b = begin; b < end; ++b) {
      const float* hb = hp + b * 2 * N * D;
      float* ob = out + b * L * M;
      pool_row(hb, N, D, norm, sums.data(), pair.data(), sign.data());
      pvg_gin::gemm(pair.data(), D, 1, 2, D, wp, M, M, bpp, ob, M, false, false);
      for (int64_t t = 0; t < 2; ++t)
        for (int64_t m = 0; m < M; ++m) ob[t * M + m] += e[r[b] * M + m];
      pvg_gin::gemm(hb, D, 1, 2 * N, D, wn, M, M, bnp, ob + 2 * M, M, false, false);
    }
  });
  return tokens;
}

// Gradients of tokens_forward with respect to h, Wp, bp, the embedding, Wn, bn and
// the batch norm's weight and bias (empty without a batch norm).
std::vector<torch::Tensor> tokens_backward(
    const torch::Tensor& grad_in, const torch::Tensor& h, const torch::Tensor& rounds,
    const torch::Tensor& wp, const torch::Tensor& embedding, const torch::Tensor& wn,
    const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
    const torch::Tensor& running_mean, const torch::Tensor& running_var,
    double norm_eps) {
  const torch::Tensor grad = grad_in.contiguous();
  const int64_t M = wn.size(0);
  check_inputs(h, rounds, embedding, M);
  const int64_t B = h.size(0), N = h.size(2), D = h.size(3), L = 2 + 2 * N;
  const int64_t R = embedding.size(0);
  pvg_gin::check(grad, "grad_tokens", 3);
  TORCH_CHECK(grad.size(0) == B && grad.size(1) == L && grad.size(2) == M,
              "the token gradient does not fit h");
  const float* wpp = weights(wp, "pool_in weight", M, D);
  const float* wnp = weights(wn, "node_in weight", M, D);
  const PoolNorm norm(norm_weight, norm_bias, running_mean, running_var, norm_eps, D);
  const int64_t chunks = (B + kChunk - 1) / kChunk;
  // Per chunk: dWp (M, D) | dbp (M) | dE (R, M) | dWn (M, D) | dbn (M) | dgamma (D)
  // | dbeta (D).
  const int64_t width = 2 * M * D + 2 * M + R * M + 2 * D;
  // At least one row: an empty batch has zero gradients.
  auto partial = torch::zeros({std::max<int64_t>(chunks, 1), width}, h.options());
  auto grad_h = torch::empty_like(h);
  const float* go = grad.data_ptr<float>();
  const float* hp = h.data_ptr<float>();
  const int64_t* r = rounds.data_ptr<int64_t>();
  float* part = partial.data_ptr<float>();
  float* gh = grad_h.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> node_grad(kChunk * 2 * N * M), pool_grad(kChunk * 2 * M),
        pairs(kChunk * 2 * D), dpair(kChunk * 2 * D), sums(kChunk * 2 * D),
        signs(kChunk * D), dsum(2 * D);
    for (int64_t c = begin; c < end; ++c) {
      float* dWp = part + c * width;
      float* dbp = dWp + M * D;
      float* dE = dbp + M;
      float* dWn = dE + R * M;
      float* dbn = dWn + M * D;
      float* dgamma = dbn + M;
      float* dbeta = dgamma + D;
      const int64_t first = c * kChunk, last = std::min(B, first + kChunk);
      const int64_t rows = last - first;
      for (int64_t b = first; b < last; ++b) {
        const int64_t k = b - first;
        const float* gb = go + b * L * M;
        std::copy(gb, gb + 2 * M, &pool_grad[k * 2 * M]);
        std::copy(gb + 2 * M, gb + L * M, &node_grad[k * 2 * N * M]);
        for (int64_t m = 0; m < M; ++m) {
          const float both = gb[m] + gb[M + m];
          dbp[m] += both;
          dE[r[b] * M + m] += both;
        }
        pool_row(hp + b * 2 * N * D, N, D, norm, &sums[k * 2 * D], &pairs[k * 2 * D],
                 &signs[k * D]);
      }
      // Node tokens: dWn += G^T h, dbn += sum G, dh = G Wn (the chunk's rows of h
      // and of dh are contiguous).
      const int64_t node_rows = rows * 2 * N;
      const float* hc = hp + first * 2 * N * D;
      float* dhc = gh + first * 2 * N * D;
      pvg_gin::gemm(node_grad.data(), 1, M, M, node_rows, hc, D, D, nullptr, dWn, D,
                    true, false);
      for (int64_t t = 0; t < node_rows; ++t)
        for (int64_t m = 0; m < M; ++m) dbn[m] += node_grad[t * M + m];
      pvg_gin::gemm(node_grad.data(), M, 1, node_rows, M, wnp, D, D, nullptr, dhc, D,
                    false, false);
      // Pooled tokens: dWp += G^T pair, d(pair) = G Wp.
      pvg_gin::gemm(pool_grad.data(), 1, M, M, 2 * rows, pairs.data(), D, D, nullptr,
                    dWp, D, true, false);
      pvg_gin::gemm(pool_grad.data(), M, 1, 2 * rows, M, wpp, D, D, nullptr,
                    dpair.data(), D, false, false);
      // Back through the pair, the batch norm and the sum over each graph's nodes.
      for (int64_t b = first; b < last; ++b) {
        const int64_t k = b - first;
        const float* dp = &dpair[k * 2 * D];
        float* dhb = dhc + k * 2 * N * D;
        const float* sb = &sums[k * 2 * D];
        for (int64_t d = 0; d < D; ++d) {
          const float half_mean = dp[d] / 2.f;
          const float half_difference = signs[k * D + d] * dp[D + d] / 2.f;
          const float dpooled[2] = {half_mean + half_difference,
                                    half_mean - half_difference};
          for (int64_t g = 0; g < 2; ++g) {
            dsum[g * D + d] = dpooled[g];
            if (norm.gamma) {
              const float centred = (sb[g * D + d] - norm.mean[d]) * norm.rstd[d];
              dgamma[d] += dpooled[g] * centred;
              dbeta[d] += dpooled[g];
              dsum[g * D + d] = dpooled[g] * norm.gamma[d] * norm.rstd[d];
            }
          }
        }
        // The sum over each graph's nodes passes its gradient to every node.
        for (int64_t g = 0; g < 2; ++g)
          for (int64_t i = 0; i < N; ++i)
            for (int64_t d = 0; d < D; ++d) dhb[(g * N + i) * D + d] += dsum[g * D + d];
      }
    }
  });
  // Chunks added in order (the same sums for any thread count).
  auto grads = pvg_transformer::add_chunks(
      partial, {{M, D}, {M}, {R, M}, {M, D}, {M}, {D}, {D}});
  grads.insert(grads.begin(), grad_h);
  return grads;
}

}  // namespace pvg_tokens
