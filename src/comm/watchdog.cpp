#include "comm/watchdog.hpp"

#include <algorithm>

namespace nuri::comm {

Watchdog& Watchdog::instance() {
  static Watchdog dog;
  return dog;
}

Watchdog::~Watchdog() { stop(); }

void Watchdog::add(Watched* w) {
  {
    std::lock_guard<std::mutex> list(list_mutex_);
    watched_.push_back(w);
  }
  std::lock_guard<std::mutex> wake(wake_mutex_);
  if (!thread_.joinable()) {
    stop_ = false;
    thread_ = std::thread([this] { run(); });
  }
  wake_.notify_all();  // a shorter tick may apply now
}

void Watchdog::remove(Watched* w) {
  std::lock_guard<std::mutex> list(list_mutex_);
  watched_.erase(std::remove(watched_.begin(), watched_.end(), w), watched_.end());
}

void Watchdog::stop() {
  std::thread t;
  {
    std::lock_guard<std::mutex> wake(wake_mutex_);
    stop_ = true;
    wake_.notify_all();
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();
}

void Watchdog::run() {
  for (;;) {
    Clock::duration tick = std::chrono::milliseconds(100);
    {
      std::lock_guard<std::mutex> list(list_mutex_);
      const auto now = Clock::now();
      for (Watched* w : watched_) {
        w->watch(now);
        tick = std::min(tick, w->tick());
      }
    }
    std::unique_lock<std::mutex> wake(wake_mutex_);
    if (wake_.wait_for(wake, tick, [this] { return stop_; })) return;
  }
}

}  // namespace nuri::comm
