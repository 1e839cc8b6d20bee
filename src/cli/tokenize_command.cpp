// nuri tokenize: text, JSONL and directories -> token shards + manifest.json, on threads and
// across mpirun ranks; `nuri tokenize --verify DIR` checks a directory end to end.
//
// Under mpirun each rank tokenizes a contiguous share of the work units (nuri/shards.hpp) into
// its own shards, then rank 0 gathers the shard lists in rank order (over the job's Communicator,
// comm.hpp) and writes the manifest. The token stream (shards in manifest order) is the same for
// any rank and thread count.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.hpp"
#include "comm/agree.hpp"
#include "nuri/comm.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/shards.hpp"
#include "nuri/text_source.hpp"
#include "nuri/timer.hpp"

namespace nuri::cli {

namespace {

namespace fs = std::filesystem;

struct TokenizeCliOptions {
  std::string tokenizer;
  std::string output;
  double val_fraction = 0.01;
  std::string jsonl_field = "text";
  std::string documents = "blank-line";
  uint64_t shard_tokens = 100'000'000;
  uint64_t unit_bytes = 32u << 20;
  int threads = 0;
  bool allow_invalid_utf8 = false;
  bool quiet = false;
  std::string verify_dir;
  std::vector<std::string> inputs;
};

// The job's ranks, over main()'s MPI environment (null: one process); a world of one needs no
// communicator.
class RankGroup {
 public:
  explicit RankGroup(const MpiEnvironment* mpi)
      : comm_(mpi && mpi->world_size() > 1 ? mpi->world() : nullptr),
        rank_(mpi ? mpi->world_rank() : 0),
        world_(mpi ? mpi->world_size() : 1) {}
  int rank() const { return rank_; }
  int world() const { return world_; }
  Communicator* comm() const { return comm_.get(); }  // null for one process

  // Rank 0 receives every rank's text in rank order; other ranks get an empty vector. The texts
  // travel as 8-byte words, each rank's padded to the longest (shard lists are small).
  std::vector<std::string> gather(const std::string& text) const {
    if (world_ == 1) return {text};
    const size_t n = size_t(world_);
    std::vector<int64_t> lens(n);
    const int64_t mine = int64_t(text.size());
    comm_->all_gather(&mine, lens.data(), n);
    const size_t words = size_t(*std::max_element(lens.begin(), lens.end()) + 7) / 8;
    if (words == 0) return rank_ == 0 ? std::vector<std::string>(n) : std::vector<std::string>{};
    std::vector<int64_t> padded(words, 0), all(words * n);
    std::memcpy(padded.data(), text.data(), text.size());
    comm_->all_gather(padded.data(), all.data(), all.size());
    std::vector<std::string> out;
    if (rank_ == 0)
      for (size_t r = 0; r < n; ++r)
        out.emplace_back(reinterpret_cast<const char*>(all.data() + r * words), size_t(lens[r]));
    return out;
  }

