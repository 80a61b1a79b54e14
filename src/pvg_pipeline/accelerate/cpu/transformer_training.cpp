// The two halves of the post-norm transformer layer with their gradients (training),
// compiled after transformer.cpp (its helpers) in one translation unit:
//   attention block     x1 = LN1(x + attention(x Wqkv^T + bqkv) Wo^T + bo)
//   feed-forward block  out = LN2(x1 + relu(x1 W1^T + b1) W2^T + b2)
// Each forward pass works chunk by chunk of tokens in cache, with the GIN kernel's
// products and the attention kernel's per-row routines, and keeps what its backward
// pass needs. The parameter gradients are summed per fixed chunk and the chunks
// added in order, so they do not depend on the number of threads.
//
// Weights: *_t are transposed Linear weights (in, out) for the forward passes; the
// backward passes take them as the Linear layers store them (out, in).

namespace pvg_transformer {

// Batch rows per chunk of the attention block (16 x 24 tokens).
constexpr int64_t kBatchRows = 16;

// Forward of the attention block; x (B, L, M), bias (B, L, Lp) as for
// attention_forward. Returns out (B, L, M) and, kept: qkv (B, L, 3M), probs
// (B, H, L, Lp), attended (B, L, M), normalized (B, L, M), rstd (B * L).
std::vector<torch::Tensor> attention_block_forward(
    const torch::Tensor& x, const torch::Tensor& bias, int64_t H, double scale,
    const torch::Tensor& wqkv_t, const torch::Tensor& bqkv,
    const torch::Tensor& wout_t, const torch::Tensor& bout,
    const torch::Tensor& gamma, const torch::Tensor& beta, double eps) {
  check_tokens(x, bias, H);
  const int64_t B = x.size(0), L = x.size(1), M = x.size(2), Lp = bias.size(2);
  const AttentionWeights a(wqkv_t, bqkv, wout_t, bout, gamma, beta, M);
  auto out = torch::empty_like(x);
  auto qkv = torch::empty({B, L, 3 * M}, x.options());
  auto probs = torch::empty({B, H, L, Lp}, x.options());
  auto attended = torch::empty_like(x);
  auto normalized = torch::empty_like(x);
  auto rstd = torch::empty({B * L}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* mask = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* qp = qkv.data_ptr<float>();
  float* pp = probs.data_ptr<float>();
  float* ap = attended.data_ptr<float>();
  float* np = normalized.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  const int64_t Lq = (L + kLanes - 1) / kLanes * kLanes;
  const int64_t chunks = (B + kBatchRows - 1) / kBatchRows;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    pvg_attention::RowBuffers buf(L, Lq, M / H);
    std::vector<float> projected(kBatchRows * L * M);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t first = c * kBatchRows, last = std::min(B, first + kBatchRows);
      const int64_t tokens = (last - first) * L, t0 = first * L;
      pvg_gin::gemm(xp + t0 * M, M, 1, tokens, M, a.wqkv, 3 * M, 3 * M, a.bqkv,
                    qp + t0 * 3 * M, 3 * M, false, false);
      for (int64_t b = first; b < last; ++b)
        pvg_attention::attend_row(qp + b * L * 3 * M, mask + b * L * Lp, L, Lp, Lq, M,
                                  H, static_cast<float>(scale), ap + b * L * M,
                                  pp + b * H * L * Lp, buf);
      pvg_gin::gemm(ap + t0 * M, M, 1, tokens, M, a.wout, M, M, a.bout,
                    projected.data(), M, false, false);
      add_layer_norm(projected.data(), xp + t0 * M, tokens, M, a.gamma, a.beta,
                     static_cast<float>(eps), op + t0 * M, np + t0 * M, rp + t0);
    }
  });
  return {out, qkv, probs, attended, normalized, rstd};
}

