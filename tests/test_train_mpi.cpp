// Data-parallel training (issue 18): W ranks with B / W rows each against one process with the
// global batch of B.
//
//   * clip_loss_rows (the local loss): its shares of a partition sum to clip_loss's loss and
//     gradient (float64, 1e-12), without MPI.
//   * SigLIP's sigmoid loss against PyTorch in float64 (tools/siglip_reference.py).
//   * Under mpirun (this program starts `mpirun -np 2` on itself, CLIP_MPI_WORKER=1): for a ViT
//     and a ModifiedResNet tower, the CLIP and the sigmoid loss, float64 and float32, the first
//     step's gradient of 2 ranks
//     against one process (relative norm of the difference: <= 1e-12 float64, <= 1e-6 float32;
//     the ResNet's reference runs micro-batches of B / 2, because BatchNorm statistics are per
//     rank, as torch DDP keeps them), then 20 AdamW steps: per-step loss within 1e-4 relative,
//     and the final parameters' largest difference printed.
// Built without MPI, the mpirun test fails (it cannot run: install libopenmpi-dev).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backend/comm.h"
#include "core/error.h"
#include "nn/clip_network.h"
#include "train_fixtures.h"
#include "train/grad_accum.h"
#include "train/loss.h"
#include "train/trainer.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;
using clip::test::make_train_batch;
using clip::test::tiny_vit_clip_config;
using clip::test::TrainBatch;

namespace {

ModelConfig resnet_config() {
  ModelConfig c = tiny_vit_clip_config();
  c.vision = VisionConfig{};
  c.vision.resnet_layers = {1, 1, 1, 1};
  c.vision.width = 4;
  c.vision.image_size = 32;
  c.vision.heads = 2;
  c.vision.patch_size = 0;
  c.vision.layers = 0;
  c.vision.mlp_dim = 0;
  return c;
}


std::vector<double> gaussian(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d;
  std::vector<double> v(n);
  for (double& x : v) x = d(gen);
  return v;
}

// ---- worker: runs on every rank under mpirun; rank 0 reports ----

template <typename T>
double relative_difference(const T* a, const T* b, size_t n) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < n; ++i) {
    diff += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    norm += double(b[i]) * double(b[i]);
  }
  return std::sqrt(diff / norm);
}