 private:
  std::shared_ptr<Communicator> comm_;
  int rank_ = 0, world_ = 1;
};

// `nuri tokenize`'s collective phases (src/comm/agree.hpp).
template <typename Fn>
void phase(const RankGroup& mpi, const char* what, Fn&& fn) {
  run_agreed(mpi.comm(), "tokenize", what, std::forward<Fn>(fn));
}

std::string serialize(const TokenizeResult& r) {
  std::ostringstream out;
  out << "bytes " << r.bytes_read << "\n";
  for (auto [name, split] : {std::pair<const char*, const ShardSplit*>{"train", &r.train}, {"val", &r.val}})
    for (const ShardEntry& e : split->shards) out << name << " " << e.file << " " << e.tokens << " " << e.documents << "\n";
  return out.str();
}

TokenizeResult deserialize(const std::string& text) {
  TokenizeResult r;
  std::istringstream in(text);
  std::string kind;
  while (in >> kind) {
    if (kind == "bytes") {
      in >> r.bytes_read;
      continue;
    }
    ShardEntry e;
    in >> e.file >> e.tokens >> e.documents;
    (kind == "train" ? r.train : r.val).shards.push_back(e);
  }
  return r;
}

std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// A progress line on stderr: redrawn in place on a terminal, every 10 s otherwise.
class Progress {
 public:
  Progress(uint64_t total_bytes, std::string label, bool enabled)
      : total_(total_bytes), label_(std::move(label)), enabled_(enabled), tty_(isatty(2)) {}
  void update(uint64_t bytes, uint64_t tokens, bool final = false) {
    if (!enabled_) return;
    const double now = clock_.seconds();
    if (!final && now - last_ < (tty_ ? 0.25 : 10.0)) return;
    last_ = now;
    const double mb = double(bytes) / 1e6, total_mb = double(total_) / 1e6;
    const int width = 24;
    const int filled = total_ ? int(double(bytes) / double(total_) * width + 0.5) : width;
    std::string bar(size_t(width), '.');
    for (int i = 0; i < std::min(filled, width); ++i) bar[size_t(i)] = '#';
    std::fprintf(stderr, "%stokenize%s [%s] %.1f/%.1f MB  %.1f MB/s  %s tokens%s", tty_ ? "\r" : "", label_.c_str(),
                 bar.c_str(), mb, total_mb, now > 0 ? mb / now : 0.0, with_commas(tokens).c_str(),
                 tty_ && !final ? "   " : "\n");
    std::fflush(stderr);
  }

