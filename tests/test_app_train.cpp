// `clip train` end to end on a tiny ViT CLIP (32 px images, width 64, 2 layers per tower) and
// a generated labelled set captioned through templates, with a vocabulary trained by
// `clip tokenizer train`: outputs (metrics.jsonl, curves.svg, config.json, checkpoints, a model
// directory `clip embed` loads), exact resume after SIGKILL at random moments and in the middle
// of checkpoint writes (final weights bitwise equal to an uninterrupted run; every step_*
// directory ever visible is complete and equal to the uninterrupted run's), Ctrl-C, and a full
// disk (RLIMIT_FSIZE) during a save.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/io.h"
#include "core/safetensors.h"
#include "eval/corrupt.h"
#include "test_support.h"
#include "vision/image.h"

namespace fs = std::filesystem;
using clip::read_file;
using clip::read_text_file;

namespace {

using Clock = std::chrono::steady_clock;

// Per-process scratch folder (CTest runs every test case as its own process, in parallel).
const fs::path& scratch() {
  static const fs::path d = [] {
    fs::path p = fs::path(CLIP_BINARY_DIR) / "test_tmp" / ("app_train_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return d;
}

struct Child {
  pid_t pid = -1;
  fs::path log;
};

struct Exit {
  int status = -1;  // exit code, or 128 + signal
  std::string log;  // stdout + stderr
};

struct SpawnOptions {
  int slow_save_ms = 0;          // CLIP_TEST_SLOW_SAVE
  long file_size_limit = 0;      // RLIMIT_FSIZE in bytes (0: none), with SIGXFSZ ignored
  std::vector<std::pair<std::string, std::string>> env;  // more variables (CLIP_TEST_SIGNAL_AT...)
  std::vector<std::string> launcher;  // a program (full path) and its flags that runs clip (mpirun)
};

// Starts `clip <args>` (fork + exec), stdout and stderr into a log file.
Child spawn(const std::vector<std::string>& args, const SpawnOptions& so = {}) {
  static int counter = 0;
  Child c;
  c.log = scratch() / ("run" + std::to_string(counter++) + ".log");
  std::vector<std::string> argv = so.launcher;
  argv.push_back(std::string(CLIP_BINARY_DIR) + "/clip");
  argv.insert(argv.end(), args.begin(), args.end());
  c.pid = clip::test::spawn_with_output(argv, c.log.string(), /*with_stderr=*/true, [&so] {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    if (so.slow_save_ms > 0) ::setenv("CLIP_TEST_SLOW_SAVE", std::to_string(so.slow_save_ms).c_str(), 1);
    else ::unsetenv("CLIP_TEST_SLOW_SAVE");
    for (const auto& [k, v] : so.env) ::setenv(k.c_str(), v.c_str(), 1);
    if (so.file_size_limit > 0) {
      ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, as on a full disk
      struct rlimit rl;
      rl.rlim_cur = rl.rlim_max = rlim_t(so.file_size_limit);
      ::setrlimit(RLIMIT_FSIZE, &rl);
    }
  });
  return c;
}

Exit wait_for(const Child& c, double timeout_s = 600) {
  Exit e;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  int st = 0;
  for (;;) {
    const pid_t r = ::waitpid(c.pid, &st, WNOHANG);
    if (r == c.pid) break;
    if (Clock::now() > deadline) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, &st, 0);
      ADD_FAILURE() << "clip train timed out";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  e.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  e.log = read_text_file(c.log.string());
  return e;
}

Exit run(const std::vector<std::string>& args, const SpawnOptions& so = {}) { return wait_for(spawn(args, so)); }

// The data: 4 classes x 10 images (class folders, captioned "a photo of a {}." / "a picture of
// a {}."), a held-out CSV of captions for retrieval, a vocabulary trained on the prompts, and a
// tiny model config.
struct Data {
  fs::path train, val_csv, val_dir, templates, vocab, model_config;
};

clip::Image noisy_image(int w, int h, int cls, std::mt19937& rng) {
  static const uint8_t colours[4][3] = {{200, 40, 40}, {40, 200, 40}, {40, 40, 200}, {200, 200, 40}};
  clip::Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.mode = "RGB";
  im.pixels.resize(size_t(w) * h * 3);
  std::uniform_int_distribution<int> noise(-40, 40);
  for (size_t i = 0; i < im.pixels.size(); ++i)
    im.pixels[i] = uint8_t(std::clamp(colours[cls][i % 3] + noise(rng), 0, 255));
  return im;
}

const Data& data() {
  static const Data d = [] {
    Data d;
    const fs::path root = scratch() / "data";
    const char* classes[] = {"cat", "dog", "bird", "red_car"};
    std::mt19937 rng(5);
    d.train = root / "train";
    d.val_dir = root / "val";
    std::string csv = "filepath,title\n", corpus;
    for (int c = 0; c < 4; ++c) {
      for (const auto& [dir, n] : {std::pair{d.train, 10}, std::pair{d.val_dir, 2}}) {
        fs::create_directories(dir / classes[c]);
        for (int i = 0; i < n; ++i) {
          auto png = clip::eval::encode_png_rgb(noisy_image(36 + i, 34, c, rng));
          const fs::path p = dir / classes[c] / (std::to_string(i) + ".png");
          clip::write_file_atomic(p.string(), png.data(), png.size());
          if (dir == d.val_dir) {
            std::string name = classes[c];
            std::replace(name.begin(), name.end(), '_', ' ');
            csv += p.string() + ",a photo of a " + name + "\n";
          }
        }
      }
      std::string name = classes[c];
      std::replace(name.begin(), name.end(), '_', ' ');
      corpus += "a photo of a " + name + ".\na picture of a " + name + ".\n";
    }
    d.val_csv = root / "val.csv";
    clip::write_file_atomic(d.val_csv.string(), csv);
    d.templates = root / "templates.txt";
    clip::write_file_atomic(d.templates.string(), std::string("a photo of a {}.\na picture of a {}.\n"));
    clip::write_file_atomic((root / "corpus.txt").string(), corpus);
    d.vocab = root / "vocab";
    Exit e = run({"tokenizer", "train", "--vocab-size", "560", "--min-count", "1", "-o", d.vocab.string(),
                  (root / "corpus.txt").string()});
    EXPECT_EQ(e.status, 0) << e.log;
    d.model_config = root / "tiny.json";
    clip::write_file_atomic(d.model_config.string(),
                            std::string(R"({"embed_dim": 32, "quick_gelu": true,
 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32, "mlp_ratio": 4},
 "text_cfg": {"context_length": 16, "vocab_size": 600, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 4}})"));
    return d;
  }();
  return d;
}

// 20 steps of batch 8 (5 steps per epoch: 4 epochs), augmentation with flips, clipping,
// warm-up, two loader workers, one compute thread.
std::vector<std::string> train_args(const fs::path& out, int save_every = 2, const std::string& keep = "0") {
  const Data& d = data();
  return {"train",      "--train-data", d.train.string(), "--templates", d.templates.string(),
          "--model-config", d.model_config.string(), "--vocab", d.vocab.string(),
          "--batch-size", "8",          "--steps",        "20",           "--lr",         "2e-3",
          "--warmup",   "3",            "--grad-clip",    "1.0",          "--seed",       "3",
          "--hflip",    "--augment-scale", "0.5,1.0",     "--threads",    "1",            "--workers", "2",
          "--save-every", std::to_string(save_every),     "--keep",       keep,           "--log-every", "1",
          "--output",   out.string()};
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

std::vector<nlohmann::json> records(const fs::path& metrics) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    EXPECT_NO_THROW(out.push_back(nlohmann::json::parse(line))) << metrics << ": " << line;
  }
  return out;
}

std::vector<std::pair<int64_t, fs::path>> step_dirs(const fs::path& out) {
  std::vector<std::pair<int64_t, fs::path>> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out / "checkpoints", ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() == 13 && n.rfind("step_", 0) == 0) v.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

bool has_temporaries(const fs::path& out) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out / "checkpoints", ec))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

