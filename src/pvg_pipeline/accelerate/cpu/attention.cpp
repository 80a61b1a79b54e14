// Fused masked multi-head attention for tiny heads on the CPU (forward and backward).
//
// At the agents' sizes (24 tokens, 4 heads of 4 dimensions) PyTorch's CPU attention
// spends its time on per-block overhead and on passes over (batch, head, token, token)
// intermediates. Here each (batch, head) pair is done in one go, in registers and a
// few small buffers, with ATen's Vectorized<float>: the forward pass has queries in
// the vector lanes (no reductions across lanes), the backward pass keys. Compiled
// after gin.cpp, whose products (pvg_gin::gemm) and checks it uses.
//
// Layouts: qkv (B, L, 3 * M) as produced by one Linear (q | k | v, heads inside each
// block of M = H * D); bias (B, L, Lp) additive mask, 0 where query i sees key j and
// -inf elsewhere, Lp a multiple of lanes() with columns >= L at -inf; out (B, L, M);
// probs (B, H, L, Lp), kept for the backward pass. A query that sees no key gets 0.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <vector>

namespace pvg_attention {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

float sum_lanes(Vec v) {
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, v);
}

// Keys and values of one (batch, head), transposed to (D, Lp) rows, zero-padded.
void gather_transposed(const float* xb, int64_t L, int64_t M, int64_t D, int64_t h,
                       int64_t Lp, std::vector<float>& kt, std::vector<float>& vt) {
  std::fill(kt.begin(), kt.end(), 0.f);
  std::fill(vt.begin(), vt.end(), 0.f);
  for (int64_t j = 0; j < L; ++j) {
    const float* token = xb + j * 3 * M + h * D;
    for (int64_t d = 0; d < D; ++d) {
      kt[d * Lp + j] = token[M + d];
      vt[d * Lp + j] = token[2 * M + d];
    }
  }
}

}  // namespace

int64_t lanes() { return kLanes; }

// Scratch space of attend_row, allocated once per thread.
struct RowBuffers {
  std::vector<float> mask_t, qt, scores, lanes_out;
  RowBuffers(int64_t L, int64_t Lq, int64_t D)
      : mask_t(L * Lq), qt(D * Lq), scores(L * kLanes), lanes_out(kLanes) {}
};

