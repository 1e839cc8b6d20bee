#pragma once
// The process's collective watchdog: one thread that, every tick, asks each registered
// communicator to look at its in-flight collective and its side channel (see
// mpi_communicator.cpp for the protocol that names the ranks that did not arrive).
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace nuri::comm {

using Clock = std::chrono::steady_clock;

class Watched {
 public:
  virtual ~Watched() = default;
  // Called on the watchdog thread, never concurrently with itself for one object.
  virtual void watch(Clock::time_point now) = 0;
  // How often this object wants watch() called.
  virtual Clock::duration tick() const = 0;
};

class Watchdog {
 public:
  static Watchdog& instance();
  // Starts the thread on the first add. remove() returns only once the object is no longer
  // being watched (it waits for a running watch() to return).
  void add(Watched* w);
  void remove(Watched* w);
  // Joins the thread (MpiEnvironment calls it before MPI_Finalize). add() restarts it.
  void stop();

 private:
  Watchdog() = default;
  ~Watchdog();
  void run();

  std::mutex list_mutex_;  // held while watching, so remove() waits for watch() to end
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::vector<Watched*> watched_;
  std::thread thread_;
  bool stop_ = false;
};

}  // namespace nuri::comm