// Gradients of attention_block_forward with respect to x, Wqkv, bqkv, Wo, bo, gamma
// and beta.
std::vector<torch::Tensor> attention_block_backward(
    const torch::Tensor& grad_out_in, const torch::Tensor& x, const torch::Tensor& qkv,
    const torch::Tensor& probs, const torch::Tensor& attended,
    const torch::Tensor& normalized, const torch::Tensor& rstd, int64_t H,
    double scale, const torch::Tensor& wqkv_in, const torch::Tensor& wout_in,
    const torch::Tensor& gamma) {
  const torch::Tensor grad_out = grad_out_in.contiguous();
  const torch::Tensor wqkv = wqkv_in.contiguous(), wout = wout_in.contiguous();
  pvg_gin::check(grad_out, "grad_out", 3);
  pvg_gin::check(x, "x", 3);
  pvg_gin::check(qkv, "qkv", 3);
  pvg_gin::check(probs, "probs", 4);
  pvg_gin::check(attended, "attended", 3);
  pvg_gin::check(normalized, "normalized", 3);
  const int64_t B = x.size(0), L = x.size(1), M = x.size(2), Lp = probs.size(3);
  TORCH_CHECK(grad_out.sizes() == x.sizes() && attended.sizes() == x.sizes() &&
                  normalized.sizes() == x.sizes() && qkv.size(2) == 3 * M &&
                  probs.size(0) == B && probs.size(1) == H && probs.size(2) == L,
              "the backward pass needs the forward pass's kept activations");
  const float* wq = weights(wqkv, "wqkv", 3 * M, M);
  const float* wo = weights(wout, "wout", M, M);
  const float* g = weights(gamma, "gamma", M, 0);
  const float* rp = weights(rstd, "rstd", B * L, 0);
  const int64_t chunks = (B + kBatchRows - 1) / kBatchRows;
  const std::vector<std::vector<int64_t>> shapes = {
      {3 * M, M}, {3 * M}, {M, M}, {M}, {M}, {M}};
  const int64_t width = 3 * M * M + 3 * M + M * M + 3 * M;
  // At least one row: an empty batch has zero gradients.
  auto partial = torch::zeros({std::max<int64_t>(chunks, 1), width}, x.options());
  auto grad_x = torch::empty_like(x);
  const float* go = grad_out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* qp = qkv.data_ptr<float>();
  const float* pp = probs.data_ptr<float>();
  const float* ap = attended.data_ptr<float>();
  const float* np = normalized.data_ptr<float>();
  float* part = partial.data_ptr<float>();
  float* gx = grad_x.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    pvg_attention::HeadBuffers buf(L, Lp, M / H);
    std::vector<float> dattended(kBatchRows * L * M), dqkv(kBatchRows * L * 3 * M);
    for (int64_t c = begin; c < end; ++c) {
      float* dWq = part + c * width;
      float* dbq = dWq + 3 * M * M;
      float* dWo = dbq + 3 * M;
      float* dbo = dWo + M * M;
      float* dgamma = dbo + M;
      float* dbeta = dgamma + M;
      const int64_t first = c * kBatchRows, last = std::min(B, first + kBatchRows);
      const int64_t tokens = (last - first) * L, t0 = first * L;
      // Layer norm into grad_x (the residual path); the rest is added below.
      float* dsum = gx + t0 * M;
      layer_norm_backward(go + t0 * M, np + t0 * M, rp + t0, tokens, M, g, dsum,
                          dgamma, dbeta, dbo);
      // Output projection: dWo += dsum^T attended, d(attended) = dsum Wo.
      pvg_gin::gemm(dsum, 1, M, M, tokens, ap + t0 * M, M, M, nullptr, dWo, M, true,
                    false);
      pvg_gin::gemm(dsum, M, 1, tokens, M, wo, M, M, nullptr, dattended.data(), M,
                    false, false);
      for (int64_t b = first; b < last; ++b)
        for (int64_t h = 0; h < H; ++h)
          pvg_attention::attend_row_backward(
              qp + b * L * 3 * M, pp + (b * H + h) * L * Lp,
              &dattended[(b - first) * L * M], L, Lp, M, H, h,
              static_cast<float>(scale), &dqkv[(b - first) * L * 3 * M], buf);
      // qkv projection: dbq += sum dqkv, dWq += dqkv^T x, grad_x += dqkv Wq.
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t k = 0; k < 3 * M; k += kLanes)
          (Vec::loadu(dbq + k) + Vec::loadu(&dqkv[t * 3 * M + k])).store(dbq + k);
      pvg_gin::gemm(dqkv.data(), 1, 3 * M, 3 * M, tokens, xp + t0 * M, M, M, nullptr,
                    dWq, M, true, false);
      pvg_gin::gemm(dqkv.data(), 3 * M, 1, tokens, 3 * M, wq, M, M, nullptr, dsum, M,
                    true, false);
    }
  });
  auto sums = add_chunks(partial, shapes);
  sums.insert(sums.begin(), grad_x);
  return sums;
}