// Attention of one batch row: xb (L, 3 * M) its q | k | v, mask (L, Lp) its bias
// rows; writes ob (L, M) and, unless null, Pb (H, L, Lp). Lq is L rounded up to
// whole vectors: the queries sit in the lanes, so softmax and the value sums need no
// reduction across lanes.
void attend_row(const float* xb, const float* mask, int64_t L, int64_t Lp, int64_t Lq,
                int64_t M, int64_t H, float s, float* ob, float* Pb, RowBuffers& buf) {
  const int64_t D = M / H;
  const float minus_inf = -std::numeric_limits<float>::infinity();
  std::vector<float>& mask_t = buf.mask_t;
  std::vector<float>& qt = buf.qt;
  std::vector<float>& scores = buf.scores;
  std::vector<float>& lanes_out = buf.lanes_out;
  // The mask transposed to (key, query), padding queries masked everywhere.
  for (int64_t j = 0; j < L; ++j)
    for (int64_t i = 0; i < Lq; ++i)
      mask_t[j * Lq + i] = i < L ? mask[i * Lp + j] : minus_inf;
  for (int64_t h = 0; h < H; ++h) {
    // Scaled queries transposed to (d, query), zero-padded.
    std::fill(qt.begin(), qt.end(), 0.f);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < D; ++d) qt[d * Lq + i] = xb[i * 3 * M + h * D + d] * s;
    const float* keys = xb + M + h * D;
    const float* values = xb + 2 * M + h * D;
    for (int64_t i0 = 0; i0 < Lq; i0 += kLanes) {
      Vec top(minus_inf);
      for (int64_t j = 0; j < L; ++j) {
        Vec score = Vec::loadu(&mask_t[j * Lq + i0]);
        for (int64_t d = 0; d < D; ++d)
          score = at::vec::fmadd(Vec::loadu(&qt[d * Lq + i0]),
                                 Vec(keys[j * 3 * M + d]), score);
        score.store(&scores[j * kLanes]);
        top = at::vec::maximum(top, score);
      }
      Vec total(0.f);
      for (int64_t j = 0; j < L; ++j) {
        Vec e = (Vec::loadu(&scores[j * kLanes]) - top).exp_u20();
        // Masked keys are exactly 0 (and no NaN when a query sees no key).
        e = Vec::blendv(e, Vec(0.f), Vec::loadu(&mask_t[j * Lq + i0]) < Vec(0.f));
        e.store(&scores[j * kLanes]);
        total = total + e;
      }
      const Vec inverse =
          Vec::blendv(Vec(1.f) / total, Vec(0.f), total <= Vec(0.f));
      const int64_t count = std::min(kLanes, L - i0);
      for (int64_t d = 0; d < D; ++d) {
        Vec acc(0.f);
        for (int64_t j = 0; j < L; ++j)
          acc = at::vec::fmadd(Vec::loadu(&scores[j * kLanes]),
                               Vec(values[j * 3 * M + d]), acc);
        (acc * inverse).store(lanes_out.data());
        for (int64_t k = 0; k < count; ++k) ob[(i0 + k) * M + h * D + d] = lanes_out[k];
      }
      if (Pb != nullptr) {
        // Probabilities as (query, key) rows, one 8 x 8 block transposed in
        // registers at a time; padding keys' probabilities are 0 (the backward pass
        // reads them).
        float* Ph = Pb + (h * L + i0) * Lp;
        alignas(32) float block[kLanes * kLanes], rows[kLanes * kLanes];
        for (int64_t j0 = 0; j0 < Lp; j0 += kLanes) {
          for (int64_t jj = 0; jj < kLanes; ++jj) {
            const int64_t j = j0 + jj;
            (j < L ? Vec::loadu(&scores[j * kLanes]) * inverse : Vec(0.f))
                .store(block + jj * kLanes);
          }
          at::vec::transpose_mxn<float, kLanes, kLanes>(block, kLanes, rows, kLanes);
          for (int64_t k = 0; k < count; ++k)
            Vec::loadu(rows + k * kLanes).store(Ph + k * Lp + j0);
        }
      }
    }
  }
}

std::vector<torch::Tensor> attention_forward(const torch::Tensor& qkv,
                                             const torch::Tensor& bias, int64_t H,
                                             double scale, bool keep_probs) {
  pvg_gin::check(qkv, "qkv", 3);
  pvg_gin::check(bias, "bias", 3);
  const int64_t B = qkv.size(0), L = qkv.size(1), M = qkv.size(2) / 3, D = M / H;
  const int64_t Lp = bias.size(2);
  TORCH_CHECK(M * 3 == qkv.size(2) && D * H == M, "qkv's last size must be 3 * heads * d");
  TORCH_CHECK(bias.size(0) == B && bias.size(1) == L && Lp % kLanes == 0 && Lp >= L,
              "bias must be (batch, tokens, tokens padded to lanes())");
  auto out = torch::empty({B, L, M}, qkv.options());
  auto probs = torch::empty({keep_probs ? B : 0, H, L, Lp}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  const float* mask = bias.data_ptr<float>();
  float* o = out.data_ptr<float>();
  float* P = keep_probs ? probs.data_ptr<float>() : nullptr;
  const int64_t Lq = (L + kLanes - 1) / kLanes * kLanes;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowBuffers buf(L, Lq, D);
    for (int64_t b = begin; b < end; ++b)
      attend_row(x + b * L * 3 * M, mask + b * L * Lp, L, Lp, Lq, M, H,
                 static_cast<float>(scale), o + b * L * M,
                 P == nullptr ? nullptr : P + b * H * L * Lp, buf);
  });
  return {out, probs};
}

// Scratch space of attend_row_backward, allocated once per thread.
struct HeadBuffers {
  std::vector<float> kt, vt, dkt, dvt, dS;
  HeadBuffers(int64_t L, int64_t Lp, int64_t D)
      : kt(D * Lp), vt(D * Lp), dkt(D * Lp), dvt(D * Lp), dS(L * Lp) {}
};

