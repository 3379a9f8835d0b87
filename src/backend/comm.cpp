#include "backend/comm.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"

#if defined(CLIP_HAVE_MPI)
// The C API only: mpi.h would otherwise pull in the removed C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace clip {

namespace {
bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

[[noreturn]] void count_too_large(int64_t n) {
  throw Error("MPI: a message of " + std::to_string(n) + " values is larger than one call can carry");
}

#if defined(CLIP_HAVE_MPI)
int count(int64_t n) {
  if (n < 0 || n > INT_MAX) count_too_large(n);
  return int(n);
}
// The sums go in pieces of at most INT_MAX / 2 values (MPI counts are ints): f(offset, count).
template <class F>
void in_pieces(int64_t n, F&& f) {
  constexpr int64_t piece = INT_MAX / 2;
  for (int64_t at = 0; at < n; at += piece) f(at, count(std::min(piece, n - at)));
}
void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI: ") + what + " failed: " + std::string(text, size_t(len)));
}
std::vector<MPI_Request>& pending() {
  static std::vector<MPI_Request> requests;
  return requests;
}
bool& progress_thread_allowed() {
  static bool allowed = false;
  return allowed;
}
// Open MPI 4's non-blocking collectives advance only inside MPI calls; while the backward runs
// (no MPI calls) this thread makes them: MPI_Testall on the started requests until all are done.
struct Progress {
  std::thread thread;
  std::vector<MPI_Request> requests;  // owned by the thread while it runs
  int error = MPI_SUCCESS;
  ~Progress() {
    if (thread.joinable()) thread.detach();  // only after an error left a sum unwaited
  }
};
Progress& progress() {
  static Progress p;
  return p;
}
template <class T>
MPI_Datatype type_of();
template <>
MPI_Datatype type_of<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype type_of<double>() { return MPI_DOUBLE; }
#endif

template <class T>
void local_copy(const T* send, int64_t n, T* recv) {
  if (send != recv) std::memmove(recv, send, size_t(n) * sizeof(T));
}
}  // namespace

bool comm_built_with_mpi() {
#if defined(CLIP_HAVE_MPI)
  return true;
#else
  return false;
#endif
}

namespace {
Comm* made = nullptr;
}

Comm& Comm::world() {
  static Comm c;
  made = &c;
  return c;
}

Comm& Comm::self() {
  static Comm c{One{}};
  return c;
}

std::string comm_rank_suffix() {
  if (!made || !made->distributed()) return "";
  return " (rank " + std::to_string(made->rank()) + " of " + std::to_string(made->size()) + ")";
}

void comm_abort_job(int code) {
  if (made && made->distributed()) made->abort(code);
}