// Forward of the feed-forward block over rows of tokens x (R, M). Returns out
// (R, M) and, kept: the hidden activations (R, F), normalized (R, M), rstd (R).
std::vector<torch::Tensor> feed_forward_forward(
    const torch::Tensor& x, const torch::Tensor& w1_t, const torch::Tensor& b1,
    const torch::Tensor& w2_t, const torch::Tensor& b2, const torch::Tensor& gamma,
    const torch::Tensor& beta, double eps) {
  pvg_gin::check(x, "x", 2);
  const int64_t R = x.size(0), M = x.size(1), F = w1_t.size(1);
  TORCH_CHECK(M % kLanes == 0 && F % kLanes == 0,
              "d_model and d_mlp must be multiples of lanes()");
  const FeedForwardWeights f(w1_t, b1, w2_t, b2, gamma, beta, M, F);
  auto out = torch::empty_like(x);
  auto hidden = torch::empty({R, F}, x.options());
  auto normalized = torch::empty_like(x);
  auto rstd = torch::empty({R}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* hp = hidden.data_ptr<float>();
  float* np = normalized.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  at::parallel_for(0, (R + kRows - 1) / kRows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> y(kRows * M);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t first = c * kRows, rows = std::min(kRows, R - first);
      const float* xc = xp + first * M;
      float* hc = hp + first * F;
      pvg_gin::gemm(xc, M, 1, rows, M, f.w1, F, F, f.b1, hc, F, false, true);
      pvg_gin::gemm(hc, F, 1, rows, F, f.w2, M, M, f.b2, y.data(), M, false, false);
      add_layer_norm(y.data(), xc, rows, M, f.gamma, f.beta, static_cast<float>(eps),
                     op + first * M, np + first * M, rp + first);
    }
  });
  return {out, hidden, normalized, rstd};
}

// Gradients of feed_forward_forward with respect to x, W1, b1, W2, b2, gamma and
// beta.
std::vector<torch::Tensor> feed_forward_backward(
    const torch::Tensor& grad_out_in, const torch::Tensor& x,
    const torch::Tensor& hidden, const torch::Tensor& normalized,
    const torch::Tensor& rstd, const torch::Tensor& w1_in, const torch::Tensor& w2_in,
    const torch::Tensor& gamma) {
  const torch::Tensor grad_out = grad_out_in.contiguous();
  const torch::Tensor w1 = w1_in.contiguous(), w2 = w2_in.contiguous();
  pvg_gin::check(grad_out, "grad_out", 2);
  pvg_gin::check(x, "x", 2);
  pvg_gin::check(hidden, "hidden", 2);
  pvg_gin::check(normalized, "normalized", 2);
  const int64_t R = x.size(0), M = x.size(1), F = hidden.size(1);
  TORCH_CHECK(grad_out.sizes() == x.sizes() && normalized.sizes() == x.sizes() &&
                  hidden.size(0) == R,
              "the backward pass needs the forward pass's kept activations");
  const float* w1p = weights(w1, "w1", F, M);
  const float* w2p = weights(w2, "w2", M, F);
  const float* g = weights(gamma, "gamma", M, 0);
  const float* rp = weights(rstd, "rstd", R, 0);
  const int64_t chunks = (R + kRows - 1) / kRows;
  const std::vector<std::vector<int64_t>> shapes = {{F, M}, {F}, {M, F}, {M}, {M}, {M}};
  const int64_t width = F * M + F + M * F + 3 * M;
  // At least one row: an empty batch has zero gradients.
  auto partial = torch::zeros({std::max<int64_t>(chunks, 1), width}, x.options());
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
      // Layer norm into grad_x (the residual path); the MLP's part is added below.
      float* dsum = gx + first * M;
      layer_norm_backward(go + first * M, np + first * M, rp + first, rows, M, g, dsum,
                          dgamma, dbeta, db2);
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
  auto sums = add_chunks(partial, shapes);
  sums.insert(sums.begin(), grad_x);
  return sums;
}

}  // namespace pvg_transformer