 private:
  uint64_t total_;
  std::string label_;
  bool enabled_, tty_;
  Timer clock_;
  double last_ = 0;  // the first line after one interval (the summary covers short runs)
};

void verify_directory(const std::string& dir, const std::string& tokenizer_name) {
  std::unique_ptr<Tokenizer> tok;
  ShardCheck check;
  check.verify = true;
  if (!tokenizer_name.empty()) {
    tok = make_tokenizer(tokenizer_name);
    check.tokenizer = tok.get();
  }
  Timer clock;
  const ShardDataset ds = open_shard_dataset(dir, check);
  const ShardManifest& m = ds.manifest;
  uint64_t bytes = 0;
  for (const auto* split : {&ds.train, &ds.val})
    for (const auto& s : *split) bytes += kShardHeaderBytes + s->size() * s->header().dtype;
  std::printf("%s: tokenizer '%s' (hash 0x%016llx, vocab %llu), %s\n", dir.c_str(), m.tokenizer_name.c_str(),
              (unsigned long long)m.tokenizer_hash, (unsigned long long)m.vocab_size, m.created_by.c_str());
  for (auto [name, views, split] : {std::tuple<const char*, std::vector<TokenView>, const ShardSplit*>{
                                        "train", ds.train_views(), &m.train},
                                    {"val", ds.val_views(), &m.val}}) {
    std::printf("  %-5s %4zu shard(s) %15s tokens %12s documents  stream xxh64 0x%016llx\n", name,
                split->shards.size(), with_commas(split->tokens()).c_str(), with_commas(split->documents()).c_str(),
                (unsigned long long)token_stream_xxh64(views));
  }
  std::printf("ok: every shard matches its header checksum and the manifest (%.1f MB checked in %.2f s)\n",
              double(bytes) / 1e6, clock.seconds());
}

void run_tokenize(const TokenizeCliOptions& opt, const MpiEnvironment* env) {
  const RankGroup mpi(env);
  const int rank = mpi.rank(), world = mpi.world();
  const bool talk = rank == 0 && !opt.quiet;

  TokenizeOptions to;
  to.output_dir = opt.output;
  to.sources.jsonl_field = opt.jsonl_field;
  to.sources.text_documents = parse_document_split(opt.documents);
  to.sources.val_fraction = opt.val_fraction;
  to.sources.strict_utf8 = !opt.allow_invalid_utf8;
  to.shard_tokens = opt.shard_tokens;
  to.unit_bytes = opt.unit_bytes;
  int threads = opt.threads;
  if (threads <= 0) {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int local_ranks = local ? std::max(1, std::atoi(local)) : 1;
    threads = std::max(1, int(std::thread::hardware_concurrency()) / local_ranks);
  }
  to.threads = threads;

  std::unique_ptr<Tokenizer> tok;
  std::vector<TextFile> files;
  phase(mpi, "reading the inputs", [&] {
    tok = make_tokenizer(opt.tokenizer);
    files = list_text_files(opt.inputs, to.sources);
  });
  // Rank 0 clears what a previous run left: the manifest first, so the directory is never
  // described by a manifest that does not match its shards.
  phase(mpi, "preparing the output directory", [&] {
    std::error_code ec;
    fs::create_directories(opt.output, ec);
    NURI_CHECK(!ec && fs::is_directory(opt.output), io, "tokenize",
               "cannot create the output directory '" << opt.output << "': " << ec.message());
    if (rank != 0) return;
    fs::remove(fs::path(opt.output) / "manifest.json", ec);
    const std::regex ours(R"((train|val)-\d{5,}-\d{5,}\.bin(\.tmp)?)");  // %05zu grows past 99999
    for (const auto& entry : fs::directory_iterator(opt.output))
      if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), ours))
        fs::remove(entry.path(), ec);
  });

  const std::vector<WorkUnit> units = plan_work_units(files, to.sources, to.unit_bytes);
  const auto [first, last] = units_for_rank(units, rank, world);
  uint64_t my_bytes = 0, all_bytes = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    all_bytes += units[u].end - units[u].begin;
    if (u >= first && u < last) my_bytes += units[u].end - units[u].begin;
  }
  if (talk) {
    std::fprintf(stderr, "tokenize: %zu file(s), %.1f MB, %zu work unit(s) -> %s (tokenizer '%s', vocab %d, %s)\n",
                 files.size(), double(all_bytes) / 1e6, units.size(), opt.output.c_str(), tok->name().c_str(),
                 tok->vocab_size(), shard_dtype_for_vocab(uint64_t(tok->vocab_size())) == 2 ? "uint16" : "uint32");
    std::fprintf(stderr, "tokenize: %d rank(s) x %d thread(s); documents: %s%s; validation fraction %g\n", world,
                 threads, to_string(to.sources.text_documents),
                 opt.jsonl_field != "text" ? (", JSONL field \"" + opt.jsonl_field + "\"").c_str() : "",
                 opt.val_fraction);
  }
  Progress progress(my_bytes, world > 1 ? " (rank 0's share)" : "", talk);
  to.progress = [&](uint64_t bytes, uint64_t tokens) { progress.update(bytes, tokens); };

  Timer clock;
  TokenizeResult mine;
  phase(mpi, "tokenizing", [&] { mine = tokenize_to_shards(files, *tok, to, rank, world); });
  progress.update(mine.bytes_read, mine.train.tokens() + mine.val.tokens(), true);

  const std::vector<std::string> gathered = mpi.gather(serialize(mine));
  phase(mpi, "writing the manifest", [&] {
    if (rank != 0) return;
    std::vector<TokenizeResult> results;
    for (const auto& text : gathered) results.push_back(deserialize(text));
    ShardManifest m = make_manifest(*tok, to, files, results);
    m.ranks = world;
    NURI_CHECK(m.train.tokens() + m.val.tokens() > 0, data, "tokenize",
               "the inputs hold no documents (every file is empty or blank); nothing to write");
    write_manifest(opt.output, m);
    const double seconds = clock.seconds();
    const uint64_t tokens = m.train.tokens() + m.val.tokens();
    uint64_t bytes = 0;
    for (const auto& r : results) bytes += r.bytes_read;
    if (!opt.quiet) {
      std::fprintf(stderr,
                   "done: %.1f MB in %.2f s (%.1f MB/s, %d rank(s) x %d thread(s)): %s train + %s val tokens in "
                   "%s + %s documents, %.2f bytes/token, %zu + %zu shard(s) -> %s/manifest.json\n",
                   double(bytes) / 1e6, seconds, seconds > 0 ? double(bytes) / 1e6 / seconds : 0.0, world, threads,
                   with_commas(m.train.tokens()).c_str(), with_commas(m.val.tokens()).c_str(),
                   with_commas(m.train.documents()).c_str(), with_commas(m.val.documents()).c_str(),
                   tokens ? double(bytes) / double(tokens) : 0.0, m.train.shards.size(), m.val.shards.size(),
                   opt.output.c_str());
    }
    if (m.val.tokens() == 0 && opt.val_fraction > 0) {
      std::fprintf(stderr, "warning: no document fell into the validation split (--val-fraction %g); training "
                           "on these shards will have no validation loss\n", opt.val_fraction);
    }
  });
}

}  // namespace