std::vector<uint8_t> tensor_bytes(const fs::path& file, const char* name) {
  clip::SafetensorsFile f = clip::SafetensorsFile::open(file.string());
  const auto* t = f.find(name);
  if (!t) return {};
  const uint8_t* p = f.bytes(*t);
  return std::vector<uint8_t>(p, p + t->nbytes());
}

// Every step directory in `out` is complete and equal to the uninterrupted run's of that step:
// the same weight bytes, the same optimizer moments, the same counters.
void expect_checkpoints_match(const fs::path& out, const fs::path& ref, const std::string& when) {
  for (const auto& [step, dir] : step_dirs(out)) {
    SCOPED_TRACE(when + ": " + dir.string());
    const fs::path r = ref / "checkpoints" / dir.filename();
    ASSERT_TRUE(fs::exists(r));
    for (const char* f : {"open_clip_model.safetensors", "open_clip_config.json", "vocab.json", "merges.txt"})
      EXPECT_EQ(read_file((dir / f).string()), read_file((r / f).string())) << f;
    for (const char* t : {"exp_avg", "exp_avg_sq"})
      EXPECT_EQ(tensor_bytes(dir / "train_state.safetensors", t), tensor_bytes(r / "train_state.safetensors", t)) << t;
    clip::SafetensorsFile a = clip::SafetensorsFile::open((dir / "train_state.safetensors").string());
    clip::SafetensorsFile b = clip::SafetensorsFile::open((r / "train_state.safetensors").string());
    auto state = [](const clip::SafetensorsFile& f) {
      nlohmann::json j = nlohmann::json::parse(f.metadata().at("state"));
      j.erase("elapsed_seconds");
      return j;
    };
    EXPECT_EQ(state(a), state(b));
    EXPECT_EQ(state(a)["step"].get<int64_t>(), step);
  }
}

