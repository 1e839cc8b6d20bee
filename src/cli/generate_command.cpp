// nuri generate: continue a prompt with a trained model file.
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/commands.hpp"
#include "nuri/backend.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace nuri::cli {

namespace {
struct GenerateOptions {
  std::string model_path;
  std::string prompt;
  std::string tokenizer;  // empty: tokenizer.json beside the model file if there is one, else bytes
  SampleOptions sample;
  int threads = 0;
};
}  // namespace

void add_generate_command(CLI::App& app) {
  auto opt = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Continue a prompt with a trained model");
  cmd->add_option("-m,--model", opt->model_path, "Model file written by nuri train (run_dir/model.bin)")
      ->required();
  cmd->add_option("-p,--prompt", opt->prompt, "Text to continue (UTF-8)");
  cmd->add_option("-n,--max-tokens", opt->sample.max_tokens, "Most tokens to generate")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-t,--temperature", opt->sample.temperature, "0 = greedy")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("-k,--top-k", opt->sample.top_k, "Sample from the k most likely tokens (0 = all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", opt->sample.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--tokenizer", opt->tokenizer,
                  "Tokenizer the model was trained with: \"bytes\" or a tokenizer file (default: "
                  "tokenizer.json beside the model file, which nuri train writes, else bytes)");
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->callback([opt] {
    const ModelConfig cfg = read_model_config(opt->model_path);
    std::unique_ptr<Backend> backend = make_backend("cpu", opt->threads);
    Model model(cfg, *backend);
    load_model_weights(opt->model_path, model);
    std::string tok_name = opt->tokenizer;
    if (tok_name.empty()) {
      const auto beside = std::filesystem::path(opt->model_path).parent_path() / "tokenizer.json";
      tok_name = std::filesystem::exists(beside) ? beside.string() : "bytes";
    }
    std::unique_ptr<Tokenizer> tok = make_tokenizer(tok_name);
    NURI_CHECK(tok->vocab_size() <= cfg.vocab_size, config, "generate",
               "the tokenizer '" << tok_name << "' has " << tok->vocab_size() << " tokens but the model '"
               << opt->model_path << "' only " << cfg.vocab_size << "; give the tokenizer the model was "
               << "trained with (--tokenizer)");
    const std::vector<int32_t> ids = sample(model, tok->encode(opt->prompt), opt->sample, tok->eot_id());
    std::printf("%s\n", sanitize_utf8(opt->prompt + tok->decode(ids)).c_str());
  });
}

}  // namespace nuri::cli