Comm::Comm() {
  if (!launched_by_mpirun()) return;
#if defined(CLIP_HAVE_MPI)
  int provided = 0;
  // MULTIPLE where the library offers it: a helper thread then drives the non-blocking gradient
  // sums while the backward runs (start_allreduce_sum); else only this thread calls MPI.
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  progress_thread_allowed() = provided >= MPI_THREAD_MULTIPLE;
  // Errors come back as return codes (turned into clip::Error), not as an abort inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  mpi_ = true;
#else
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (n && std::atoi(n) > 1)
    throw Error("started by mpirun with " + std::string(n) +
                " processes, but this clip was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

Comm::~Comm() {
#if defined(CLIP_HAVE_MPI)
  if (mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
#endif
}

std::string Comm::library() const {
#if defined(CLIP_HAVE_MPI)
  if (mpi_) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(v, &len);
    std::string s(v, size_t(len));
    const size_t comma = s.find(',');
    return comma == std::string::npos ? s : s.substr(0, comma);
  }
#endif
  return "none (one process)";
}

#if defined(CLIP_HAVE_MPI)
#define CLIP_COLLECTIVES(T)                                                                            \
  void Comm::allgather(const T* send, int64_t n, T* recv) {                                            \
    if (!mpi_) return local_copy(send, n, recv);                                                       \
    check(MPI_Allgather(send, count(n), type_of<T>(), recv, count(n), type_of<T>(), MPI_COMM_WORLD),   \
          "MPI_Allgather");                                                                            \
  }                                                                                                    \
  void Comm::reduce_scatter_sum(const T* send, int64_t n, T* recv) {                                   \
    if (!mpi_) return local_copy(send, n, recv);                                                       \
    check(MPI_Reduce_scatter_block(send, recv, count(n), type_of<T>(), MPI_SUM, MPI_COMM_WORLD),       \
          "MPI_Reduce_scatter_block");                                                                 \
  }                                                                                                    \
  void Comm::allreduce_sum(T* data, int64_t n) {                                                       \
    if (!mpi_) return;                                                                                 \
    in_pieces(n, [&](int64_t at, int k) {                                                              \
      check(MPI_Allreduce(MPI_IN_PLACE, data + at, k, type_of<T>(), MPI_SUM, MPI_COMM_WORLD),          \
            "MPI_Allreduce");                                                                          \
    });                                                                                                \
  }                                                                                                    \
  void Comm::broadcast(T* data, int64_t n, int root) {                                                 \
    if (!mpi_) return;                                                                                 \
    check(MPI_Bcast(data, count(n), type_of<T>(), root, MPI_COMM_WORLD), "MPI_Bcast");                 \
  }                                                                                                    \
  void Comm::ring_shift(const T* send, T* recv, int64_t n) {                                           \
    if (!mpi_) return local_copy(send, n, recv);                                                       \
    check(MPI_Sendrecv(send, count(n), type_of<T>(), (rank_ + 1) % size_, 7, recv, count(n), type_of<T>(), \
                       (rank_ + size_ - 1) % size_, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE),             \
          "MPI_Sendrecv");                                                                             \
  }
#else
#define CLIP_COLLECTIVES(T)                                                                            \
  void Comm::allgather(const T* send, int64_t n, T* recv) { local_copy(send, n, recv); }               \
  void Comm::reduce_scatter_sum(const T* send, int64_t n, T* recv) { local_copy(send, n, recv); }      \
  void Comm::allreduce_sum(T*, int64_t) {}                                                             \
  void Comm::broadcast(T*, int64_t, int) {}                                                            \
  void Comm::ring_shift(const T* send, T* recv, int64_t n) { local_copy(send, n, recv); }
#endif
CLIP_COLLECTIVES(float)
CLIP_COLLECTIVES(double)
#undef CLIP_COLLECTIVES

double Comm::allreduce_max(double value) {
#if defined(CLIP_HAVE_MPI)
  if (mpi_) check(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
#endif
  return value;
}

void Comm::abort(int code) {
#if defined(CLIP_HAVE_MPI)
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)code;
}

namespace {
#if defined(CLIP_HAVE_MPI)
template <class T>
void start_sum(bool mpi, T* data, int64_t n) {
  if (!mpi) return;
  in_pieces(n, [&](int64_t at, int k) {
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, data + at, k, type_of<T>(), MPI_SUM, MPI_COMM_WORLD, &r), "MPI_Iallreduce");
    pending().push_back(r);
  });
  Progress& p = progress();
  if (!progress_thread_allowed() || p.thread.joinable()) return;  // (one batch of requests at a time)
  p.requests.swap(pending());
  p.error = MPI_SUCCESS;
  p.thread = std::thread([&p] {
    int done = 0;
    while (!done && p.error == MPI_SUCCESS) {
      p.error = MPI_Testall(int(p.requests.size()), p.requests.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
}
#else
template <class T>
void start_sum(bool, T*, int64_t) {}
#endif
}  // namespace

void Comm::start_allreduce_sum(float* data, int64_t n) { start_sum(mpi_, data, n); }
void Comm::start_allreduce_sum(double* data, int64_t n) { start_sum(mpi_, data, n); }

void Comm::wait_all() {
#if defined(CLIP_HAVE_MPI)
  Progress& p = progress();
  if (p.thread.joinable()) {
    p.thread.join();
    p.requests.clear();
    check(p.error, "MPI_Testall");
  }
  if (pending().empty()) return;
  std::vector<MPI_Request> r;
  r.swap(pending());
  check(MPI_Waitall(int(r.size()), r.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
#endif
}

}  // namespace clip