void add_tokenize_command(CLI::App& app, const MpiEnvironment* mpi) {
  auto opt = std::make_shared<TokenizeCliOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Tokenize text into token shards for `nuri train` (data.datasets)");
  cmd->add_option("--tokenizer", opt->tokenizer, "\"bytes\" or a tokenizer file (see nuri tokenizer-train)");
  cmd->add_option("-o,--output", opt->output, "Output directory: shards and manifest.json");
  cmd->add_option("--val-fraction", opt->val_fraction,
                  "Fraction of documents held out for validation (chosen by a hash of each document)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--jsonl-field", opt->jsonl_field, "The text field of each JSONL object")->capture_default_str();
  cmd->add_option("--documents", opt->documents, "How text files split into documents: blank-line, line or file")
      ->capture_default_str()->check(CLI::IsMember({"blank-line", "line", "file"}));
  cmd->add_option("--shard-tokens", opt->shard_tokens, "Tokens per shard (a document never spans two)")
      ->capture_default_str()->check(CLI::Range(uint64_t(1), uint64_t(1) << 40));
  cmd->add_option("--threads", opt->threads, "Encoding threads per rank (0 = cores / ranks on this node)")
      ->capture_default_str()->check(CLI::Range(0, 4096));
  cmd->add_option("--unit-bytes", opt->unit_bytes,
                  "Bytes per work unit when cutting big files (distribution only: the tokens never change)")
      ->capture_default_str()->check(CLI::Range(uint64_t(1) << 10, uint64_t(1) << 40));
  cmd->add_flag("--allow-invalid-utf8", opt->allow_invalid_utf8,
                "Tokenize invalid UTF-8 as is (BPE byte fallback) instead of stopping at it");
  cmd->add_flag("-q,--quiet", opt->quiet, "No progress or summary");
  cmd->add_option("--verify", opt->verify_dir,
                  "Check a shard directory instead: every checksum, the manifest, and the stream hashes "
                  "(with --tokenizer: also the tokenizer)");
  cmd->add_option("inputs", opt->inputs, "Text (*.txt, *.md), JSONL (*.jsonl) files and directories");
  cmd->footer(
      "Examples:\n"
      "  nuri tokenize --tokenizer bytes -o shards/ko build/data/corpus/ko_prose.txt\n"
      "  mpirun -np 8 nuri tokenize --tokenizer tok.json --val-fraction 0.005 -o shards/web corpus/\n"
      "  nuri tokenize --verify shards/ko\n"
      "Then train on them: data.datasets = [\"shards/ko\"] (docs/data-format.md).");
  cmd->callback([opt, mpi] {
    if (!opt->verify_dir.empty()) {
      verify_directory(opt->verify_dir, opt->tokenizer);
      return;
    }
    NURI_CHECK(!opt->tokenizer.empty(), config, "tokenize", "--tokenizer is required: \"bytes\" or a tokenizer file");
    NURI_CHECK(!opt->output.empty(), config, "tokenize", "-o/--output is required: the directory for the shards");
    NURI_CHECK(!opt->inputs.empty(), config, "tokenize", "no inputs: give text/JSONL files or directories");
    run_tokenize(*opt, mpi);
  });
}

}  // namespace nuri::cli
