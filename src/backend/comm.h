#pragma once
// The processes of a data-parallel training job (issue 18): Open MPI when clip was built with
// it (CLIP_HAVE_MPI) and started by mpirun, else a world of one process in which every
// collective is a copy. Only the backend talks to MPI; training calls these.
//
// MPI is initialised on the first call of Comm::world() when the environment says mpirun
// started this process (OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_RANK of other launchers), with
// MPI_THREAD_MULTIPLE where offered: the thread that initialised it makes every call, plus a
// helper that drives started non-blocking sums (start_allreduce_sum) to completion; the data
// loader's workers never call MPI. It is finalised at exit. Every call is collective: all ranks make it, in
// the same order, with the same sizes.
#include <cstdint>
#include <string>

namespace clip {

class Comm {
 public:
  static Comm& world();
  // A world of one whatever the launcher (every collective a copy): one process's training
  // runs the data-parallel code on it.
  static Comm& self();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  // "Open MPI 4.1.4" or "none (one process)".
  std::string library() const;

  // recv[size * n] = the n values of every rank, in rank order.
  void allgather(const float* send, int64_t n, float* recv);
  void allgather(const double* send, int64_t n, double* recv);
  // recv[n] = the sum over ranks of send[rank * n .. rank * n + n) (send holds size * n).
  void reduce_scatter_sum(const float* send, int64_t n, float* recv);
  void reduce_scatter_sum(const double* send, int64_t n, double* recv);
  // data[n] = the sum over ranks, in place.
  void allreduce_sum(float* data, int64_t n);
  void allreduce_sum(double* data, int64_t n);
  double allreduce_max(double value);
  // A ring step: send[n] goes to rank + 1, recv[n] comes from rank - 1 (modulo size).
  void ring_shift(const float* send, float* recv, int64_t n);
  void ring_shift(const double* send, double* recv, int64_t n);
  // data[n] = root's data on every rank.
  void broadcast(float* data, int64_t n, int root = 0);
  void broadcast(double* data, int64_t n, int root = 0);
  // Ends every process of the job with `code` (after a rank's error, so the others do not wait
  // forever in a collective). Returns only in a world of one.
  void abort(int code);

  // Non-blocking sum in place (gradient buckets during the backward pass): started now, done
  // by wait_all(); data must not be read or freed before then.
  void start_allreduce_sum(float* data, int64_t n);
  void start_allreduce_sum(double* data, int64_t n);
  void wait_all();

 private:
  Comm();
  struct One {};
  explicit Comm(One) {}
  ~Comm();
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
};

// Whether this build can run across processes (linked with MPI).
bool comm_built_with_mpi();
// After an error on one rank of a job of several: " (rank R of W)" for the message, and then
// comm_abort_job ends every rank. Both do nothing when Comm::world() was never made or is one
// process (so commands that never train never start MPI).
std::string comm_rank_suffix();
void comm_abort_job(int code);

}  // namespace clip