// The uninterrupted run every resume is compared against (a checkpoint of every step, all
// kept), and how long it took here (with this load, this build).
double reference_seconds = 0;
const fs::path& reference_run() {
  static const fs::path out = [] {
    const fs::path o = scratch() / "reference";
    const auto t0 = Clock::now();
    Exit e = run(train_args(o, 1, "0"));
    reference_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_EQ(e.status, 0) << e.log;
    return o;
  }();
  return out;
}

void expect_same_final_model(const fs::path& out) {
  const fs::path ref = reference_run();
  EXPECT_EQ(read_file((out / "model" / "open_clip_model.safetensors").string()),
            read_file((ref / "model" / "open_clip_model.safetensors").string()))
      << "the resumed run's final weights differ from the uninterrupted run's";
  // metrics.jsonl: each step exactly once, in order, with the uninterrupted run's losses.
  std::vector<int64_t> steps;
  std::vector<double> loss, ref_loss;
  for (const auto& j : records(out / "metrics.jsonl"))
    if (j["type"] == "train") {
      steps.push_back(j["step"].get<int64_t>());
      loss.push_back(j["loss"].get<double>());
    }
  for (const auto& j : records(ref / "metrics.jsonl"))
    if (j["type"] == "train") ref_loss.push_back(j["loss"].get<double>());
  std::vector<int64_t> expected(20);
  for (int i = 0; i < 20; ++i) expected[size_t(i)] = i + 1;
  EXPECT_EQ(steps, expected);
  EXPECT_EQ(loss, ref_loss);
  EXPECT_FALSE(has_temporaries(out));
}

class TrainApp : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(std::string(CLIP_BINARY_DIR) + "/clip")) << "the clip binary is not built";
    ASSERT_TRUE(fs::exists(data().vocab / "vocab.json"));
  }
};

// The scratch folder holds dozens of checkpoints: it is kept only when something failed.
class CleanScratch : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      std::error_code ec;
      fs::remove_all(fs::path(CLIP_BINARY_DIR) / "test_tmp" / ("app_train_" + std::to_string(::getpid())), ec);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const clean_scratch = ::testing::AddGlobalTestEnvironment(new CleanScratch);

}  // namespace

