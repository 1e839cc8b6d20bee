// Byte-level BPE training (train_bpe in nuri/tokenizer.hpp) in two phases:
//
// 1. Counting. Documents are streamed (nuri/text_source.hpp), held-out ones skipped, each
//    normalized and split into pieces exactly as BpeTokenizer::encode does, and the distinct
//    pieces counted. The reading thread batches documents (~256 KB); `threads - 1` workers count
//    batches into thread-local tables, and the reader counts a batch itself whenever the queue
//    is full (and helps drain it at the end), so `threads` cores stay busy. Each table holds at
//    most max_pieces / threads pieces: when it fills, every piece at or below the count that halves
//    it is dropped. The tables are summed at the end, so without pruning the counts do not depend
//    on `threads`; with pruning they may (which pieces survive depends on what each table saw).
//
// 2. Merging. Each distinct piece is a word (a sequence of token ids, initially its bytes) with
//    a count. Pair counts and, per pair, the words holding it are built in parallel; a max-heap
//    orders pairs by (count desc, left bytes asc, right bytes asc). Counts of existing pairs only
//    fall as merges happen, so stale heap entries are fixed lazily when popped (re-pushed with
//    the current count); pairs that gain counts (those with the new token) are pushed after each
//    merge. A merge rewrites only the words listed for its pair, in place, updating the
//    neighbouring pairs' counts. The result depends only on the piece counts, never on the
//    thread count or the order pieces were seen.
#include "tokenizer/bpe_train.hpp"

#include <omp.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "nuri/error.hpp"
#include "nuri/log.hpp"
#include "tokenizer/normalize.hpp"
#include "tokenizer/pretokenize.hpp"

namespace nuri {
namespace bpe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int resolve_threads(int threads) { return threads > 0 ? threads : std::max(1, omp_get_max_threads()); }

// A progress bar redrawn in place on stderr, at most ten times a second; silent when stderr is
// not a terminal (logs and ctest output get the summary line only).
class ProgressBar {
 public:
  explicit ProgressBar(bool on) : on_(on && isatty(fileno(stderr))) {}
  ~ProgressBar() { done(); }
  void show(double fraction, const std::string& text, bool force = false) {
    if (!on_) return;
    const Clock::time_point now = Clock::now();
    if (!force && shown_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    shown_ = true;
    constexpr int kWidth = 30;
    const int filled = std::clamp(int(fraction * kWidth + 0.5), 0, kWidth);
    std::fprintf(stderr, "\r[%s%s] %s\033[K", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), '-').c_str(), text.c_str());
    std::fflush(stderr);
  }
  void done() {
    if (shown_) std::fputc('\n', stderr);
    shown_ = false;
  }

 private:
  bool on_;
  bool shown_ = false;
  Clock::time_point last_{};
};

// x with one decimal: megabytes (bytes / 1e6), seconds, rates.
std::string fixed1(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", x);
  return buf;
}

// ------------------------------------------------------------------------------------------------
// Counting

struct PieceHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return size_t(XXH3_64bits(s.data(), s.size())); }
};
using PieceTable = std::unordered_map<std::string, uint64_t, PieceHash, std::equal_to<>>;

struct Dropped {
  uint64_t pieces = 0;
  uint64_t threshold = 0;
};

// Leaves at most `keep` pieces: drops every piece whose count is at most t, the smallest count
// that gets the table down to `keep` (so equal counts share a fate, whatever the table's order).
void prune(PieceTable& table, size_t keep, Dropped& dropped) {
  if (table.size() <= keep) return;
  std::vector<uint64_t> counts;
  counts.reserve(table.size());
  for (const auto& entry : table) counts.push_back(entry.second);
  std::nth_element(counts.begin(), counts.begin() + std::ptrdiff_t(keep), counts.end(), std::greater<>());
  const uint64_t t = counts[keep];
  for (auto it = table.begin(); it != table.end();) {
    if (it->second <= t) {
      it = table.erase(it);
      ++dropped.pieces;
    } else {
      ++it;
    }
  }
  dropped.threshold = std::max(dropped.threshold, t);
}

// Documents gathered for one worker: their texts back to back, ends[i] = end of document i.
struct Batch {
  std::string text;
  std::vector<size_t> ends;
};

class PieceCounter {
 public:
  PieceCounter(const Pretokenizer& splitter, Normalization normalization, size_t cap)
      : splitter_(&splitter), normalization_(normalization), cap_(std::max<size_t>(cap, 2)) {}

  void count(const Batch& batch) {
    size_t begin = 0;
    for (const size_t end : batch.ends) {
      count_document(std::string_view(batch.text).substr(begin, end - begin));
      begin = end;
    }
  }

