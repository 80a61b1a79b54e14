// The agents' heads on the CPU, forward and backward, from the transformer's output
// t (B, L, M), whose first two tokens are the pooled ones, s[b] = (t[b, 0], t[b, 1]):
//   node logits  l[b, j] = t[b, 2 + j] . wn + bn, -inf at padding nodes
//   value        v[b]    = relu(s[b] W1v^T + b1v) . w2v + b2v
//   decision     d[b]    = relu(s[b] W1d^T + b1d) W2d^T + b2d     (verifier only)
// In PyTorch these are ~15 operations forward and as many backward (~1.2 ms per
// 256-row gradient step, most of it per-operation cost); here one call each way,
// with the GIN kernel's register-tiled products (compiled after gin.cpp and
// transformer.cpp, whose chunk sums it uses). The
// parameter gradients are summed per fixed chunk of rows, chunks added in order, so
// that they do not depend on the number of threads.
//
// Layouts (contiguous float32 unless said): node_mask (B, L - 2) bool; wn (M); bn,
// b2v (1); w1v_t, w1d_t (2M, F) the transposed first Linear weights for the forward
// pass, w1v, w1d (F, 2M) as stored for the backward one; w2v (F); w2d (C, F); b1v,
// b1d (F); b2d (C). The decision head's tensors are empty for a prover. M and F are
// multiples of lanes().
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <vector>

namespace pvg_heads {
namespace {

using pvg_transformer::weights;  // shape-checked data pointers

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kChunk = 64;  // batch rows per chunk

float dot(const float* a, const float* b, int64_t n) {
  Vec acc(0.f);
  for (int64_t k = 0; k < n; k += kLanes)
    acc = at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), acc);
  return at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
}

// y += a x over n floats (n a multiple of lanes).
void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t k = 0; k < n; k += kLanes)
    at::vec::fmadd(Vec(a), Vec::loadu(x + k), Vec::loadu(y + k)).store(y + k);
}

// Backward of one head's first layer, relu(s W1^T + b1), over a chunk of rows:
// dhidden (rows, F) holds d(relu output) and becomes d(pre-activation) where the
// ReLU passed; adds to db1 and dW1 (F, 2M) and to (or, unless accumulate, writes)
// the pooled tokens' gradient gsummary, rows of 2M every ld floats like summary.
void first_layer_backward(float* dhidden, const float* hidden, int64_t rows,
                          int64_t F, int64_t M, const float* summary, int64_t ld,
                          const float* w1, float* db1, float* dW1, float* gsummary,
                          bool accumulate) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < F; k += kLanes) {
      const Vec passed =
          Vec::loadu(dhidden + r * F + k) & (Vec::loadu(hidden + r * F + k) > Vec(0.f));
      passed.store(dhidden + r * F + k);
      (Vec::loadu(db1 + k) + passed).store(db1 + k);
    }
  pvg_gin::gemm(dhidden, 1, F, F, rows, summary, ld, 2 * M, nullptr, dW1, 2 * M, true,
                false);
  pvg_gin::gemm(dhidden, F, 1, rows, F, w1, 2 * M, 2 * M, nullptr, gsummary, ld,
                accumulate, false);
}

void check_tokens(const torch::Tensor& tokens, const torch::Tensor& node_mask,
                  int64_t F) {
  pvg_gin::check(tokens, "tokens", 3);
  pvg_gin::check(node_mask, "node_mask", 2, torch::kBool);
  TORCH_CHECK(node_mask.size(0) == tokens.size(0) &&
                  node_mask.size(1) == tokens.size(1) - 2,
              "node_mask must be (batch, tokens - 2)");
  TORCH_CHECK(tokens.size(2) % kLanes == 0 && F % kLanes == 0,
              "d_model and d_mlp must be multiples of lanes()");
}

}  // namespace