TEST_F(TrainApp, WritesMetricsCurvesConfigAndAModelThatClipEmbedLoads) {
  const Data& d = data();
  const fs::path out = scratch() / "outputs";
  // Settings from a JSON file (keys = flag names); the command line overrides --lr.
  const fs::path cfg = scratch() / "train.json";
  clip::write_file_atomic(cfg.string(), nlohmann::json({{"train-data", d.train.string()},
                                                        {"templates", d.templates.string()},
                                                        {"model-config", d.model_config.string()},
                                                        {"vocab", d.vocab.string()},
                                                        {"batch-size", 8},
                                                        {"steps", 10},
                                                        {"lr", 0.5},
                                                        {"warmup", 2},
                                                        {"threads", 1},
                                                        {"save-every", 4},
                                                        {"keep", 2},
                                                        {"log-every", 3},
                                                        {"val-data", d.val_csv.string()},
                                                        {"zeroshot-data", d.val_dir.string()},
                                                        {"zeroshot-templates", d.templates.string()},
                                                        {"val-every", 5},
                                                        {"output", out.string()}})
                                                        .dump());
  Exit e = run({"train", "--config", cfg.string(), "--lr", "1e-3"});
  ASSERT_EQ(e.status, 0) << e.log;
  EXPECT_NE(e.log.find("step 5 validation:"), std::string::npos) << e.log;  // a line per validation
  // Piped (the log is a file): a plain line per logged step, with the loss, rate and ETA.
  for (const char* line : {"step 3/10  epoch 0  loss ", "step 6/10  epoch 1  loss ", "step 9/10  epoch 1  loss ",
                           "step 10/10  epoch "})
    EXPECT_NE(e.log.find(line), std::string::npos) << line << " in\n" << e.log;
  EXPECT_EQ(e.log.find("step 4/10"), std::string::npos) << "only every --log-every steps";
  EXPECT_NE(e.log.find(" samples/s  elapsed "), std::string::npos) << e.log;
  EXPECT_NE(e.log.find("  ETA "), std::string::npos) << e.log;

  // config.json: the resolved settings.
  const nlohmann::json conf = nlohmann::json::parse(read_text_file((out / "config.json").string()));
  EXPECT_EQ(conf["lr"].get<double>(), 1e-3);
  EXPECT_EQ(conf["batch-size"].get<int64_t>(), 8);
  EXPECT_EQ(conf["beta2"].get<double>(), 0.98);  // a default
  EXPECT_EQ(conf["derived"]["total_steps"].get<int64_t>(), 10);

  // metrics.jsonl: training lines at steps 3, 6, 9, 10; validation at 5 and 10.
  std::vector<int64_t> train_steps, val_steps;
  for (const auto& j : records(out / "metrics.jsonl")) {
    if (j["type"] == "train") {
      train_steps.push_back(j["step"].get<int64_t>());
      for (const char* k : {"epoch", "samples", "loss", "lr", "logit_scale", "temperature", "grad_norm",
                            "samples_per_s", "elapsed"})
        EXPECT_TRUE(j.contains(k) && j[k].is_number()) << k << " in " << j.dump();
      EXPECT_EQ(j["samples"].get<int64_t>(), 8 * j["step"].get<int64_t>());
      EXPECT_NEAR(j["temperature"].get<double>(), std::exp(-j["logit_scale"].get<double>()), 1e-12);
    } else {
      ASSERT_EQ(j["type"], "val");
      val_steps.push_back(j["step"].get<int64_t>());
      for (const char* k : {"val/i2t_r1", "val/i2t_r5", "val/t2i_r1", "val/t2i_r5", "zeroshot/top1"}) {
        ASSERT_TRUE(j.contains(k)) << k;
        EXPECT_GE(j[k].get<double>(), 0.0);
        EXPECT_LE(j[k].get<double>(), 1.0);
      }
    }
  }
  EXPECT_EQ(train_steps, (std::vector<int64_t>{3, 6, 9, 10}));
  EXPECT_EQ(val_steps, (std::vector<int64_t>{5, 10}));

  // curves.svg: an SVG document with the panels, tags balanced.
  const std::string svg = read_text_file((out / "curves.svg").string());
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  for (const char* s : {"training loss", "learning rate", "temperature", "val/i2t_r1", "zeroshot/top1", "<polyline"})
    EXPECT_NE(svg.find(s), std::string::npos) << s;
  size_t opened = 0, closed = 0, self_closed = 0;
  for (size_t p = svg.find('<'); p != std::string::npos; p = svg.find('<', p + 1)) {
    if (svg.compare(p, 2, "</") == 0) ++closed;
    else if (svg.compare(p, 2, "<?") != 0) ++opened;
  }
  for (size_t p = svg.find("/>"); p != std::string::npos; p = svg.find("/>", p + 1)) ++self_closed;
  EXPECT_EQ(opened, closed + self_closed);

  // Checkpoints: the newest two (8, 10) kept, `latest` names step 10.
  std::vector<int64_t> steps;
  for (auto& [s, p] : step_dirs(out)) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{8, 10}));
  EXPECT_EQ(read_text_file((out / "checkpoints" / "latest").string()), "step_00000010\n");

  // The final model (and any checkpoint) works with `clip embed` with nothing else.
  for (const fs::path& m : {out / "model", out / "checkpoints" / "step_00000008"}) {
    const fs::path npy = scratch() / "embed.npy";
    clip::test::CliRun r = clip::test::run_clip("embed --model " + m.string() + " --text \"a photo\" -o " + npy.string(),
                                                scratch().string());
    ASSERT_EQ(r.status, 0) << r.err;
    std::vector<int64_t> shape;
    std::vector<float> emb = clip::read_npy_f32(npy.string(), shape);
    EXPECT_EQ(shape, (std::vector<int64_t>{1, 32}));
  }

  // Resuming the finished run changes nothing; resuming with other settings is refused; a new
  // run into a folder with checkpoints is refused.
  Exit again = run({"train", "--config", cfg.string(), "--lr", "1e-3", "--resume", "latest"});
  EXPECT_EQ(again.status, 0) << again.log;
  Exit differ = run({"train", "--config", cfg.string(), "--lr", "2e-3", "--resume", "latest"});
  EXPECT_EQ(differ.status, 1);
  EXPECT_NE(differ.log.find("--lr"), std::string::npos) << differ.log;
  Exit fresh = run({"train", "--config", cfg.string()});
  EXPECT_EQ(fresh.status, 1);
  EXPECT_NE(fresh.log.find("--resume latest"), std::string::npos) << fresh.log;
  // --resume with only the run folder: every setting comes from the checkpoint.
  Exit bare = run({"train", "--resume", out.string()});
  EXPECT_EQ(bare.status, 0) << bare.log;
}

