// Autoregressive sampling with temperature and top-k.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/rng.hpp"
#include "nuri/train.hpp"

namespace nuri {

std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt,
                            const SampleOptions& opt, int eot_id) {
  const ModelConfig& cfg = model.config();
  const int V = cfg.vocab_size;
  std::vector<int32_t> seq = prompt;
  if (seq.empty()) seq.push_back(eot_id);  // an empty prompt starts a new document
  const size_t skip = prompt.empty() ? 1 : prompt.size();  // return only the new tokens
  Rng rng(opt.seed);
  std::vector<float> logits;
  std::vector<int> order(V);
  std::vector<double> prob(V);
  for (int n = 0; n < opt.max_tokens; ++n) {
    // The model sees at most max_seq_len tokens: the most recent ones.
    const int T = int(std::min<size_t>(seq.size(), size_t(cfg.max_seq_len)));
    const int32_t* window = seq.data() + (seq.size() - size_t(T));
    logits.resize(size_t(T) * V);
    model.forward_logits(logits.data(), window, 1, T);
    const float* last = logits.data() + size_t(T - 1) * V;
    int next = 0;
    if (opt.temperature <= 0) {
      next = int(std::max_element(last, last + V) - last);
    } else {
      std::iota(order.begin(), order.end(), 0);
      const int k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int a, int b) { return last[a] > last[b]; });
      const double mx = last[order[0]];
      double total = 0;
      for (int i = 0; i < k; ++i) total += prob[i] = std::exp((last[order[i]] - mx) / opt.temperature);
      double u = rng.uniform() * total;
      next = order[k - 1];
      for (int i = 0; i < k; ++i) {
        if ((u -= prob[i]) <= 0) {
          next = order[i];
          break;
        }
      }
    }
    if (next == eot_id) break;
    seq.push_back(next);
  }
  return std::vector<int32_t>(seq.begin() + std::ptrdiff_t(skip), seq.end());
}

}  // namespace nuri
