// The PPO loss of one minibatch and its gradient, in one pass on the CPU.
//
// From an agent's node logits (B, L) (-inf at padding), its decision logits (B, 3)
// (the verifier; an empty tensor for a prover) and its values (B): the clipped
// surrogate, the value loss and the entropy bonus of update_step.py's plain path,
// ~40 small PyTorch operations forward and as many autograd nodes backward. The
// loss is the end of the graph, so its gradients with respect to the three inputs
// are computed here too, in the forward pass; the backward pass only scales them.
//
// Rows are all real (the eager path). Sums run in row order in double precision:
// the result does not depend on the thread count.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace pvg_loss {
namespace {

// log_softmax of one row of n logits into lp; returns the entropy (impossible
// entries, p = 0, contribute 0) and writes each entry's probability into p.
double row_softmax(const float* z, int64_t n, const bool* blocked, float* lp, float* p) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < n; ++k)
    if (!(blocked && blocked[k])) top = std::max(top, z[k]);
  double total = 0.0;
  for (int64_t k = 0; k < n; ++k)
    if (!(blocked && blocked[k])) total += std::exp(static_cast<double>(z[k]) - top);
  const double log_total = std::log(total) + top;
  double entropy = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const bool masked = (blocked && blocked[k]) || std::isinf(z[k]);
    lp[k] = masked ? -std::numeric_limits<float>::infinity()
                   : static_cast<float>(z[k] - log_total);
    p[k] = masked ? 0.f : std::exp(lp[k]);
    if (p[k] > 0.f) entropy -= static_cast<double>(p[k]) * lp[k];
  }
  return entropy;
}

// Gradient of (a * log p[chosen] + b * entropy) with respect to the logits of one
// row, given its log-probabilities, probabilities and entropy.
void row_gradient(const float* lp, const float* p, int64_t n, int64_t chosen, double a,
                  double b, double entropy, float* grad) {
  for (int64_t k = 0; k < n; ++k) {
    // d log p_c / dz_k = [k = c] - p_k ; d H / dz_k = -p_k (log p_k + H).
    double g = -a * p[k];
    if (p[k] > 0.f) g -= b * p[k] * (lp[k] + entropy);
    if (k == chosen) g += a;
    grad[k] = static_cast<float>(g);
  }
}

}  // namespace