// SIGKILL at random moments, then --resume latest, until the run completes: the final weights
// are bitwise those of the uninterrupted run, and every checkpoint ever visible is complete
// and equal to the uninterrupted run's of the same step.
TEST_F(TrainApp, ResumeAfterRandomKillsIsBitwiseEqual) {
  const fs::path ref = reference_run();
  const double full = reference_seconds;

  const fs::path out = scratch() / "killed";
  std::mt19937 rng(std::random_device{}());
  int kills = 0;
  // If a run completes before its kill in the first attempt, start over with shorter waits.
  for (int experiment = 0; kills == 0 && experiment < 5; ++experiment) {
    fs::remove_all(out);
    const double scale = full * std::pow(0.5, experiment);
    std::uniform_real_distribution<double> when(0.05 * scale, 0.9 * scale);
    for (int attempt = 0; attempt < 6; ++attempt) {
      const double wait_s = when(rng);
      SCOPED_TRACE("kill " + std::to_string(attempt) + " after " + std::to_string(wait_s) + " s");
      Child c = spawn(with(train_args(out), {"--resume", "latest"}));
      std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
      ::kill(c.pid, SIGKILL);
      Exit e = wait_for(c);
      expect_checkpoints_match(out, ref, "after kill " + std::to_string(attempt));
      if (e.status != 128 + SIGKILL) {
        ASSERT_EQ(e.status, 0) << e.log;
        break;  // it finished first
      }
      ++kills;
    }
  }
  Exit last = run(with(train_args(out), {"--resume", "latest"}));
  ASSERT_EQ(last.status, 0) << last.log;
  EXPECT_GT(kills, 0);
  expect_checkpoints_match(out, ref, "at the end");
  expect_same_final_model(out);
}

// Kills that land in the middle of checkpoint writes (saves slowed down by a test hook; the
// kill follows the appearance of a temporary checkpoint directory): no step_* directory is
// ever incomplete or wrong, leftovers are ignored and cleaned, and resume always works.
TEST_F(TrainApp, KillsDuringSavesNeverLeaveABrokenCheckpoint) {
  const fs::path ref = reference_run();
  const fs::path out = scratch() / "killed_in_save";
  SpawnOptions slow;
  slow.slow_save_ms = 40;  // before each of the 5 files of a checkpoint
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(0, 5 * slow.slow_save_ms);
  int mid_save = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int ms = delay_ms(rng);
    SCOPED_TRACE("kill " + std::to_string(attempt) + ", " + std::to_string(ms) + " ms into a save");
    Child c = spawn(with(train_args(out), {"--resume", "latest"}), slow);
    // Wait for a save of this process to begin.
    const std::string mine = ".tmp-" + std::to_string(c.pid);
    bool saving = false;
    const auto deadline = Clock::now() + std::chrono::seconds(300);
    while (!saving && Clock::now() < deadline && ::waitpid(c.pid, nullptr, WNOHANG) == 0) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(out / "checkpoints", ec))
        if (e.path().filename().string().find(mine) != std::string::npos) saving = true;
      if (!saving) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    ::kill(c.pid, SIGKILL);
    Exit e = wait_for(c);
    if (e.status != 128 + SIGKILL) {
      ASSERT_EQ(e.status, 0) << e.log;
      break;  // it finished first
    }
    mid_save += saving && has_temporaries(out);
    expect_checkpoints_match(out, ref, "after kill " + std::to_string(attempt));
  }
  EXPECT_GT(mid_save, 0) << "no kill landed in the middle of a save";
  Exit last = run(with(train_args(out), {"--resume", "latest"}));
  ASSERT_EQ(last.status, 0) << last.log;
  expect_checkpoints_match(out, ref, "at the end");
  expect_same_final_model(out);
}

// SIGINT and SIGTERM at many points of a step (each delivered by the process to itself with
// kill(), exactly as from outside, at a named test point: in the forward pass, in the loss,
// in the backward pass, before the optimizer, while a loader worker decodes, in the middle of
// checkpoint writes) and at random moments: every run ends with 130 or 143, a checkpoint that
// equals the uninterrupted run's, no temporary folder, and the resumed run ends bitwise equal.
TEST_F(TrainApp, SignalsAtManyPointsStopCleanlyAndResumeBitwise) {
  const fs::path ref = reference_run();
  const double full = reference_seconds;
  const fs::path out = scratch() / "signalled";
  struct Plan {
    std::string at, signal;
  };
  const std::vector<Plan> plans = {{"forward:2", "INT"},   {"loss:2", "TERM"},  {"loss:3", "INT"},
                                   {"backward:2", "TERM"}, {"optimizer:3", "INT"}, {"decode:9", "TERM"},
                                   {"save:2", "INT"},      {"save:8", "TERM"}};
  auto expect_clean_stop = [&](const Exit& e, int sig, const std::string& when) {
    SCOPED_TRACE(when);
    if (e.status == 0) return false;  // it finished first
    EXPECT_EQ(e.status, 128 + sig) << e.log;
    EXPECT_EQ(e.log.find("AddressSanitizer"), std::string::npos) << e.log;
    EXPECT_FALSE(has_temporaries(out)) << e.log;
    expect_checkpoints_match(out, ref, when);
    return true;
  };
  int stopped = 0;
  for (const Plan& p : plans) {
    SpawnOptions so;
    so.env = {{"CLIP_TEST_SIGNAL_AT", p.at}, {"CLIP_TEST_SIGNAL", p.signal}};
    Exit e = run(with(train_args(out), {"--resume", "latest"}), so);
    const int sig = p.signal == "INT" ? SIGINT : SIGTERM;
    if (expect_clean_stop(e, sig, "SIG" + p.signal + " at " + p.at)) {
      ++stopped;
      EXPECT_NE(e.log.find("stopped at step"), std::string::npos) << e.log;
    }
  }
  EXPECT_GE(stopped, 5) << "most planned signals should land before the run ends";
  // And from outside, at random moments (before the handler exists too: then the default
  // action ends the process with the same status, and nothing was written yet).
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> when(0.05 * full / 4, 0.9 * full / 4);
  for (int attempt = 0; attempt < 4; ++attempt) {
    const double wait_s = when(rng);
    const int sig = attempt % 2 ? SIGTERM : SIGINT;
    Child c = spawn(with(train_args(out), {"--resume", "latest"}));
    std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    ::kill(c.pid, sig);
    Exit e = wait_for(c);
    if (!expect_clean_stop(e, sig, std::string(strsignal(sig)) + " after " + std::to_string(wait_s) + " s")) break;
  }
  Exit last = run(with(train_args(out), {"--resume", "latest"}));
  ASSERT_EQ(last.status, 0) << last.log;
  expect_checkpoints_match(out, ref, "at the end");
  expect_same_final_model(out);
}