  PieceTable& table() { return table_; }
  const Dropped& dropped() const { return dropped_; }

 private:
  // As BpeTokenizer::encode splits: normalize, then the pattern on each valid UTF-8 run; a byte
  // outside a valid sequence is a piece of its own (only with TextSourceOptions::strict_utf8 off).
  void count_document(std::string_view text) {
    std::string normalized;
    if (normalization_ != Normalization::none) {
      normalized = normalize(text, normalization_);
      text = normalized;
    }
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    for (size_t i = 0; i < text.size();) {
      const size_t run = valid_utf8_run(s, text.size(), i);
      if (run == 0) {
        add(text.substr(i, 1));
        ++i;
        continue;
      }
      splitter_->split(text.data() + i, run,
                       [&](size_t offset, size_t length) { add(text.substr(i + offset, length)); });
      i += run;
    }
  }

  void add(std::string_view piece) {
    const auto it = table_.find(piece);
    if (it != table_.end()) {
      ++it->second;
      return;
    }
    if (table_.size() >= cap_) prune(table_, cap_ / 2, dropped_);
    table_.emplace(std::string(piece), 1);
  }

  const Pretokenizer* splitter_;
  Normalization normalization_;
  size_t cap_;
  PieceTable table_;
  Dropped dropped_;
};

// A bounded queue of batches feeding the worker threads. The producer never blocks: when the
// queue is full, try_push fails and the producer counts the batch itself.
class BatchQueue {
 public:
  explicit BatchQueue(size_t capacity) : capacity_(capacity) {}

  bool try_push(Batch& batch) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.size() >= capacity_) return false;
      queue_.push_back(std::move(batch));
    }
    ready_.notify_one();
    return true;
  }
  bool try_pop(Batch& batch) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) return false;
    batch = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  // False once the queue is closed and drained.
  bool pop(Batch& batch) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    batch = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Batch> queue_;
  bool closed_ = false;
};

// Worker threads counting batches from a queue; joined (and their first error kept) on finish()
// or destruction, so an error in the reading thread never leaves a thread running.
class CountingPool {
 public:
  CountingPool(std::vector<PieceCounter>& counters, size_t first_worker) : queue_(counters.size()) {
    for (size_t i = first_worker; i < counters.size(); ++i) {
      threads_.emplace_back([this, &counter = counters[i]] {
        Batch batch;
        while (queue_.pop(batch)) {
          if (failed_) continue;  // drain without work after an error
          try {
            counter.count(batch);
          } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!error_) error_ = std::current_exception();
            failed_ = true;
          }
        }
      });
    }
  }
  ~CountingPool() { join(); }
  bool try_push(Batch& batch) { return !threads_.empty() && queue_.try_push(batch); }
  // Counts what is still queued with `counter` (the caller's), alongside the workers, then joins.
  void finish(PieceCounter& counter) {
    for (Batch batch; !failed_ && queue_.try_pop(batch);) counter.count(batch);
    join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void join() {
    queue_.close();
    for (std::thread& t : threads_)
      if (t.joinable()) t.join();
  }
  BatchQueue queue_;
  std::vector<std::thread> threads_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

// ------------------------------------------------------------------------------------------------
// Merging

uint64_t pair_key(int32_t left, int32_t right) { return uint64_t(uint32_t(left)) << 32 | uint32_t(right); }
int32_t key_left(uint64_t key) { return int32_t(key >> 32); }
int32_t key_right(uint64_t key) { return int32_t(key & 0xffffffffu); }

struct PairStats {
  int64_t count = 0;
  std::vector<uint32_t> words;  // words that hold (or held) the pair; may repeat or be stale
};
using PairCounts = std::unordered_map<uint64_t, PairStats>;

struct HeapEntry {
  int64_t count;
  uint64_t key;
};

// Options that cannot work, as Error(config) saying what would.
void check_train_options(const BpeTrainOptions& options) {
  const std::vector<std::string>& specials = options.special_tokens;
  const int min_vocab = 256 + int(specials.size());
  NURI_CHECK(options.vocab_size >= min_vocab, config, "tokenizer-train",
             "vocab_size " << options.vocab_size << " is too small: the 256 byte tokens and "
                           << specials.size() << " special tokens need at least " << min_vocab
                           << "; choose --vocab-size " << min_vocab << " or more");
  for (size_t i = 0; i < specials.size(); ++i) {
    NURI_CHECK(!specials[i].empty(), config, "tokenizer-train",
               "special token " << i + 1 << " is empty; give each special token some text");
    for (size_t j = 0; j < i; ++j)
      NURI_CHECK(specials[i] != specials[j], config, "tokenizer-train",
                 "special token '" << specials[i] << "' is listed twice; list each once");
  }
  NURI_CHECK(options.max_pieces >= 1, config, "tokenizer-train",
             "max_pieces is 0; it bounds the distinct pieces counted (default 2000000), give at least 1");
}

}  // namespace