// Gradient of attend_row for head h of one batch row: xb (L, 3 * M) its q | k | v,
// Ph (L, Lp) the head's kept probabilities, go (L, M) the output's gradient; writes
// the head's columns of gb (L, 3 * M).
void attend_row_backward(const float* xb, const float* Ph, const float* go, int64_t L,
                         int64_t Lp, int64_t M, int64_t H, int64_t h, float scale,
                         float* gb, HeadBuffers& buf) {
  const int64_t D = M / H;
  const Vec s(scale);
  gather_transposed(xb, L, M, D, h, Lp, buf.kt, buf.vt);
  const float* kt = buf.kt.data();
  const float* vt = buf.vt.data();
  for (int64_t i = 0; i < L; ++i) {
    const float* Pi = Ph + i * Lp;
    const float* goi = go + i * M + h * D;
    float* ds = &buf.dS[i * Lp];
    // dP_ij = go . v_j ; softmax backward: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik).
    Vec weighted(0.f);
    for (int64_t j = 0; j < Lp; j += kLanes) {
      Vec dp(0.f);
      for (int64_t d = 0; d < D; ++d)
        dp = at::vec::fmadd(Vec(goi[d]), Vec::loadu(&vt[d * Lp + j]), dp);
      dp.store(ds + j);
      weighted = at::vec::fmadd(Vec::loadu(Pi + j), dp, weighted);
    }
    const Vec dot(sum_lanes(weighted));
    for (int64_t j = 0; j < Lp; j += kLanes)
      (Vec::loadu(Pi + j) * (Vec::loadu(ds + j) - dot) * s).store(ds + j);
    // dq_i = sum_j dS_ij k_j
    float* gq = gb + i * 3 * M + h * D;
    for (int64_t d = 0; d < D; ++d) {
      Vec acc(0.f);
      for (int64_t j = 0; j < Lp; j += kLanes)
        acc = at::vec::fmadd(Vec::loadu(ds + j), Vec::loadu(&kt[d * Lp + j]), acc);
      gq[d] = sum_lanes(acc);
    }
  }
  // dk_j = sum_i dS_ij q_i ; dv_j = sum_i P_ij go_i: (D, Lp) products over the
  // queries in register tiles (updating dk and dv in memory query by query was
  // slower).
  pvg_gin::gemm(xb + h * D, 1, 3 * M, D, L, buf.dS.data(), Lp, Lp, nullptr,
                buf.dkt.data(), Lp, false, false);
  pvg_gin::gemm(go + h * D, 1, M, D, L, Ph, Lp, Lp, nullptr, buf.dvt.data(), Lp, false,
                false);
  for (int64_t j = 0; j < L; ++j) {
    float* token = gb + j * 3 * M + h * D;
    for (int64_t d = 0; d < D; ++d) {
      token[M + d] = buf.dkt[d * Lp + j];
      token[2 * M + d] = buf.dvt[d * Lp + j];
    }
  }
}

torch::Tensor attention_backward(const torch::Tensor& grad_out_in,
                                 const torch::Tensor& qkv, const torch::Tensor& probs,
                                 int64_t H, double scale) {
  const torch::Tensor grad_out = grad_out_in.contiguous();
  pvg_gin::check(grad_out, "grad_out", 3);
  pvg_gin::check(qkv, "qkv", 3);
  pvg_gin::check(probs, "probs", 4);
  const int64_t B = qkv.size(0), L = qkv.size(1), M = qkv.size(2) / 3, D = M / H;
  const int64_t Lp = probs.size(3);
  auto grad = torch::empty_like(qkv);
  const float* x = qkv.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  const float* P = probs.data_ptr<float>();
  float* gx = grad.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    HeadBuffers buf(L, Lp, D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      attend_row_backward(x + b * L * 3 * M, P + bh * L * Lp, g + b * L * M, L, Lp, M,
                          H, h, static_cast<float>(scale), gx + b * L * 3 * M, buf);
    }
  });
  return grad;
}

}  // namespace pvg_attention
