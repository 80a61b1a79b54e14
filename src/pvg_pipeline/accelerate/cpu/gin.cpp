// Fused dense GIN layer on the CPU, forward and backward:
//   out = mask * (relu(agg W1^T + b1) W2^T + b2),   agg = (1 + eps) h + A h.
//
// PyTorch does this as ~8 operations per layer, each a pass over (rows, nodes, 64)
// intermediates, and computes the padding nodes too. Here each graph is done in one
// go in small buffers that stay in cache, only on its real nodes, with
// register-tiled products (3 rows x 4 vectors of accumulators, 6 x 2 for the
// 16-wide outputs); the weight gradients are one product per chunk of graphs.
//
// Layouts (all contiguous float32 unless said): h (B, 2, N, Din); adjacency
// (B, 2, N, N); mask (B, 2, N) bool, real nodes; w1t (Din, H) and w2t (H, Dout) the
// transposed Linear weights for the forward pass, w1 (H, Din) and w2 (Dout, H) as
// stored for the backward one; Din, H and Dout multiples of lanes(). The forward
// pass can keep agg (R, Din) and the hidden activations (R, H) of the R real nodes,
// graph after graph, for the backward pass.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

namespace pvg_gin {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

// out[R, C*lanes] (+)= a[R, K] @ w[K, C*lanes] (+ bias), optional relu.
// a(r, k) = a[r * a_row + k * a_k]; w rows of stride ldw; out rows of stride ldo.
template <int R, int C>
inline void tile(const float* a, int64_t a_row, int64_t a_k, int64_t K, const float* w,
                 int64_t ldw, const float* bias, float* out, int64_t ldo, bool accumulate,
                 bool relu) {
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      acc[r][c] = accumulate ? Vec::loadu(out + r * ldo + c * kLanes)
                             : (bias ? Vec::loadu(bias + c * kLanes) : Vec(0.f));
  for (int64_t k = 0; k < K; ++k) {
    Vec wk[C];
    for (int c = 0; c < C; ++c) wk[c] = Vec::loadu(w + k * ldw + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec ar(a[r * a_row + k * a_k]);
      for (int c = 0; c < C; ++c) acc[r][c] = at::vec::fmadd(ar, wk[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      Vec v = acc[r][c];
      if (relu) v = at::vec::clamp_min(v, Vec(0.f));
      v.store(out + r * ldo + c * kLanes);
    }
}

// Rows of one block of C vector columns, R rows at a time (then the remainder).
// R * C is ~12 accumulators: enough independent FMA chains to hide their latency,
// few enough to stay in the 16 vector registers.
template <int C, int R>
inline void column_block(const float* a, int64_t a_row, int64_t a_k, int64_t rows,
                         int64_t K, const float* w, int64_t ldw, const float* bias,
                         float* out, int64_t ldo, bool accumulate, bool relu) {
  int64_t r = 0;
  for (; r + R <= rows; r += R)
    tile<R, C>(a + r * a_row, a_row, a_k, K, w, ldw, bias, out + r * ldo, ldo,
               accumulate, relu);
  const float* ar = a + r * a_row;
  float* o = out + r * ldo;
  switch (rows - r) {
    case 5: if constexpr (R > 5) tile<5, C>(ar, a_row, a_k, K, w, ldw, bias, o, ldo, accumulate, relu); break;
    case 4: if constexpr (R > 4) tile<4, C>(ar, a_row, a_k, K, w, ldw, bias, o, ldo, accumulate, relu); break;
    case 3: if constexpr (R > 3) tile<3, C>(ar, a_row, a_k, K, w, ldw, bias, o, ldo, accumulate, relu); break;
    case 2: if constexpr (R > 2) tile<2, C>(ar, a_row, a_k, K, w, ldw, bias, o, ldo, accumulate, relu); break;
    case 1: tile<1, C>(ar, a_row, a_k, K, w, ldw, bias, o, ldo, accumulate, relu); break;
    default: break;
  }
}

// out[rows, cols] (+)= a[rows, K] @ w[K, cols] (+ bias, then relu); cols a multiple
// of lanes; a(r, k) = a[r * a_row + k * a_k].
void gemm(const float* a, int64_t a_row, int64_t a_k, int64_t rows, int64_t K,
          const float* w, int64_t ldw, int64_t cols, const float* bias, float* out,
          int64_t ldo, bool accumulate, bool relu) {
  int64_t c = 0;
  const auto at = [&](int64_t col) { return bias ? bias + col : nullptr; };
  for (; c + 4 * kLanes <= cols; c += 4 * kLanes)
    column_block<4, 3>(a, a_row, a_k, rows, K, w + c, ldw, at(c), out + c, ldo,
                       accumulate, relu);
  for (; c + 2 * kLanes <= cols; c += 2 * kLanes)
    column_block<2, 6>(a, a_row, a_k, rows, K, w + c, ldw, at(c), out + c, ldo,
                       accumulate, relu);
  for (; c < cols; c += kLanes)
    column_block<1, 6>(a, a_row, a_k, rows, K, w + c, ldw, at(c), out + c, ldo,
                       accumulate, relu);
}

void check(const torch::Tensor& t, const char* name, int64_t dims,
           at::ScalarType type = torch::kFloat) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == type, name, " has the wrong dtype");
  TORCH_CHECK(t.dim() == dims && t.is_contiguous(), name, " must be a contiguous ",
              dims, "-d tensor");
}

// The real nodes of one graph; returns their count.
int64_t real_nodes(const bool* mask, int64_t N, std::vector<int64_t>& real) {
  int64_t n = 0;
  for (int64_t i = 0; i < N; ++i)
    if (mask[i]) real[n++] = i;
  return n;
}

// Where each graph's real rows start in the compact layout (real nodes of every
// graph one after the other); the last entry is the total.
std::vector<int64_t> compact_offsets(const bool* mask, int64_t B, int64_t N) {
  std::vector<int64_t> offset(B + 1, 0);
  for (int64_t g = 0; g < B; ++g) {
    int64_t n = 0;
    for (int64_t i = 0; i < N; ++i) n += mask[g * N + i];
    offset[g + 1] = offset[g] + n;
  }
  return offset;
}

}  // namespace

void check_inputs(const torch::Tensor& h, const torch::Tensor& adj,
                  const torch::Tensor& mask) {
  check(h, "h", 4);
  check(adj, "adjacency", 4);
  check(mask, "mask", 3, torch::kBool);
  const int64_t N = h.size(2);
  TORCH_CHECK(adj.size(0) == h.size(0) && adj.size(1) == h.size(1) &&
                  adj.size(2) == N && adj.size(3) == N,
              "adjacency must be (batch, graph, node, node) like h");
  TORCH_CHECK(mask.size(0) == h.size(0) && mask.size(1) == h.size(1) &&
                  mask.size(2) == N,
              "mask must be (batch, graph, node) like h");
  TORCH_CHECK(h.size(3) % kLanes == 0, "feature size must be a multiple of lanes()");
}

// Returns out (B, 2, N, Dout), and agg and the hidden activations when keep (else
// empty tensors).
std::vector<torch::Tensor> gin_forward(const torch::Tensor& h, const torch::Tensor& adj,
                                       const torch::Tensor& mask, double eps,
                                       const torch::Tensor& w1t, const torch::Tensor& b1,
                                       const torch::Tensor& w2t, const torch::Tensor& b2,
                                       bool keep) {
  check_inputs(h, adj, mask);
  check(w1t, "w1t", 2);
  check(w2t, "w2t", 2);
  check(b1, "b1", 1);
  check(b2, "b2", 1);
  const int64_t B = h.size(0) * h.size(1), N = h.size(2), Din = h.size(3);
  const int64_t H = w1t.size(1), Dout = w2t.size(1);
  TORCH_CHECK(w1t.size(0) == Din && b1.size(0) == H && w2t.size(0) == H &&
                  b2.size(0) == Dout && H % kLanes == 0 && Dout % kLanes == 0,
              "weights must be (Din, H), (H), (H, Dout), (Dout), H and Dout "
              "multiples of lanes()");
  auto out = torch::empty({h.size(0), h.size(1), N, Dout}, h.options());
  const bool* mp = mask.data_ptr<bool>();
  const std::vector<int64_t> offset = compact_offsets(mp, B, N);
  auto agg_all = torch::empty({keep ? offset[B] : 0, Din}, h.options());
  auto hid_all = torch::empty({keep ? offset[B] : 0, H}, h.options());
  const float* hp = h.data_ptr<float>();
  const float* ap = adj.data_ptr<float>();
  const float* w1 = w1t.data_ptr<float>();
  const float* w2 = w2t.data_ptr<float>();
  const float* bias1 = b1.data_ptr<float>();
  const float* bias2 = b2.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* agg_kept = keep ? agg_all.data_ptr<float>() : nullptr;
  float* hid_kept = keep ? hid_all.data_ptr<float>() : nullptr;
  const float scale = 1.f + static_cast<float>(eps);
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> agg_buffer(N * Din), hid_buffer(N * H), res(N * Dout),
        arows(N * N);
    std::vector<int64_t> real(N);
    for (int64_t g = begin; g < end; ++g) {
      const float* hg = hp + g * N * Din;
      const float* ag = ap + g * N * N;
      const int64_t n = real_nodes(mp + g * N, N, real);
      // Kept activations are computed in place, in the compact layout.
      float* agg = keep ? agg_kept + offset[g] * Din : agg_buffer.data();
      float* hid = keep ? hid_kept + offset[g] * H : hid_buffer.data();
      // agg = (1 + eps) h + A h on the real rows (A h over every node, as PyTorch).
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = real[r];
        std::copy(ag + i * N, ag + (i + 1) * N, &arows[r * N]);
        for (int64_t d = 0; d < Din; d += kLanes)
          (Vec::loadu(hg + i * Din + d) * Vec(scale)).store(agg + r * Din + d);
      }
      gemm(arows.data(), N, 1, n, N, hg, Din, Din, nullptr, agg, Din, true, false);
      gemm(agg, Din, 1, n, Din, w1, H, H, bias1, hid, H, false, true);
      gemm(hid, H, 1, n, H, w2, Dout, Dout, bias2, res.data(), Dout, false, false);
      float* og = op + g * N * Dout;
      std::fill(og, og + N * Dout, 0.f);
      for (int64_t r = 0; r < n; ++r)
        std::copy(&res[r * Dout], &res[(r + 1) * Dout], og + real[r] * Dout);
    }
  });
  return {out, agg_all, hid_all};
}

