// All-reduce: the nuri Communicator against raw MPI on the same buffers, and the overlap of an
// asynchronous all-reduce with compute on the calling thread.
//
//   mpirun -np 2 --bind-to none bench_allreduce [--reps N] [--max-mb M] [--overlap-mb M,...]
//
// Bandwidth: float sum all-reduce, in place, sizes 4 KB .. 64 MB. Each repetition is timed on
// every rank after a barrier; a repetition's time is the slowest rank's; the table shows the
// median. Bus bandwidth (as nccl-tests) = bytes / time * 2 (P - 1) / P. ratio = raw time / nuri
// time (1.00 = no overhead). "nuri" is the blocking call (runs on the caller's thread); "async" is
// all_reduce_async(...).wait() (runs on the communication thread: adds the hand-off).
//
// Overlap: work on the calling thread sized to take about as long as the all-reduce alone, of
// two kinds: "fma" (FMAs on an L1-resident array: needs a core) and "wait" (the thread sleeps,
// as one waiting on a GPU kernel or I/O: its core is free, so this isolates asynchronous
// progress from the competition for cores). overlap = (T_comm + T_work - T_both) /
// min(T_comm, T_work): 1 = fully hidden, 0 = serialized. Three ways to run "start all-reduce;
// work; wait":
//   nuri async       Communicator::all_reduce_async: its communication thread calls MPI
//   MPI_Iallreduce   raw nonblocking MPI, no call into MPI during the compute (Open MPI's
//                    progress then happens mostly inside MPI_Wait)
//   Iallreduce+Test  raw nonblocking MPI with MPI_Test every ~50 us of compute (manual progress,
//                    which model code should not have to do)
// The communication thread needs a core of its own to overlap (the shared-memory transport
// copies and reduces with the CPU): with as many ranks as cores, compute and communication
// share the cores and the overlap is bounded by that.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nuri/comm.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// The slowest rank's time per repetition, then the median.
double median_of_max(std::vector<double> t, MPI_Comm comm) {
  MPI_Allreduce(MPI_IN_PLACE, t.data(), static_cast<int>(t.size()), MPI_DOUBLE, MPI_MAX, comm);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// About `units` x 64 x 2 flops of dependent-free FMAs on a 64-float array.
volatile float g_sink = 0;
void compute(long units) {
  alignas(64) float a[64];
  for (int j = 0; j < 64; ++j) a[j] = static_cast<float>(j);
  for (long u = 0; u < units; ++u)
    for (int j = 0; j < 64; ++j) a[j] = a[j] * 0.999999f + 0.5f;
  float s = 0;
  for (int j = 0; j < 64; ++j) s += a[j];
  g_sink = s;
}

// compute() in slices with MPI_Test between them.
void compute_testing(long units, long slice, MPI_Request* req) {
  int done = 0;
  for (long u = 0; u < units; u += slice) {
    compute(std::min(slice, units - u));
    if (!done) MPI_Test(req, &done, MPI_STATUS_IGNORE);
  }
}

std::string human_bytes(size_t b) {
  std::ostringstream s;
  if (b >= (1u << 20))
    s << b / (1u << 20) << " MB";
  else
    s << b / 1024 << " KB";
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  int reps_arg = 0;
  size_t max_mb = 64;
  std::vector<size_t> overlap_mb = {4, 16, 64};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps_arg = std::atoi(argv[++i]);
    else if (a == "--max-mb" && i + 1 < argc) max_mb = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--overlap-mb" && i + 1 < argc) {
      overlap_mb.clear();
      std::stringstream list(argv[++i]);
      for (std::string item; std::getline(list, item, ',');) overlap_mb.push_back(std::stoul(item));
    }
  }
  nuri::MpiEnvironment env(&argc, &argv);
  try {
    auto comm = env.world();
    MPI_Comm raw;
    MPI_Comm_dup(MPI_COMM_WORLD, &raw);
    const int P = comm->size(), me = comm->rank();
    const double bus = P > 1 ? 2.0 * (P - 1) / P : 1.0;
    if (me == 0) {
      std::printf("all-reduce (float, sum, in place) over %d rank%s: nuri Communicator vs raw "
                  "MPI_Allreduce, median of the slowest rank's time\n",
                  P, P == 1 ? "" : "s");
      std::printf("%8s %6s | %10s %9s | %10s %9s %6s | %10s %6s\n", "size", "reps", "raw us",
                  "raw GB/s", "nuri us", "nuri GB/s", "ratio", "async us", "ratio");
    }
    for (size_t bytes = 4096; bytes <= max_mb << 20; bytes *= 4) {
      const size_t n = bytes / sizeof(float);
      std::vector<float> buf(n, 0.f);  // zeros: sums stay finite over the repetitions
      const int reps =
          reps_arg > 0 ? reps_arg
                       : static_cast<int>(std::clamp<size_t>((256u << 20) / bytes, 9, 200));
      std::vector<double> t_raw, t_nuri, t_async;
      for (int r = -2; r < reps; ++r) {  // two warm-ups
        MPI_Barrier(raw);
        double t0 = now_s();
        MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw);
        const double a = now_s() - t0;
        MPI_Barrier(raw);
        t0 = now_s();
        comm->all_reduce(buf.data(), n);
        const double b = now_s() - t0;
        MPI_Barrier(raw);
        t0 = now_s();
        comm->all_reduce_async(buf.data(), n).wait();
        const double c = now_s() - t0;
        if (r >= 0) {
          t_raw.push_back(a);
          t_nuri.push_back(b);
          t_async.push_back(c);
        }
      }
      const double raw_t = median_of_max(t_raw, raw), nuri_t = median_of_max(t_nuri, raw),
                   async_t = median_of_max(t_async, raw);
      if (me == 0)
        std::printf("%8s %6d | %10.1f %9.2f | %10.1f %9.2f %6.2f | %10.1f %6.2f\n",
                    human_bytes(bytes).c_str(), reps, raw_t * 1e6, bytes / raw_t * bus / 1e9,
                    nuri_t * 1e6, bytes / nuri_t * bus / 1e9, raw_t / nuri_t, async_t * 1e6,
                    raw_t / async_t);
    }

    // ---- overlap ----
    if (me == 0 && !overlap_mb.empty())
      std::printf("\noverlap of one all-reduce with compute on the calling thread "
                  "(times in ms; overlap 1 = fully hidden, 0 = serialized)\n"
                  "%8s %-5s| %8s %8s | %-16s %8s %8s\n",
                  "size", "work", "comm", "work", "method", "both", "overlap");
    for (size_t mb : overlap_mb) {
      const size_t bytes = mb << 20, n = bytes / sizeof(float);
      std::vector<float> buf(n, 0.f);
      const int reps = reps_arg > 0 ? reps_arg : 9;
      auto median = [&](auto&& body) {
        std::vector<double> t;
        for (int r = -1; r < reps; ++r) {
          MPI_Barrier(raw);
          const double t0 = now_s();
          body();
          if (r >= 0) t.push_back(now_s() - t0);
        }
        return median_of_max(t, raw);
      };
      const double t_comm = median([&] { comm->all_reduce_async(buf.data(), n).wait(); });
      // Calibrate compute to about t_comm (the same units on every rank: rank 0's measure).
      double per_unit = 0;
      {
        const long probe_units = 200000;
        std::vector<double> t;
        for (int k = 0; k < 5; ++k) {
          const double t0 = now_s();
          compute(probe_units);
          t.push_back((now_s() - t0) / probe_units);
        }
        std::sort(t.begin(), t.end());
        per_unit = t[0];  // the unloaded speed
        MPI_Bcast(&per_unit, 1, MPI_DOUBLE, 0, raw);
      }
      const long units = std::max(1L, static_cast<long>(t_comm / per_unit));
      const long slice = std::max(1L, static_cast<long>(50e-6 / per_unit));
      const double t_iar_alone = median([&] {
        MPI_Request req;
        MPI_Iallreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw,
                       &req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
      });
      // Two kinds of work on the calling thread: FMAs (needs a core) and waiting (a thread
      // that waits on something else - a GPU kernel, I/O - and leaves its core free; this
      // isolates asynchronous progress from the competition for cores).
      for (const char* kind : {"fma", "wait"}) {
        const bool fma = std::strcmp(kind, "fma") == 0;
        const auto wait_for = std::chrono::duration<double>(t_comm);
        auto work = [&](MPI_Request* testing) {
          if (fma) {
            if (testing) compute_testing(units, slice, testing);
            else compute(units);
            return;
          }
          const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(wait_for);
          if (!testing) {
            std::this_thread::sleep_until(end);
            return;
          }
          int done = 0;
          while (Clock::now() < end) {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
            if (!done) MPI_Test(testing, &done, MPI_STATUS_IGNORE);
          }
        };
        const double t_comp = median([&] { work(nullptr); });
        const double t_nuri = median([&] {
          nuri::CommHandle h = comm->all_reduce_async(buf.data(), n);
          work(nullptr);
          h.wait();
        });
        const double t_iar = median([&] {
          MPI_Request req;
          MPI_Iallreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw,
                         &req);
          work(nullptr);
          MPI_Wait(&req, MPI_STATUS_IGNORE);
        });
        const double t_iar_test = median([&] {
          MPI_Request req;
          MPI_Iallreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw,
                         &req);
          work(&req);
          MPI_Wait(&req, MPI_STATUS_IGNORE);
        });
        auto overlap = [&](double comm_t, double both) {
          return (comm_t + t_comp - both) / std::min(comm_t, t_comp);
        };
        if (me == 0) {
          std::printf("%8s %-5s| %8.2f %8.2f | %-16s %8.2f %8.2f\n", human_bytes(bytes).c_str(),
                      kind, t_comm * 1e3, t_comp * 1e3, "nuri async", t_nuri * 1e3,
                      overlap(t_comm, t_nuri));
          std::printf("%8s %-5s| %8.2f %8s | %-16s %8.2f %8.2f\n", "", "", t_iar_alone * 1e3, "",
                      "MPI_Iallreduce", t_iar * 1e3, overlap(t_iar_alone, t_iar));
          std::printf("%8s %-5s| %8s %8s | %-16s %8.2f %8.2f\n", "", "", "", "",
                      "Iallreduce+Test", t_iar_test * 1e3, overlap(t_iar_alone, t_iar_test));
        }
      }
    }
    MPI_Comm_free(&raw);
  } catch (const std::exception& e) {
    nuri::abort_job(e);
  }
  return 0;
}