std::vector<std::pair<std::string, uint64_t>> count_pieces(const std::vector<std::string>& paths,
                                                           const TextSourceOptions& sources,
                                                           const BpeTrainOptions& options,
                                                           PieceCountStats* stats_out) {
  const Clock::time_point t0 = Clock::now();
  const std::vector<TextFile> files = list_text_files(paths, sources);
  uint64_t total_bytes = 0;
  for (const TextFile& f : files) total_bytes += f.bytes;

  const int threads = resolve_threads(options.threads);
  const Pretokenizer splitter(pretokenize_pattern(options.pattern));
  std::vector<PieceCounter> counters;
  for (int i = 0; i < threads; ++i)
    counters.emplace_back(splitter, options.normalization, options.max_pieces / size_t(threads));

  PieceCountStats stats;
  ProgressBar bar(options.progress);
  {
    CountingPool pool(counters, 1);  // counters[0] belongs to this (the reading) thread
    constexpr size_t kBatchBytes = size_t(256) << 10;
    Batch batch;
    auto submit = [&] {
      if (batch.ends.empty()) return;
      if (!pool.try_push(batch)) counters[0].count(batch);
      batch = Batch{};
    };
    auto on_bytes = [&](uint64_t n) {
      stats.bytes_read += n;
      const double secs = std::max(seconds_since(t0), 1e-9);
      bar.show(total_bytes ? double(stats.bytes_read) / double(total_bytes) : 1.0,
               "counting pieces: " + fixed1(double(stats.bytes_read) / 1e6) + " / " +
                   fixed1(double(total_bytes) / 1e6) + " MB, " +
                   fixed1(double(stats.bytes_read) / secs / 1e6) + " MB/s");
    };
    for (const TextFile& file : files) {
      for_each_document(
          file, sources,
          [&](const Document& doc) {
            if (doc.val) {
              ++stats.val_documents;
              return;
            }
            ++stats.train_documents;
            stats.train_bytes += doc.text.size();
            batch.text.append(doc.text);
            batch.ends.push_back(batch.text.size());
            if (batch.text.size() >= kBatchBytes) submit();
          },
          on_bytes);
    }
    submit();
    pool.finish(counters[0]);
  }
  const double secs = std::max(seconds_since(t0), 1e-9);
  bar.show(1.0,
           "counted pieces: " + fixed1(double(stats.bytes_read) / 1e6) + " MB in " + fixed1(secs) + " s, " +
               fixed1(double(stats.bytes_read) / secs / 1e6) + " MB/s",
           true);
  bar.done();

  // Sum the tables into the first, moving nodes rather than copying strings.
  PieceTable& table = counters[0].table();
  Dropped dropped = counters[0].dropped();
  for (size_t i = 1; i < counters.size(); ++i) {
    PieceTable& other = counters[i].table();
    for (auto it = other.begin(); it != other.end();) {
      const auto found = table.find(it->first);
      if (found != table.end()) {
        found->second += it->second;
        ++it;
      } else {
        table.insert(other.extract(it++));
      }
    }
    other = PieceTable{};
    dropped.pieces += counters[i].dropped().pieces;
    dropped.threshold = std::max(dropped.threshold, counters[i].dropped().threshold);
  }
  prune(table, options.max_pieces, dropped);
  stats.dropped_pieces = dropped.pieces;
  stats.dropped_threshold = dropped.threshold;

  std::vector<std::pair<std::string, uint64_t>> pieces;
  pieces.reserve(table.size());
  for (auto it = table.begin(); it != table.end();) {
    auto node = table.extract(it++);
    pieces.emplace_back(std::move(node.key()), node.mapped());
  }
  std::sort(pieces.begin(), pieces.end());
  stats.seconds = seconds_since(t0);
  if (stats_out) *stats_out = stats;
  return pieces;
}