// Returns whether every check of this case held.
// micro: the ranks' own micro-batches (cached-feature accumulation under MPI); the reference
// then runs micro-batches of the same rows.
template <typename T>
bool check_case(Comm& comm, const char* arch, const ModelConfig& c, double grad_bound, int64_t micro = 0,
                bool local_loss = true) {
  const int W = comm.size(), r = comm.rank();
  const int64_t B = 8, local = B / W;
  const int64_t pixel_row = 3 * int64_t(c.vision.image_size) * c.vision.image_size, id_row = c.text.context_length;
  bool ok = true;
  auto say = [&](const std::string& line) {
    if (r == 0)
      std::printf("%s %s%s%s: %s\n", arch, sizeof(T) == 8 ? "float64" : "float32",
                  micro > 0 ? (", micro-batches of " + std::to_string(micro)).c_str() : "",
                  local_loss ? "" : ", no local loss", line.c_str());
  };
  // One step's gradient.
  {
    const TrainBatch b = make_train_batch(c, B, 11);
    ClipNetwork<T> dist(c), ref(c);
    dist.init_openai(3);
    ref.init_openai(3);
    GradientOptions od;
    od.comm = &comm;
    od.micro_batch = micro;
    od.local_loss = local_loss;
    const double ld = contrastive_gradients(dist, b.pixels.data() + r * local * pixel_row,
                                            b.ids.data() + r * local * id_row, local, od).loss;
    GradientOptions orf;
    orf.micro_batch = micro > 0 ? micro : local;  // per-rank BatchNorm statistics = per-micro-batch ones
    const double lr = contrastive_gradients(ref, b.pixels.data(), b.ids.data(), B, orf).loss;
    const double g = relative_difference(dist.grads(), ref.grads(), dist.num_params());
    const double l = std::abs(ld - lr) / std::abs(lr);
    char line[200];
    std::snprintf(line, sizeof line, "first step: gradient relative difference %.3e (bound %.0e), loss %.3e", g,
                  grad_bound, l);
    say(line);
    ok = ok && g <= grad_bound && l <= grad_bound;
  }
  // 20 AdamW steps.
  {
    ClipNetwork<T> dist(c), ref(c);
    dist.init_openai(4);
    ref.init_openai(4);
    TrainConfig tc;
    tc.adamw.lr = 1e-3;
    tc.warmup_steps = 2;
    tc.total_steps = 20;
    tc.max_grad_norm = 1.0;
    TrainConfig tr = tc;
    tc.comm = &comm;
    tc.micro_batch = micro;
    tc.local_loss = local_loss;
    tr.micro_batch = micro > 0 ? micro : local;
    Trainer<T> td(dist, tc), trf(ref, tr);
    double worst_loss = 0;
    for (int step = 0; step < 20; ++step) {
      const TrainBatch b = make_train_batch(c, B, 100 + uint32_t(step));
      const StepStats sd = td.step(b.pixels.data() + r * local * pixel_row, b.ids.data() + r * local * id_row, local);
      const StepStats sr = trf.step(b.pixels.data(), b.ids.data(), B);
      worst_loss = std::max(worst_loss, std::abs(sd.loss - sr.loss) / std::abs(sr.loss));
    }
    double max_param = 0;
    for (size_t i = 0; i < dist.num_params(); ++i)
      max_param = std::max(max_param, std::abs(double(dist.params()[i]) - double(ref.params()[i])));
    // Every rank holds the same parameters.
    std::vector<T> mine(dist.params(), dist.params() + dist.num_params()), rank0 = mine;
    comm.broadcast(rank0.data(), int64_t(rank0.size()), 0);
    const bool same = mine == rank0;
    char line[200];
    std::snprintf(line, sizeof line,
                  "20 steps: largest per-step loss relative difference %.3e (bound 1e-4); final parameters' "
                  "largest difference %.3e; ranks hold identical parameters: %s",
                  worst_loss, max_param, same ? "yes" : "NO");
    say(line);
    ok = ok && worst_loss <= 1e-4 && same;
  }
  return ok;
}

int worker() {
  Comm& comm = Comm::world();
  if (comm.size() != 2 && comm.size() != 4) {
    std::fprintf(stderr, "worker: expected 2 or 4 ranks (the batch of 8 splits over them), got %d\n", comm.size());
    return 2;
  }
  if (comm.rank() == 0) std::printf("-- %d ranks\n", comm.size());
  bool ok = true;
  try {
    ok = check_case<double>(comm, "ViT", tiny_vit_clip_config(), 1e-12) && ok;
    ok = check_case<float>(comm, "ViT", tiny_vit_clip_config(), 1e-6) && ok;
    ok = check_case<double>(comm, "ResNet", resnet_config(), 1e-12) && ok;
    // (At 4 ranks a ResNet rank's BatchNorm sees 2 samples, which amplifies float32 rounding
    // over 20 steps to 2e-4 of the loss; float64 shows the computation is the same, 4e-14.)
    if (comm.size() == 2) ok = check_case<float>(comm, "ResNet", resnet_config(), 1e-6) && ok;
    ModelConfig siglip = tiny_vit_clip_config();  // the sigmoid loss (a logit_bias)
    siglip.init_logit_bias = -10.0f;
    ok = check_case<double>(comm, "ViT sigmoid loss", siglip, 1e-12) && ok;
    ok = check_case<float>(comm, "ViT sigmoid loss", siglip, 1e-6) && ok;
    ModelConfig rn_siglip = resnet_config();
    rn_siglip.init_logit_bias = -10.0f;
    ok = check_case<double>(comm, "ResNet sigmoid loss", rn_siglip, 1e-12) && ok;
    if (comm.size() == 2) ok = check_case<float>(comm, "ResNet sigmoid loss", rn_siglip, 1e-6) && ok;
    ok = check_case<double>(comm, "ViT", tiny_vit_clip_config(), 1e-12, 0, /*local_loss=*/false) && ok;
    if (comm.size() == 2) {  // accumulation under MPI: micro-batches of 2 of each rank's 4
      ok = check_case<double>(comm, "ViT", tiny_vit_clip_config(), 1e-12, 2) && ok;
      ok = check_case<double>(comm, "ResNet", resnet_config(), 1e-12, 2) && ok;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker rank %d: %s\n", comm.rank(), e.what());
    comm.abort(3);
    return 3;
  }
  const bool all = comm.allreduce_max(ok ? 0.0 : 1.0) == 0.0;
  if (comm.rank() == 0) std::printf("%s\n", all ? "ALL CHECKS HELD" : "A CHECK FAILED");
  return all ? 0 : 1;
}

}  // namespace

