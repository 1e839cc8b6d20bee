// ProcessGrid: TP x DP groups from the world, TP innermost (world rank = tp_rank + tp * dp_rank).
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <set>
#include <sstream>
#include <thread>

#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/log.hpp"

namespace nuri {

std::vector<std::pair<int, int>> grid_factorizations(int world_size) {
  std::vector<std::pair<int, int>> out;
  for (int tp = 1; tp <= world_size; ++tp)
    if (world_size % tp == 0) out.emplace_back(tp, world_size / tp);
  return out;
}

namespace {

std::string factorizations_text(int world_size) {
  std::ostringstream s;
  bool first = true;
  for (const auto& [tp, dp] : grid_factorizations(world_size)) {
    s << (first ? "" : ", ") << "(tp " << tp << ", dp " << dp << ")";
    first = false;
  }
  return s.str();
}

// Per-rank record gathered over the world: world rank, node, local rank, then the host name.
constexpr int kHostWords = 8;  // 64 bytes of host name
constexpr int kRecord = 3 + kHostWords;

}  // namespace

ProcessGrid::ProcessGrid(std::shared_ptr<Communicator> world, int tp, int dp)
    : world_(std::move(world)) {
  NURI_CHECK(world_ != nullptr, config, "process_grid", "the world communicator is null");
  const int n = world_->size();
  NURI_CHECK(tp >= 1, config, "process_grid",
             "tp must be >= 1, got " << tp << "; for " << n
                                     << " ranks the valid layouts are " << factorizations_text(n));
  if (dp <= 0) {
    NURI_CHECK(n % tp == 0, config, "process_grid",
               "tp " << tp << " does not divide the world size " << n
                     << "; for " << n << " ranks the valid layouts are " << factorizations_text(n));
    dp = n / tp;
  }
  NURI_CHECK(static_cast<long>(tp) * dp == n, config, "process_grid",
             "tp " << tp << " x dp " << dp << " = " << static_cast<long>(tp) * dp
                   << " does not equal the world size " << n << "; for " << n
                   << " ranks the valid layouts are " << factorizations_text(n));
  tp_size_ = tp;
  dp_size_ = dp;

  const int me = world_->rank();
  const int my_tp = me % tp, my_dp = me / tp;
  tp_ = world_->split(my_dp, my_tp, "tp");
  dp_ = world_->split(my_tp, my_dp, "dp");
  NURI_CHECK(tp_ && dp_ && tp_->size() == tp && dp_->size() == dp && tp_->rank() == my_tp &&
                 dp_->rank() == my_dp,
             internal, "process_grid", "the TP/DP groups do not have the expected shape");

  // Nodes: the ranks that share memory; nodes are numbered by their lowest world rank.
  node_ = world_->split_node("node");
  auto leaders = world_->split(node_->rank() == 0 ? 0 : -1, me, "node leaders");
  int64_t node_info[2] = {leaders ? leaders->rank() : 0, leaders ? leaders->size() : 0};
  node_->broadcast(node_info, 2, 0);
  node_index_ = static_cast<int>(node_info[0]);
  num_nodes_ = static_cast<int>(node_info[1]);
  leaders.reset();

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  threads_per_rank_ = std::max(1, static_cast<int>(cores) / node_->size());

  // Everyone's placement, for describe() and for checks.
  std::vector<int64_t> mine(kRecord, 0), all(static_cast<size_t>(kRecord) * n);
  mine[0] = me;
  mine[1] = node_index_;
  mine[2] = node_->rank();
  char host[kHostWords * 8 + 1] = {};
  gethostname(host, sizeof(host) - 1);
  std::memcpy(mine.data() + 3, host, kHostWords * 8);
  world_->all_gather(mine.data(), all.data(), all.size());
  placements_.resize(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    const int64_t* rec = all.data() + static_cast<size_t>(r) * kRecord;
    RankPlacement& p = placements_[static_cast<size_t>(r)];
    p.world_rank = static_cast<int>(rec[0]);
    p.tp_rank = r % tp;
    p.dp_rank = r / tp;
    p.node = static_cast<int>(rec[1]);
    p.local_rank = static_cast<int>(rec[2]);
    char name[kHostWords * 8 + 1] = {};
    std::memcpy(name, rec + 3, kHostWords * 8);
    p.host = name;
  }

  // TP belongs inside a node: its all-reduces sit on the critical path of every layer.
  if (me == 0) {
    for (int g = 0; g < dp; ++g) {
      std::set<int> nodes;
      for (int t = 0; t < tp; ++t) nodes.insert(placements_[static_cast<size_t>(t + tp * g)].node);
      if (nodes.size() > 1) {
        NURI_WARN("process grid: TP group " << g << " (world ranks " << tp * g << "-"
                                            << tp * g + tp - 1 << ") spans " << nodes.size()
                                            << " nodes; tensor parallelism across nodes is slow. "
                                               "Use tp <= the ranks per node.");
        break;
      }
    }
  }
}

std::string ProcessGrid::describe() const {
  std::ostringstream s;
  const int n = world_size();
  s << "process grid: " << n << " rank" << (n == 1 ? "" : "s") << " = tp " << tp_size_ << " x dp "
    << dp_size_ << " (TP innermost: world rank = tp_rank + " << tp_size_ << " * dp_rank); "
    << num_nodes_ << " node" << (num_nodes_ == 1 ? "" : "s") << ", " << local_size()
    << " rank" << (local_size() == 1 ? "" : "s") << " on this node, " << threads_per_rank_
    << " thread" << (threads_per_rank_ == 1 ? "" : "s") << " per rank\n";
  s << "   rank  tp  dp  node  local  host\n";
  constexpr int kMaxRows = 64;
  for (int r = 0; r < n && r < kMaxRows; ++r) {
    const RankPlacement& p = placements_[static_cast<size_t>(r)];
    s << std::setw(7) << p.world_rank << std::setw(4) << p.tp_rank << std::setw(4) << p.dp_rank
      << std::setw(6) << p.node << std::setw(7) << p.local_rank << "  " << p.host << "\n";
  }
  if (n > kMaxRows) s << "   ... and " << n - kMaxRows << " more ranks\n";
  std::string text = s.str();
  text.pop_back();  // the last newline
  return text;
}

void ProcessGrid::print() const {
  if (world_rank() == 0) NURI_INFO(describe());
}

}  // namespace nuri