BpeModel learn_bpe(const std::vector<std::pair<std::string, uint64_t>>& pieces,
                   const BpeTrainOptions& options) {
  check_train_options(options);
  const std::vector<std::string>& specials = options.special_tokens;
  const int threads = resolve_threads(options.threads);
  const int64_t min_frequency = std::max(options.min_frequency, 1);
  const size_t target = size_t(options.vocab_size) - specials.size();  // tokens before the specials

  BpeModel model;
  model.pattern = pretokenize_pattern(options.pattern);
  model.normalization = options.normalization;
  std::vector<std::string>& tokens = model.tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, char(b));
  std::unordered_map<std::string, int32_t> learned_ids;  // bytes -> id of learned tokens

  // Words: pieces of two or more bytes (a single byte holds no pair), stored back to back.
  std::vector<int32_t> symbols;
  std::vector<size_t> word_begin;
  std::vector<uint32_t> word_length;
  std::vector<int64_t> word_count;
  for (const auto& [piece, count] : pieces) {
    if (piece.size() < 2) continue;
    word_begin.push_back(symbols.size());
    word_length.push_back(uint32_t(piece.size()));
    word_count.push_back(int64_t(count));
    for (const char c : piece) symbols.push_back(int32_t(uint8_t(c)));
  }
  const size_t n_words = word_begin.size();
  NURI_CHECK(n_words <= UINT32_MAX, config, "tokenizer-train", "too many distinct pieces; lower max_pieces");

  // Initial pair counts and pair -> words, one table per thread over a slice of the words.
  std::vector<PairCounts> partial(size_t(std::max(1, std::min<int>(threads, int(n_words / 1024) + 1))));
  {
    std::vector<std::thread> pool;
    const size_t parts = partial.size();
    auto count_slice = [&](size_t part) {
      PairCounts& local = partial[part];
      for (size_t w = n_words * part / parts; w < n_words * (part + 1) / parts; ++w) {
        const int32_t* s = &symbols[word_begin[w]];
        for (uint32_t i = 0; i + 1 < word_length[w]; ++i) {
          PairStats& p = local[pair_key(s[i], s[i + 1])];
          p.count += word_count[w];
          if (p.words.empty() || p.words.back() != uint32_t(w)) p.words.push_back(uint32_t(w));
        }
      }
    };
    for (size_t part = 1; part < parts; ++part) pool.emplace_back(count_slice, part);
    count_slice(0);
    for (std::thread& t : pool) t.join();
  }
  PairCounts pairs = std::move(partial[0]);
  for (size_t part = 1; part < partial.size(); ++part) {
    for (auto& [key, stats] : partial[part]) {
      PairStats& p = pairs[key];
      p.count += stats.count;
      p.words.insert(p.words.end(), stats.words.begin(), stats.words.end());
    }
    partial[part] = PairCounts{};
  }

  // Max-heap: higher count first, then the smaller (left bytes, right bytes).
  auto lower_priority = [&tokens](const HeapEntry& a, const HeapEntry& b) {
    if (a.count != b.count) return a.count < b.count;
    const int c = tokens[size_t(key_left(a.key))].compare(tokens[size_t(key_left(b.key))]);
    if (c != 0) return c > 0;
    return tokens[size_t(key_right(a.key))] > tokens[size_t(key_right(b.key))];
  };
  std::vector<HeapEntry> heap;
  for (const auto& [key, stats] : pairs)
    if (stats.count >= min_frequency) heap.push_back({stats.count, key});
  std::make_heap(heap.begin(), heap.end(), lower_priority);

  ProgressBar bar(options.progress);
  const size_t merges_wanted = target - 256;
  auto show_merges = [&](bool force) {
    const size_t done = tokens.size() - 256;
    bar.show(merges_wanted ? double(done) / double(merges_wanted) : 1.0,
             "merging: " + std::to_string(done) + " / " + std::to_string(merges_wanted) + " merges", force);
  };
  std::vector<uint64_t> grown;  // pairs that gained counts in this merge
  while (tokens.size() < target && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    const HeapEntry top = heap.back();
    heap.pop_back();
    const auto found = pairs.find(top.key);
    if (found == pairs.end()) continue;
    if (found->second.count != top.count) {  // stale: its count fell since it was pushed
      if (found->second.count >= min_frequency) {
        heap.push_back({found->second.count, top.key});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
      continue;
    }
    const int32_t left = key_left(top.key), right = key_right(top.key);
    std::string merged = tokens[size_t(left)] + tokens[size_t(right)];
    if (std::find(specials.begin(), specials.end(), merged) != specials.end()) {
      pairs.erase(found);  // never learn a special token's text
      continue;
    }
    // Two merges can spell the same bytes ((ab)c and a(bc)); the second reuses the first's id.
    int32_t id;
    if (const auto it = learned_ids.find(merged); it != learned_ids.end()) {
      id = it->second;
    } else {
      id = int32_t(tokens.size());
      learned_ids.emplace(merged, id);
      tokens.push_back(std::move(merged));
    }
    model.merges.emplace_back(left, right);

    std::vector<uint32_t> words = std::move(found->second.words);
    pairs.erase(found);
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    grown.clear();
    for (const uint32_t w : words) {
      int32_t* s = &symbols[word_begin[w]];
      const uint32_t n = word_length[w];
      const int64_t c = word_count[w];
      auto lose = [&](int32_t a, int32_t b) {
        const auto it = pairs.find(pair_key(a, b));
        if (it != pairs.end()) it->second.count -= c;
      };
      auto gain = [&](int32_t a, int32_t b) {
        const uint64_t key = pair_key(a, b);
        PairStats& p = pairs[key];
        p.count += c;
        if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
        grown.push_back(key);
      };
      // Leftmost, non-overlapping occurrences, left to right: the previous symbol is already
      // rewritten (it may be the new token), the next one not yet.
      uint32_t out = 0;
      for (uint32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == left && s[i + 1] == right) {
          if (out > 0) {
            lose(s[out - 1], left);
            gain(s[out - 1], id);
          }
          if (i + 2 < n) {
            lose(right, s[i + 2]);
            gain(id, s[i + 2]);
          }
          s[out++] = id;
          i += 2;
        } else {
          s[out++] = s[i++];
        }
      }
      word_length[w] = out;
    }
    pairs.erase(top.key);  // a == b can touch the merged pair again; it is gone either way
    std::sort(grown.begin(), grown.end());
    grown.erase(std::unique(grown.begin(), grown.end()), grown.end());
    for (const uint64_t key : grown) {
      const auto it = pairs.find(key);
      if (it != pairs.end() && it->second.count >= min_frequency) {
        heap.push_back({it->second.count, key});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
    }
    show_merges(false);
  }
  show_merges(true);
  bar.done();

  if (tokens.size() < target) {
    NURI_WARN("tokenizer-train: the corpus has no pair seen at least "
              << min_frequency << " times after " << model.merges.size() << " merges, so the vocabulary has "
              << tokens.size() + specials.size() << " tokens instead of " << options.vocab_size
              << "; give more text or lower --min-frequency for a larger one");
  }
  for (const std::string& text : specials) {
    model.specials.push_back({text, int32_t(tokens.size())});
    tokens.push_back(text);
  }
  model.eot = specials.empty() ? std::string() : specials.front();
  return model;
}

}  // namespace bpe

