// Scores text with a trained model: loads a checkpoint (from any layout it was saved at) into one
// process, tokenizes a text file with the run's tokenizer, and prints the mean loss per token and
// the perplexity over consecutive windows of the model's context.
//
//   ./perplexity CHECKPOINT_OR_RUN_DIR TEXT_FILE [TOKENIZER]     (TOKENIZER: "bytes" or a .json)
//
// Prints one line: "tokens N  loss L nats/token  perplexity P". Errors (a damaged checkpoint, a
// missing file, a tokenizer the model cannot use) are nuri::Error with what and where.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nuri/nuri.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: perplexity CHECKPOINT_OR_RUN_DIR TEXT_FILE [TOKENIZER]\n");
    return 2;
  }
  try {
    const nuri::CheckpointManifest manifest = nuri::read_checkpoint(nuri::resolve_checkpoint(argv[1]));
    auto backend = nuri::make_backend("cpu");
    nuri::Model model(manifest.model, *backend);
    nuri::load_checkpoint(manifest, model, /*optimizer=*/nullptr);  // parameters only

    auto tokenizer = nuri::make_tokenizer(argc > 3 ? argv[3] : "bytes");
    NURI_CHECK(tokenizer->vocab_size() <= manifest.model.vocab_size, config, "perplexity",
               "the tokenizer has " << tokenizer->vocab_size() << " ids but the model only "
                                    << manifest.model.vocab_size);
    std::ifstream in(argv[2], std::ios::binary);
    NURI_CHECK(in.good(), io, "perplexity", "cannot read '" << argv[2] << "'");
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::vector<int32_t> ids = tokenizer->encode(buffer.str());

    const int T = manifest.model.max_seq_len;
    NURI_CHECK(ids.size() > 1, data, "perplexity", "'" << argv[2] << "' has fewer than 2 tokens");
    double loss_sum = 0;
    size_t scored = 0;
    for (size_t start = 0; start + 1 < ids.size(); start += size_t(T)) {
      const int n = int(std::min<size_t>(size_t(T), ids.size() - 1 - start));
      std::vector<int32_t> x(ids.begin() + long(start), ids.begin() + long(start) + n);
      std::vector<int32_t> y(ids.begin() + long(start) + 1, ids.begin() + long(start) + 1 + n);
      loss_sum += double(model.forward_loss(x.data(), y.data(), 1, n)) * n;
      scored += size_t(n);
    }
    const double loss = loss_sum / double(scored);
    std::printf("tokens %zu  loss %.4f nats/token  perplexity %.3f  (checkpoint step %lld)\n", scored, loss,
                std::exp(loss), (long long)manifest.state.step);
    return 0;
  } catch (const nuri::Error& e) {
    std::fprintf(stderr, "perplexity: %s\n", e.what());
    return 1;
  }
}