// Returns loss (), reported (4): policy loss, value loss, entropy and decision
// entropy (means), and the loss's gradients with respect to node_logits,
// decision_logits and value.
std::vector<torch::Tensor> ppo_loss(const torch::Tensor& node_logits,
                                    const torch::Tensor& decision_logits,
                                    const torch::Tensor& value, const torch::Tensor& node,
                                    const torch::Tensor& decision,
                                    const torch::Tensor& decision_allowed,
                                    const torch::Tensor& old_log_prob,
                                    const torch::Tensor& advantage,
                                    const torch::Tensor& target, int64_t continue_index,
                                    double clip_epsilon, double value_coefficient,
                                    double entropy_coefficient, bool normalize_advantage) {
  pvg_gin::check(node_logits, "node_logits", 2);
  const int64_t B = node_logits.size(0), L = node_logits.size(1);
  const bool verifier = decision_logits.numel() > 0;
  TORCH_CHECK(B > 0, "the PPO loss needs at least one row");
  pvg_gin::check(value, "value", 1);
  pvg_gin::check(old_log_prob, "old_log_prob", 1);
  pvg_gin::check(advantage, "advantage", 1);
  pvg_gin::check(target, "target", 1);
  pvg_gin::check(node, "node", 1, torch::kLong);
  const int64_t D = verifier ? decision_logits.size(1) : 0;
  if (verifier) {
    pvg_gin::check(decision_logits, "decision_logits", 2);
    pvg_gin::check(decision, "decision", 1, torch::kLong);
    pvg_gin::check(decision_allowed, "decision_allowed", 1, torch::kBool);
    TORCH_CHECK(decision_logits.size(0) == B && decision.size(0) == B &&
                    decision_allowed.size(0) == B && continue_index >= 0 &&
                    continue_index < D,
                "decision inputs must have one row per sample");
  }
  TORCH_CHECK(value.size(0) == B && old_log_prob.size(0) == B && advantage.size(0) == B &&
                  target.size(0) == B && node.size(0) == B,
              "every input must have one row per sample");
  const float* z = node_logits.data_ptr<float>();
  const float* zd = verifier ? decision_logits.data_ptr<float>() : nullptr;
  const float* v = value.data_ptr<float>();
  const int64_t* chosen = node.data_ptr<int64_t>();
  const int64_t* verdict = verifier ? decision.data_ptr<int64_t>() : nullptr;
  const bool* allowed = verifier ? decision_allowed.data_ptr<bool>() : nullptr;
  const float* old = old_log_prob.data_ptr<float>();
  const float* adv = advantage.data_ptr<float>();
  const float* t = target.data_ptr<float>();
  auto options = node_logits.options();
  auto grad_node = torch::empty({B, L}, options);
  auto grad_decision = torch::empty({verifier ? B : 0, D}, options);
  auto grad_value = torch::empty({B}, options);
  float* gn = grad_node.data_ptr<float>();
  float* gd = verifier ? grad_decision.data_ptr<float>() : nullptr;
  float* gv = grad_value.data_ptr<float>();

  // Advantage normalisation over the minibatch (unbiased std, as torch.std).
  double shift = 0.0, spread = 1.0;
  if (normalize_advantage && B > 1) {
    double mean = 0.0;
    for (int64_t i = 0; i < B; ++i) mean += adv[i];
    mean /= B;
    double squares = 0.0;
    for (int64_t i = 0; i < B; ++i) squares += (adv[i] - mean) * (adv[i] - mean);
    shift = mean;
    spread = std::sqrt(squares / (B - 1)) + 1e-8;
  }
  std::vector<float> lp(L), p(L), lpd(std::max<int64_t>(D, 1)), pd(std::max<int64_t>(D, 1));
  TORCH_CHECK(D <= 8, "at most 8 decisions");
  bool blocked[8];
  const double lo = 1.0 - clip_epsilon, hi = 1.0 + clip_epsilon;
  double policy_sum = 0.0, value_sum = 0.0, entropy_sum = 0.0, decision_entropy_sum = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    const float* zi = z + i * L;
    double entropy = row_softmax(zi, L, nullptr, lp.data(), p.data());
    double log_prob = lp[chosen[i]];
    double decision_entropy = 0.0;
    if (verifier) {
      // Verdicts that cannot count are impossible (restrict_decisions).
      for (int64_t k = 0; k < D; ++k) blocked[k] = k != continue_index && !allowed[i];
      decision_entropy = row_softmax(zd + i * D, D, blocked, lpd.data(), pd.data());
      log_prob += lpd[verdict[i]];
      entropy += decision_entropy;
    }
    const float a = static_cast<float>((adv[i] - shift) / spread);
    const float ratio = std::exp(static_cast<float>(log_prob - old[i]));
    const float clipped = std::min(std::max(ratio, static_cast<float>(lo)),
                                   static_cast<float>(hi));
    const float unclipped_term = ratio * a, clipped_term = clipped * a;
    policy_sum += std::min(unclipped_term, clipped_term);
    // torch.minimum splits the gradient on ties; clamp passes it inside [lo, hi].
    const double to_unclipped = unclipped_term < clipped_term    ? 1.0
                                : unclipped_term == clipped_term ? 0.5
                                                                 : 0.0;
    const bool inside = ratio >= static_cast<float>(lo) && ratio <= static_cast<float>(hi);
    const double d_ratio = a * (to_unclipped + (1.0 - to_unclipped) * (inside ? 1.0 : 0.0));
    // loss = -mean(surrogate) + c_v mean((v - t)^2) - c_e mean(entropy).
    const double d_log_prob = -d_ratio * ratio / B;
    const double d_entropy = -entropy_coefficient / B;
    row_gradient(lp.data(), p.data(), L, chosen[i], d_log_prob, d_entropy,
                 entropy - decision_entropy, gn + i * L);
    if (verifier)
      row_gradient(lpd.data(), pd.data(), D, verdict[i], d_log_prob, d_entropy,
                   decision_entropy, gd + i * D);
    const double error = static_cast<double>(v[i]) - t[i];
    value_sum += error * error;
    gv[i] = static_cast<float>(value_coefficient * 2.0 * error / B);
    entropy_sum += entropy;
    decision_entropy_sum += decision_entropy;
  }
  const double policy_loss = -policy_sum / B, value_loss = value_sum / B;
  const double entropy_mean = entropy_sum / B;
  auto reported = torch::empty({4}, options);
  float* r = reported.data_ptr<float>();
  r[0] = static_cast<float>(policy_loss);
  r[1] = static_cast<float>(value_loss);
  r[2] = static_cast<float>(entropy_mean);
  r[3] = static_cast<float>(decision_entropy_sum / B);
  auto loss = torch::empty({}, options);
  loss.data_ptr<float>()[0] = static_cast<float>(
      policy_loss + value_coefficient * value_loss - entropy_coefficient * entropy_mean);
  return {loss, reported, grad_node, grad_decision, grad_value};
}

}  // namespace pvg_loss