BpeTokenizer train_bpe(const std::vector<std::string>& paths, const TextSourceOptions& sources,
                       const BpeTrainOptions& options) {
  const bpe::Clock::time_point t0 = bpe::Clock::now();
  bpe::check_train_options(options);  // before the corpus is read

  bpe::PieceCountStats stats;
  const std::vector<std::pair<std::string, uint64_t>> pieces =
      bpe::count_pieces(paths, sources, options, &stats);
  if (stats.dropped_pieces > 0) {
    NURI_WARN("tokenizer-train: more than "
              << options.max_pieces << " distinct pieces; dropped " << stats.dropped_pieces
              << " of the rarest (each seen at most " << stats.dropped_threshold
              << " times) to stay in memory. Raise --max-pieces to count them all");
  }
  if (stats.train_documents == 0 || pieces.empty()) {
    if (stats.val_documents > 0) {
      NURI_THROW(data, "tokenizer-train",
                 "no training text: all " << stats.val_documents
                                          << " documents of the inputs are held out by "
                                          << "val_fraction " << sources.val_fraction
                                          << "; give more text or a smaller --val-fraction");
    }
    NURI_THROW(data, "tokenizer-train",
               "no training text: the inputs hold no non-blank document; give text files, "
               "JSONL files or directories with text");
  }
  const bpe::Clock::time_point t_merge = bpe::Clock::now();
  BpeModel model = bpe::learn_bpe(pieces, options);
  const double merge_seconds = bpe::seconds_since(t_merge);
  const double total = bpe::seconds_since(t0);
  if (options.progress) {
    std::fprintf(stderr,
                 "tokenizer-train: %s MB in %.1f s (%s MB/s; counting %.1f s, merging %.1f s), %zu distinct "
                 "pieces, %zu merges, vocab %zu\n",
                 bpe::fixed1(double(stats.bytes_read) / 1e6).c_str(), total,
                 bpe::fixed1(double(stats.bytes_read) / std::max(total, 1e-9) / 1e6).c_str(), stats.seconds,
                 merge_seconds, pieces.size(), model.merges.size(), model.tokens.size());
  }
  return BpeTokenizer(std::move(model));
}

}  // namespace nuri