// Gradients of gin_forward with respect to h, W1, b1, W2, b2 and eps (the
// adjacency and the mask are data). The weight gradients are summed per fixed chunk
// of graphs and the chunks added in order, so they do not depend on the number of
// threads.
std::vector<torch::Tensor> gin_backward(const torch::Tensor& grad_out_in,
                                        const torch::Tensor& h, const torch::Tensor& adj,
                                        const torch::Tensor& mask, double eps,
                                        const torch::Tensor& w1, const torch::Tensor& w2,
                                        const torch::Tensor& agg_all,
                                        const torch::Tensor& hid_all) {
  const torch::Tensor grad_out = grad_out_in.contiguous();
  check_inputs(h, adj, mask);
  check(grad_out, "grad_out", 4);
  check(w1, "w1", 2);
  check(w2, "w2", 2);
  const int64_t B = h.size(0) * h.size(1), N = h.size(2), Din = h.size(3);
  const int64_t H = w1.size(0), Dout = w2.size(0);
  const bool* mp = mask.data_ptr<bool>();
  const std::vector<int64_t> offset = compact_offsets(mp, B, N);
  TORCH_CHECK(agg_all.numel() == offset[B] * Din && hid_all.numel() == offset[B] * H &&
                  grad_out.size(3) == Dout,
              "the backward pass needs the forward pass's kept activations");
  constexpr int64_t kChunk = 32;
  const int64_t chunks = (B + kChunk - 1) / kChunk;
  // Per chunk: dW1 (H, Din) | db1 (H) | dW2 (Dout, H) | db2 (Dout) | deps (1).
  const int64_t width = H * Din + H + Dout * H + Dout + 1;
  // At least one row: an empty batch has zero gradients.
  auto partial = torch::zeros({std::max<int64_t>(chunks, 1), width}, h.options());
  auto grad_h = torch::empty_like(h);
  const float* go = grad_out.data_ptr<float>();
  const float* hp = h.data_ptr<float>();
  const float* ap = adj.data_ptr<float>();
  const float* w1p = w1.data_ptr<float>();
  const float* w2p = w2.data_ptr<float>();
  const float* aggp = agg_all.data_ptr<float>();
  const float* hidp = hid_all.data_ptr<float>();
  float* part = partial.data_ptr<float>();
  float* gh = grad_h.data_ptr<float>();
  const float scale = 1.f + static_cast<float>(eps);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    // The real rows of a whole chunk are contiguous in the compact layout, so the
    // weight gradients are one product over all of them.
    std::vector<float> dy(kChunk * N * Dout), dpre(kChunk * N * H), dagg(kChunk * N * Din);
    std::vector<int64_t> real(N);
    for (int64_t c = begin; c < end; ++c) {
      float* dW1 = part + c * width;
      float* db1 = dW1 + H * Din;
      float* dW2 = db1 + H;
      float* db2 = dW2 + Dout * H;
      float* deps = db2 + Dout;
      const int64_t first = c * kChunk, last = std::min(B, (c + 1) * kChunk);
      const int64_t rows = offset[last] - offset[first];
      const float* hid = hidp + offset[first] * H;
      const float* agg = aggp + offset[first] * Din;
      for (int64_t g = first, r = 0; g < last; ++g) {
        const int64_t n = real_nodes(mp + g * N, N, real);
        for (int64_t k = 0; k < n; ++k, ++r) {
          const int64_t row = g * N + real[k];
          std::copy(go + row * Dout, go + (row + 1) * Dout, &dy[r * Dout]);
        }
      }
      // Second linear: dW2 += dy^T hid, db2 += sum dy, d(hidden) = dy W2.
      gemm(dy.data(), 1, Dout, Dout, rows, hid, H, H, nullptr, dW2, H, true, false);
      gemm(dy.data(), Dout, 1, rows, Dout, w2p, H, H, nullptr, dpre.data(), H, false,
           false);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < Dout; o += kLanes)
          (Vec::loadu(db2 + o) + Vec::loadu(&dy[r * Dout + o])).store(db2 + o);
        // ReLU passes the gradient where its output is positive (as PyTorch).
        for (int64_t k = 0; k < H; k += kLanes) {
          const Vec passed =
              Vec::loadu(&dpre[r * H + k]) & (Vec::loadu(hid + r * H + k) > Vec(0.f));
          passed.store(&dpre[r * H + k]);
          (Vec::loadu(db1 + k) + passed).store(db1 + k);
        }
      }
      // First linear: dW1 += dpre^T agg, db1 (above), d(agg) = dpre W1.
      gemm(dpre.data(), 1, H, H, rows, agg, Din, Din, nullptr, dW1, Din, true, false);
      gemm(dpre.data(), H, 1, rows, H, w1p, Din, Din, nullptr, dagg.data(), Din, false,
           false);
      // Aggregation: deps += sum dagg . h, dh = (1 + eps) dagg + A^T dagg.
      std::fill(gh + first * N * Din, gh + last * N * Din, 0.f);
      Vec e(0.f);
      for (int64_t g = first, r = 0; g < last; ++g) {
        const int64_t n = real_nodes(mp + g * N, N, real);
        float* ghg = gh + g * N * Din;
        for (int64_t k = 0; k < n; ++k, ++r) {
          const int64_t i = real[k];
          const float* arow = ap + (g * N + i) * N;
          for (int64_t d = 0; d < Din; d += kLanes) {
            const Vec grad = Vec::loadu(&dagg[r * Din + d]);
            e = at::vec::fmadd(grad, Vec::loadu(hp + (g * N + i) * Din + d), e);
            (Vec::loadu(ghg + i * Din + d) + grad * Vec(scale)).store(ghg + i * Din + d);
            for (int64_t j = 0; j < N; ++j)
              at::vec::fmadd(Vec(arow[j]), grad, Vec::loadu(ghg + j * Din + d))
                  .store(ghg + j * Din + d);
          }
        }
      }
      deps[0] += at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, e);
    }
  });
  // Chunks added in order: the same sums for any thread count.
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t k = 0; k < width; ++k) part[k] += part[c * width + k];
  auto total = partial[0];
  return {grad_h,
          total.narrow(0, 0, H * Din).view({H, Din}),
          total.narrow(0, H * Din, H),
          total.narrow(0, H * Din + H, Dout * H).view({Dout, H}),
          total.narrow(0, H * Din + H + Dout * H, Dout),
          total.narrow(0, width - 1, 1).squeeze(0)};
}

}  // namespace pvg_gin