// ---- without MPI: the local loss's shares ----

TEST(LocalLoss, SharesOfAPartitionSumToTheWholeLossAndGradient) {
  const int64_t N = 12, E = 5;
  const std::vector<double> img = gaussian(size_t(N * E), 1), txt = gaussian(size_t(N * E), 2);
  const double scale = 1.7;
  std::vector<double> gi(img.size()), gt(txt.size());
  double gs = 0;
  const ClipLossResult<double> whole = clip_loss<double>(img.data(), txt.data(), N, E, scale, gi.data(), gt.data(), &gs);
  for (int64_t W : {1, 2, 3, 4, 12}) {
    const int64_t b = N / W;
    std::vector<double> si(img.size(), 0.0), st(txt.size(), 0.0), di(img.size()), dt(txt.size());
    double ss = 0, loss = 0;
    for (int64_t r = 0; r < W; ++r) {
      double ds = 0;
      const ClipLossResult<double> part =
          clip_loss_rows<double>(img.data(), txt.data(), N, E, scale, r * b, b, di.data(), dt.data(), &ds);
      loss += part.loss / double(W);
      ss += ds;
      for (size_t k = 0; k < si.size(); ++k) si[k] += di[k], st[k] += dt[k];
    }
    EXPECT_NEAR(loss, whole.loss, 1e-12 * whole.loss) << W << " shares";
    EXPECT_NEAR(ss, gs, 1e-12 * std::abs(gs)) << W << " shares";
    EXPECT_LE(relative_difference(si.data(), gi.data(), si.size()), 1e-12) << W << " shares";
    EXPECT_LE(relative_difference(st.data(), gt.data(), st.size()), 1e-12) << W << " shares";
  }
  EXPECT_THROW(clip_loss_rows<double>(img.data(), txt.data(), N, E, scale, 10, 4, nullptr, nullptr, nullptr), Error);
}