// Ctrl-C saves a checkpoint and exits (status 130); a save that hits a full disk (here the
// file size limit, so write() fails with EFBIG) is a clear error naming the file, exit status
// 1, and the previous checkpoint stays intact and resumable.
TEST_F(TrainApp, InterruptThenFullDiskKeepsThePreviousCheckpointResumable) {
  const fs::path ref = reference_run();
  const fs::path out = scratch() / "full_disk";
  Child c = spawn(train_args(out, 4, "3"));
  // Interrupt once the first checkpoint exists.
  const auto deadline = Clock::now() + std::chrono::seconds(300);
  while (!fs::exists(out / "checkpoints" / "step_00000004") && Clock::now() < deadline &&
         ::waitpid(c.pid, nullptr, WNOHANG) == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(c.pid, SIGINT);
  Exit stopped = wait_for(c);
  ASSERT_EQ(stopped.status, 130) << stopped.log;
  EXPECT_NE(stopped.log.find("stopped at step"), std::string::npos) << stopped.log;
  auto before = step_dirs(out);
  ASSERT_FALSE(before.empty());
  expect_checkpoints_match(out, ref, "after Ctrl-C");
  const fs::path newest = before.back().second;
  const std::vector<uint8_t> newest_weights = read_file((newest / "open_clip_model.safetensors").string());

  SpawnOptions full;
  full.file_size_limit = 256 * 1024;  // the weights (~1 MB) do not fit; logs and configs do
  Exit failed = run(with(train_args(out, 4, "3"), {"--resume", "latest"}), full);
  EXPECT_EQ(failed.status, 1) << failed.log;
  EXPECT_NE(failed.log.find("clip: error:"), std::string::npos) << failed.log;
  EXPECT_NE(failed.log.find("open_clip_model.safetensors"), std::string::npos) << failed.log;
  EXPECT_NE(failed.log.find(std::strerror(EFBIG)), std::string::npos) << failed.log;
  EXPECT_EQ(step_dirs(out), before);
  EXPECT_EQ(read_file((newest / "open_clip_model.safetensors").string()), newest_weights);
  EXPECT_FALSE(has_temporaries(out));
  expect_checkpoints_match(out, ref, "after the failed save");

  Exit resumed = run(with(train_args(out, 4, "3"), {"--resume", "latest"}));
  ASSERT_EQ(resumed.status, 0) << resumed.log;
  expect_same_final_model(out);
}

// A ModifiedResNet image tower through `clip train`: it trains (the loss falls), the model
// directory carries the batch-norm running statistics and works with `clip embed`, and a run
// resumed from an earlier checkpoint ends bitwise equal to the uninterrupted one (weights and
// running statistics).
TEST_F(TrainApp, ResNetTowerTrainsAndResumesExactly) {
  const Data& d = data();
  const fs::path config = scratch() / "tiny_rn.json";
  clip::write_file_atomic(config.string(),
                          std::string(R"({"embed_dim": 32, "quick_gelu": true,
 "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
 "text_cfg": {"context_length": 16, "vocab_size": 600, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 4}})"));
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{"train", "--train-data", d.train.string(), "--templates", d.templates.string(),
                                    "--model-config", config.string(), "--vocab", d.vocab.string(),
                                    "--batch-size", "8", "--steps", "8", "--lr", "2e-3", "--warmup", "2",
                                    "--seed", "4", "--hflip", "--threads", "1", "--workers", "1",
                                    "--save-every", "1", "--keep", "0", "--log-every", "1",
                                    "--zeroshot-data", d.val_dir.string(), "--zeroshot-templates",
                                    d.templates.string(), "--val-every", "4", "--output", out.string()};
  };
  const fs::path a = scratch() / "rn_a";
  Exit e = run(args(a));
  ASSERT_EQ(e.status, 0) << e.log;
  std::vector<double> loss;
  for (const auto& j : records(a / "metrics.jsonl"))
    if (j["type"] == "train") loss.push_back(j["loss"].get<double>());
  ASSERT_EQ(loss.size(), 8u);
  EXPECT_LT(loss.back(), loss.front()) << e.log;
  const fs::path weights = a / "model" / "open_clip_model.safetensors";
  {
    clip::SafetensorsFile f = clip::SafetensorsFile::open(weights.string());
    ASSERT_NE(f.find("visual.layer1.0.bn1.running_var"), nullptr);
    ASSERT_NE(f.find("visual.attnpool.q_proj.weight"), nullptr);
  }
  const fs::path npy = scratch() / "rn_embed.npy";
  clip::test::CliRun r = clip::test::run_clip(
      "embed --model " + (a / "model").string() + " --images " + (d.val_dir / "cat").string() + " -o " + npy.string(),
      scratch().string());
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<int64_t> shape;
  (void)clip::read_npy_f32(npy.string(), shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 32}));

  // Resume from step 3 of a copy of the run: the same final model, byte for byte.
  const fs::path b = scratch() / "rn_b";
  fs::create_directories(b / "checkpoints");
  fs::copy(a / "checkpoints" / "step_00000003", b / "checkpoints" / "step_00000003", fs::copy_options::recursive);
  Exit resumed = run(with(args(b), {"--resume", "latest"}));
  ASSERT_EQ(resumed.status, 0) << resumed.log;
  EXPECT_EQ(read_file((b / "model" / "open_clip_model.safetensors").string()), read_file(weights.string()))
      << "the resumed ResNet run's final weights or running statistics differ";
}