// Returns logits (B, L - 2), decision (B, C) (empty without a decision head), value
// (B) and, when keep, the heads' hidden activations (B, F) for the backward pass.
std::vector<torch::Tensor> heads_forward(
    const torch::Tensor& tokens, const torch::Tensor& node_mask,
    const torch::Tensor& wn_in, const torch::Tensor& bn_in,
    const torch::Tensor& w1v_t, const torch::Tensor& b1v_in,
    const torch::Tensor& w2v_in, const torch::Tensor& b2v_in,
    const torch::Tensor& w1d_t, const torch::Tensor& b1d_in,
    const torch::Tensor& w2d_in, const torch::Tensor& b2d_in, bool keep) {
  const int64_t F = w1v_t.size(1);
  check_tokens(tokens, node_mask, F);
  const int64_t B = tokens.size(0), L = tokens.size(1), M = tokens.size(2);
  const bool decides = w1d_t.numel() > 0;
  const int64_t C = decides ? w2d_in.size(0) : 0;
  const float* wn = weights(wn_in, "node head weight", M, 0);
  const float* bn = weights(bn_in, "node head bias", 1, 0);
  const float* w1v = weights(w1v_t, "value head w1_t", 2 * M, F);
  const float* b1v = weights(b1v_in, "value head b1", F, 0);
  const float* w2v = weights(w2v_in, "value head w2", F, 0);
  const float* b2v = weights(b2v_in, "value head b2", 1, 0);
  const float* w1d = decides ? weights(w1d_t, "decision head w1_t", 2 * M, F) : nullptr;
  const float* b1d = decides ? weights(b1d_in, "decision head b1", F, 0) : nullptr;
  const float* w2d = decides ? weights(w2d_in, "decision head w2", C, F) : nullptr;
  const float* b2d = decides ? weights(b2d_in, "decision head b2", C, 0) : nullptr;
  auto logits = torch::empty({B, L - 2}, tokens.options());
  auto decision = torch::empty({decides ? B : 0, C}, tokens.options());
  auto value = torch::empty({B}, tokens.options());
  auto hid_v = torch::empty({keep ? B : 0, F}, tokens.options());
  auto hid_d = torch::empty({keep && decides ? B : 0, F}, tokens.options());
  const float* tp = tokens.data_ptr<float>();
  const bool* mp = node_mask.data_ptr<bool>();
  float* lp = logits.data_ptr<float>();
  float* dp = decision.data_ptr<float>();
  float* vp = value.data_ptr<float>();
  float* hv = keep ? hid_v.data_ptr<float>() : nullptr;
  float* hd = keep && decides ? hid_d.data_ptr<float>() : nullptr;
  const float minus_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, (B + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> value_hidden(kChunk * F), decision_hidden(kChunk * F);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t first = c * kChunk, rows = std::min(kChunk, B - first);
      for (int64_t b = first; b < first + rows; ++b)
        for (int64_t j = 0; j < L - 2; ++j)
          lp[b * (L - 2) + j] = mp[b * (L - 2) + j]
                                    ? dot(tp + (b * L + 2 + j) * M, wn, M) + bn[0]
                                    : minus_inf;
      // The pooled tokens of the chunk's rows, one row of 2M every L * M floats.
      const float* summary = tp + first * L * M;
      float* hvc = keep ? hv + first * F : value_hidden.data();
      pvg_gin::gemm(summary, L * M, 1, rows, 2 * M, w1v, F, F, b1v, hvc, F, false,
                    true);
      for (int64_t r = 0; r < rows; ++r)
        vp[first + r] = dot(hvc + r * F, w2v, F) + b2v[0];
      if (!decides) continue;
      float* hdc = keep ? hd + first * F : decision_hidden.data();
      pvg_gin::gemm(summary, L * M, 1, rows, 2 * M, w1d, F, F, b1d, hdc, F, false,
                    true);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < C; ++k)
          dp[(first + r) * C + k] = dot(hdc + r * F, w2d + k * F, F) + b2d[k];
    }
  });
  return {logits, decision, value, hid_v, hid_d};
}