// SigLIP's sigmoid loss and gradients against PyTorch autograd in float64
// (tools/siglip_reference.py, open_clip's SigLipLoss): 1e-7 relative (the bound; both
// compute in float64, so the difference is rounding, ~1e-15). Its shares sum to the whole.
TEST(SiglipLoss, MatchesPyTorchInFloat64AndSharesSumToTheWhole) {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/test_tmp/siglip_reference";
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/siglip_reference.py --out " + dir +
                          " --n 6 --dim 5 > " + dir + ".log 2>&1";
  std::filesystem::create_directories(dir);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "failed (needs python3-torch): " << cmd;
  std::map<std::string, std::vector<double>> ref;
  std::ifstream in(dir + "/siglip.txt");
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string name;
    ls >> name;
    for (double v; ls >> v;) ref[name].push_back(v);
  }
  ASSERT_EQ(ref["image"].size(), 30u);
  const int64_t N = 6, E = 5;
  const double t = ref["scalars"][0], b = ref["scalars"][1];
  std::vector<double> di(30), dt(30);
  double dscale = 0, dbias = 0;
  const SiglipLossResult<double> r = siglip_loss_rows<double>(ref["image"].data(), ref["text"].data(), N, E, t, b, 0, N,
                                                              di.data(), dt.data(), &dscale, &dbias);
  auto rel = [](double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); };
  EXPECT_LE(rel(r.loss, ref["scalars"][2]), 1e-7);
  EXPECT_LE(rel(dscale, ref["grad_scalars"][0]), 1e-7);
  EXPECT_LE(rel(dbias, ref["grad_scalars"][1]), 1e-7);
  EXPECT_LE(relative_difference(di.data(), ref["grad_image"].data(), 30), 1e-7);
  EXPECT_LE(relative_difference(dt.data(), ref["grad_text"].data(), 30), 1e-7);
  std::printf("sigmoid loss vs PyTorch float64: loss %.2e, d_image %.2e, d_text %.2e, d_t %.2e, d_b %.2e (relative)\n",
              rel(r.loss, ref["scalars"][2]), relative_difference(di.data(), ref["grad_image"].data(), 30),
              relative_difference(dt.data(), ref["grad_text"].data(), 30), rel(dscale, ref["grad_scalars"][0]),
              rel(dbias, ref["grad_scalars"][1]));
  // Shares of 3 x 2 rows.
  std::vector<double> si(30, 0.0), st(30, 0.0), pi(30), pt(30);
  double ss = 0, sb = 0, loss = 0;
  for (int64_t k = 0; k < 3; ++k) {
    double a = 0, c = 0;
    loss += siglip_loss_rows<double>(ref["image"].data(), ref["text"].data(), N, E, t, b, 2 * k, 2, pi.data(), pt.data(),
                                     &a, &c).loss / 3.0;
    ss += a, sb += c;
    for (size_t q = 0; q < 30; ++q) si[q] += pi[q], st[q] += pt[q];
  }
  EXPECT_LE(rel(loss, r.loss), 1e-12);
  EXPECT_LE(rel(ss, dscale), 1e-12);
  EXPECT_LE(rel(sb, dbias), 1e-12);
  EXPECT_LE(relative_difference(si.data(), di.data(), 30), 1e-12);
  EXPECT_LE(relative_difference(st.data(), dt.data(), 30), 1e-12);
}

// ---- with MPI: this program again, as 2 ranks ----

void run_workers(int ranks) {
  ASSERT_TRUE(comm_built_with_mpi()) << "clip was built without MPI: install libopenmpi-dev openmpi-bin and rebuild";
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  // (ASAN_OPTIONS: under ASan, Open MPI's own allocations outlive MPI_Finalize.)
  // (OMPI_MCA_btl_vader_single_copy_mechanism: containers often forbid the cross-process copy.)
  const std::string cmd = "CLIP_MPI_WORKER=1 OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 "
                          "OMPI_MCA_btl_vader_single_copy_mechanism=none timeout 300 mpirun "
                          "--allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " + self + " 2>&1";
  std::string output;
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_TRUE(p) << cmd;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  const int status = ::pclose(p);
  std::printf("%s", output.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  EXPECT_NE(output.find("ALL CHECKS HELD"), std::string::npos);
}

TEST(TrainMpi, TwoRanksGiveTheOneProcessGradientsAndSteps) { run_workers(2); }
// Four ranks: the sigmoid loss's ring takes three steps (and the way home).
TEST(TrainMpi, FourRanksGiveTheOneProcessGradientsAndSteps) { run_workers(4); }

int main(int argc, char** argv) {
  if (const char* w = std::getenv("CLIP_MPI_WORKER"); w && std::string(w) == "1") return worker();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