// ---- data parallel under mpirun (issue 18) ----
namespace {

// `mpirun -np N clip <args>` (as root too; more ranks than cores allowed), one thread each.
Child spawn_mpi(int np, const std::vector<std::string>& args) {
  SpawnOptions so;
  so.launcher = {"/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np)};
  so.env = {{"OMP_NUM_THREADS", "1"},
            // Under ASan: Open MPI's own allocations outlive MPI_Finalize (not clip's to free).
            {"ASAN_OPTIONS", "detect_leaks=0"},
            // Containers often forbid the cross-process memory copy of Open MPI's shared-memory transport.
            {"OMPI_MCA_btl_vader_single_copy_mechanism", "none"}};
  return spawn(args, so);
}

std::vector<double> train_losses(const fs::path& out) {
  std::vector<double> loss;
  for (const auto& j : records(out / "metrics.jsonl"))
    if (j["type"] == "train") loss.push_back(j["loss"].get<double>());
  return loss;
}

double largest_weight_difference(const fs::path& a, const fs::path& b) {
  clip::SafetensorsFile fa = clip::SafetensorsFile::open(a.string()), fb = clip::SafetensorsFile::open(b.string());
  double worst = 0;
  for (const auto& t : fa.tensors()) {
    const auto* u = fb.find(t.name);
    EXPECT_TRUE(u) << t.name;
    if (!u || t.dtype != clip::DType::F32) continue;
    const float* x = reinterpret_cast<const float*>(fa.bytes(t));
    const float* y = reinterpret_cast<const float*>(fb.bytes(*u));
    for (int64_t i = 0; i < t.numel(); ++i) worst = std::max(worst, double(std::abs(x[i] - y[i])));
  }
  return worst;
}

void require_mpi() {
  ASSERT_TRUE(fs::exists("/usr/bin/mpirun")) << "mpirun is missing: install openmpi-bin (scripts/install-deps.sh)";
}

}  // namespace

// 2 processes x 4 samples against 1 process x 8, 20 steps: the same per-step losses (1e-4
// relative) and nearly the same weights; config.json records the world size; a checkpoint of
// the 2-process run resumes on 1 process and continues the same sample order.
TEST_F(TrainApp, MpiTwoProcessesTrainAsOneAndResumeOnOne) {
  require_mpi();
  const fs::path one = reference_run();
  const fs::path two = scratch() / "mpi_two";
  Exit e = wait_for(spawn_mpi(2, train_args(two, 5, "0")));
  ASSERT_EQ(e.status, 0) << e.log;
  EXPECT_NE(e.log.find("2 processes"), std::string::npos) << e.log;
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file((two / "config.json").string()));
  EXPECT_EQ(cfg["derived"]["world_size"], 2);
  const std::vector<double> a = train_losses(one), b = train_losses(two);
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(a[i]));
  const double wdiff = largest_weight_difference(one / "model" / "open_clip_model.safetensors",
                                                 two / "model" / "open_clip_model.safetensors");
  std::printf("2 processes vs 1: largest per-step loss relative difference %.3e, final weights' largest "
              "difference %.3e\n", worst, wdiff);
  EXPECT_LE(worst, 1e-4);
  EXPECT_LE(wdiff, 1e-3);

  // Step 10 of the 2-process run, resumed by one process.
  const fs::path resumed = scratch() / "mpi_resumed";
  fs::create_directories(resumed / "checkpoints");
  fs::copy(two / "checkpoints" / "step_00000010", resumed / "checkpoints" / "step_00000010",
           fs::copy_options::recursive);
  Exit r = run(with(train_args(resumed, 5, "0"), {"--resume", "latest"}));
  ASSERT_EQ(r.status, 0) << r.log;
  const std::vector<double> c = train_losses(resumed);
  ASSERT_EQ(c.size(), 10u);  // steps 11..20 (the metrics before the checkpoint were not copied)
  double worst_resumed = 0;
  for (size_t i = 0; i < c.size(); ++i) worst_resumed = std::max(worst_resumed, std::abs(c[i] - a[10 + i]) / std::abs(a[10 + i]));
  std::printf("resumed on 1 process from the 2-process step 10: largest loss relative difference %.3e\n",
              worst_resumed);
  EXPECT_LE(worst_resumed, 1e-4);
}