// Gradients of heads_forward with respect to the tokens and every head parameter:
// d tokens, d wn, d bn, d W1v, d b1v, d w2v, d b2v and (empty without a decision
// head) d W1d, d b1d, d W2d, d b2d.
std::vector<torch::Tensor> heads_backward(
    const torch::Tensor& grad_logits_in, const torch::Tensor& grad_decision_in,
    const torch::Tensor& grad_value_in, const torch::Tensor& tokens,
    const torch::Tensor& node_mask, const torch::Tensor& wn_in,
    const torch::Tensor& w1v_in, const torch::Tensor& w2v_in,
    const torch::Tensor& hid_v, const torch::Tensor& w1d_in,
    const torch::Tensor& w2d_in, const torch::Tensor& hid_d) {
  const torch::Tensor grad_logits = grad_logits_in.contiguous();
  const torch::Tensor grad_value = grad_value_in.contiguous();
  const bool decides = w1d_in.numel() > 0;
  const torch::Tensor grad_decision =
      decides ? grad_decision_in.contiguous() : grad_decision_in;
  const int64_t F = w1v_in.size(0);
  check_tokens(tokens, node_mask, F);
  const int64_t B = tokens.size(0), L = tokens.size(1), M = tokens.size(2);
  const int64_t C = decides ? w2d_in.size(0) : 0;
  const float* wn = weights(wn_in, "node head weight", M, 0);
  const float* w1v = weights(w1v_in, "value head w1", F, 2 * M);
  const float* w2v = weights(w2v_in, "value head w2", F, 0);
  const float* hv = weights(hid_v, "value head hidden", B, F);
  const float* w1d = decides ? weights(w1d_in, "decision head w1", F, 2 * M) : nullptr;
  const float* w2d = decides ? weights(w2d_in, "decision head w2", C, F) : nullptr;
  const float* hd = decides ? weights(hid_d, "decision head hidden", B, F) : nullptr;
  const float* gl = weights(grad_logits, "grad_logits", B, L - 2);
  const float* gv = weights(grad_value, "grad_value", B, 0);
  const float* gd = decides ? weights(grad_decision, "grad_decision", B, C) : nullptr;
  const int64_t chunks = (B + kChunk - 1) / kChunk;
  // Per chunk: dwn (M) | dbn (1) | dW1v (F, 2M) | db1v (F) | dw2v (F) | db2v (1) |
  // dW1d (F, 2M) | db1d (F) | dW2d (C, F) | db2d (C).
  const int64_t value_width = M + 1 + 2 * M * F + 2 * F + 1;
  const int64_t width = value_width + (decides ? 2 * M * F + F + C * F + C : 0);
  // At least one row: an empty batch has zero gradients.
  auto partial = torch::zeros({std::max<int64_t>(chunks, 1), width}, tokens.options());
  auto grad_tokens = torch::empty_like(tokens);
  const float* tp = tokens.data_ptr<float>();
  const bool* mp = node_mask.data_ptr<bool>();
  float* part = partial.data_ptr<float>();
  float* gt = grad_tokens.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dhidden(kChunk * F);
    for (int64_t c = begin; c < end; ++c) {
      float* dwn = part + c * width;
      float* dbn = dwn + M;
      float* dW1v = dbn + 1;
      float* db1v = dW1v + 2 * M * F;
      float* dw2v = db1v + F;
      float* db2v = dw2v + F;
      float* dW1d = db2v + 1;
      float* db1d = dW1d + 2 * M * F;
      float* dW2d = db1d + F;
      float* db2d = dW2d + C * F;
      const int64_t first = c * kChunk, rows = std::min(kChunk, B - first);
      // Node logits; padding nodes' logits are constant (-inf): no gradient.
      for (int64_t b = first; b < first + rows; ++b)
        for (int64_t j = 0; j < L - 2; ++j) {
          const int64_t token = b * L + 2 + j;
          float* gtok = gt + token * M;
          const float g = mp[b * (L - 2) + j] ? gl[b * (L - 2) + j] : 0.f;
          for (int64_t m = 0; m < M; m += kLanes)
            (Vec(g) * Vec::loadu(wn + m)).store(gtok + m);
          axpy(g, tp + token * M, dwn, M);
          dbn[0] += g;
        }
      const float* summary = tp + first * L * M;
      float* gsummary = gt + first * L * M;
      // Value head: d(hidden) = dv w2v, then the first layer.
      const float* hvc = hv + first * F;
      for (int64_t r = 0; r < rows; ++r) {
        const float g = gv[first + r];
        axpy(g, hvc + r * F, dw2v, F);
        db2v[0] += g;
        for (int64_t k = 0; k < F; k += kLanes)
          (Vec(g) * Vec::loadu(w2v + k)).store(&dhidden[r * F + k]);
      }
      first_layer_backward(dhidden.data(), hvc, rows, F, M, summary, L * M, w1v, db1v,
                           dW1v, gsummary, false);
      if (!decides) continue;
      // Decision head: d(hidden) = dd W2d, then the first layer.
      const float* hdc = hd + first * F;
      for (int64_t r = 0; r < rows; ++r) {
        std::fill(&dhidden[r * F], &dhidden[(r + 1) * F], 0.f);
        for (int64_t k = 0; k < C; ++k) {
          const float g = gd[(first + r) * C + k];
          axpy(g, hdc + r * F, dW2d + k * F, F);
          db2d[k] += g;
          axpy(g, w2d + k * F, &dhidden[r * F], F);
        }
      }
      first_layer_backward(dhidden.data(), hdc, rows, F, M, summary, L * M, w1d, db1d,
                           dW1d, gsummary, true);
    }
  });
  // Chunks added in order (the same sums for any thread count).
  std::vector<std::vector<int64_t>> shapes = {{M}, {1}, {F, 2 * M}, {F}, {F}, {1}};
  if (decides) shapes.insert(shapes.end(), {{F, 2 * M}, {F}, {C, F}, {C}});
  auto grads = pvg_transformer::add_chunks(partial, shapes);
  grads.insert(grads.begin(), grad_tokens);
  return grads;
}

}  // namespace pvg_heads