// A rank killed (SIGKILL) in the middle of a run: the whole job ends, non-zero, within 30 s;
// the last checkpoint is intact, and one process resumes and finishes the run.
TEST_F(TrainApp, MpiKilledRankEndsTheJobAndOneProcessFinishesIt) {
  require_mpi();
  const fs::path out = scratch() / "mpi_killed";
  std::vector<std::string> args = train_args(out, 2, "0");
  *std::find(args.begin(), args.end(), "20") = "60";  // --steps 60: still running when killed
  Child job = spawn_mpi(2, args);
  // Wait for a checkpoint, then kill one rank (a child of mpirun running clip).
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (step_dirs(out).size() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GE(step_dirs(out).size(), 2u) << read_text_file(job.log.string());
  pid_t victim = -1;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream st(e.path() / "stat");
    std::string line;
    std::getline(st, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == job.pid && line.find("(clip)") != std::string::npos) victim = pid_t(std::stol(name));
  }
  ASSERT_GT(victim, 0) << "no clip process under mpirun " << job.pid;
  const auto killed_at = Clock::now();
  ::kill(victim, SIGKILL);
  Exit e = wait_for(job, 60);
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  std::printf("killed rank (pid %d): the job ended with status %d after %.1f s\n", int(victim), e.status, seconds);
  EXPECT_NE(e.status, 0) << e.log;
  EXPECT_LT(seconds, 30.0);
  // mpirun names the process that died ("... process rank 1 with PID ... exited on signal 9").
  EXPECT_NE(e.log.find("rank"), std::string::npos) << e.log;
  std::printf("%s\n", e.log.substr(e.log.rfind("mpirun noticed") == std::string::npos ? 0 : e.log.rfind("mpirun noticed")).substr(0, 300).c_str());
  EXPECT_FALSE(step_dirs(out).empty());
  // One process finishes the run from the last checkpoint.
  Exit r = run(with(args, {"--resume", "latest"}));
  ASSERT_EQ(r.status, 0) << r.log;
  EXPECT_TRUE(fs::exists(out / "model" / "open_clip_model.safetensors"));
}

// `--loss siglip`: the model gets a logit_bias (open_clip's SigLIP init: t = ln 10, b = -10),
// 2 processes (the ring) train as 1, and the saved model (init_logit_bias in its config,
// logit_bias among its tensors) loads for inference.
TEST_F(TrainApp, MpiSigmoidLossTwoProcessesTrainAsOne) {
  require_mpi();
  auto args = [](const fs::path& out) {
    std::vector<std::string> a = with(train_args(out, 5, "0"), {"--loss", "siglip"});
    *std::find(a.begin(), a.end(), "20") = "8";  // --steps 8
    return a;
  };
  const fs::path one = scratch() / "siglip_one", two = scratch() / "siglip_two";
  Exit e1 = run(args(one));
  ASSERT_EQ(e1.status, 0) << e1.log;
  Exit e2 = wait_for(spawn_mpi(2, args(two)));
  ASSERT_EQ(e2.status, 0) << e2.log;
  const std::vector<double> a = train_losses(one), b = train_losses(two);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(a[i]));
  std::printf("sigmoid loss, 2 processes vs 1: largest per-step loss relative difference %.3e (first loss %.4f)\n",
              worst, a[0]);
  EXPECT_LE(worst, 1e-4);
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file((two / "model" / "open_clip_config.json").string()));
  EXPECT_EQ(cfg["model_cfg"]["init_logit_bias"], -10.0) << cfg.dump();
  clip::SafetensorsFile f = clip::SafetensorsFile::open((two / "model" / "open_clip_model.safetensors").string());
  ASSERT_NE(f.find("logit_bias"), nullptr);
  const fs::path npy = scratch() / "siglip_embed.npy";
  clip::test::CliRun r = clip::test::run_clip(
      "embed --model " + (two / "model").string() + " --images " + (data().val_dir / "cat").string() + " -o " +
          npy.string(),
      scratch().string());
  EXPECT_EQ(r.status, 0) << r.err;
}
