// A trained model is written as a checkpoint the inference code loads: the loader recovers
// the configuration and the inference encoders (src/model) compute the same features as the
// training forward pass.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/io.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "text/bpe_train.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "nn/clip_network.h"
#include "core/rng.h"
#include "train/run.h"
#include "train/trainer.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;
namespace fs = std::filesystem;

namespace {

ModelConfig config(Activation act, int vision_heads, int text_heads) {
  ModelConfig c;
  c.embed_dim = 32;
  c.activation = act;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 128;
  c.vision.heads = vision_heads;
  c.vision.layers = 2;
  c.vision.mlp_dim = 512;
  c.text.context_length = 12;
  c.text.vocab_size = 60;
  c.text.width = 64;
  c.text.heads = text_heads;
  c.text.layers = 2;
  c.text.mlp_dim = 256;
  return c;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(double(b[i])));
    diff = std::max(diff, std::abs(double(a[i]) - b[i]));
  }
  EXPECT_LE(diff, 1e-5 * scale) << what;
}

void round_trip(const ModelConfig& c, bool directory) {
  ClipNetwork<float> m(c);
  m.init_openai(17);
  std::mt19937 gen(1);
  std::normal_distribution<float> d(0.f, 0.05f);
  for (size_t i = 0; i + 1 < m.num_params(); ++i) m.params()[i] += d(gen);  // not logit_scale
  const fs::path out = fs::path(CLIP_BINARY_DIR) / (directory ? "train_ckpt_dir" : "train_ckpt.safetensors");
  fs::remove_all(out);
  if (directory)
    m.save_model_directory(out.string());
  else
    m.save(out.string());
  LoadedCheckpoint ck = load_checkpoint(out.string());
  EXPECT_EQ(ck.config.embed_dim, c.embed_dim);
  EXPECT_EQ(ck.config.vision.width, c.vision.width);
  EXPECT_EQ(ck.config.vision.heads, c.vision.heads);
  EXPECT_EQ(ck.config.text.heads, c.text.heads);
  EXPECT_EQ(ck.config.vision.layers, c.vision.layers);
  EXPECT_EQ(ck.config.text.context_length, c.text.context_length);
  EXPECT_EQ(ck.config.activation, c.activation);

  // Loading back into a trainable model is exact.
  ClipNetwork<float> back(c);
  back.load(ck.tensors, /*ignore_unknown=*/false);
  EXPECT_EQ(std::vector<float>(back.params(), back.params() + back.num_params()),
            std::vector<float>(m.params(), m.params() + m.num_params()));

  // The inference encoders agree with the training forward pass.
  const int N = 3, S = c.vision.image_size, L = c.text.context_length;
  std::vector<float> pixels(size_t(N * 3 * S * S));
  for (auto& p : pixels) p = d(gen) * 20;
  std::vector<int32_t> ids(size_t(N * L), 0);
  for (int b = 0; b < N; ++b) {
    const int len = 3 + b * 4;
    ids[b * L] = c.text.vocab_size - 2;
    for (int l = 1; l < len - 1; ++l) ids[b * L + l] = 1 + (b * 7 + l * 3) % (c.text.vocab_size - 3);
    ids[b * L + len - 1] = c.text.vocab_size - 1;
  }
  std::vector<float> ours_i(size_t(N * c.embed_dim)), ours_t(ours_i.size()), inf_i(ours_i.size()),
      inf_t(ours_i.size());
  m.forward_image(pixels.data(), N, ours_i.data());
  m.forward_text(ids.data(), N, ours_t.data());
  ClipModel model(std::move(ck));
  model.encode_images(pixels.data(), N, inf_i.data());
  model.encode_texts(ids.data(), N, L, inf_t.data());
  expect_close(ours_i, inf_i, "image features");
  expect_close(ours_t, inf_t, "text features");
  EXPECT_FLOAT_EQ(model.logit_scale(), m.logit_scale());

  // Validation during training (clip train's validator: encode_* with the linear layers
  // prepared from the current parameters) computes bit for bit what the saved checkpoint gives
  // through ClipModel (clip embed, clip eval): one network definition, one preparation.
  std::vector<float> val_i(inf_i.size()), val_t(inf_t.size());
  {
    const InferencePreparation<float> prepared(m);
    EXPECT_TRUE(m.prepared());
    m.encode_images(pixels.data(), N, val_i.data());
    m.encode_texts(ids.data(), N, L, val_t.data());
  }
  EXPECT_FALSE(m.prepared());
  EXPECT_EQ(val_i, inf_i);
  EXPECT_EQ(val_t, inf_t);
  // Unprepared (raw weights, the training products) it is the training forward's numbers.
  m.encode_images(pixels.data(), N, val_i.data());
  EXPECT_EQ(val_i, ours_i);
}

}  // namespace

// A bare OpenAI-named file: the loader infers heads = width / 64 and QuickGELU.
TEST(TrainCheckpoint, OpenAIFileLoadsAndMatchesInference) {
  round_trip(config(Activation::QuickGELU, 2, 1), false);
}

// A model directory keeps any head count and GELU.
TEST(TrainCheckpoint, ModelDirectoryKeepsConfigAndMatchesInference) {
  round_trip(config(Activation::GELU, 4, 2), true);
}

// ---- training checkpoints and exact resume (checkpoint.h, run.h) ----

namespace {

// Per-process scratch folder: CTest runs every test case as its own process, several at once.
fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(CLIP_BINARY_DIR) / "test_tmp" /
                     ("train_ckpt_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// The per-process scratch folder is removed at the end unless a test failed.
class CleanScratch : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      std::error_code ec;
      fs::remove_all(fs::path(CLIP_BINARY_DIR) / "test_tmp" / ("train_ckpt_" + std::to_string(::getpid())), ec);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const clean_scratch = ::testing::AddGlobalTestEnvironment(new CleanScratch);

ModelConfig tiny_config() {
  ModelConfig c;
  c.embed_dim = 32;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 64;
  c.vision.heads = 2;
  c.vision.layers = 2;
  c.vision.mlp_dim = 256;
  c.text.context_length = 16;
  c.text.vocab_size = 64;
  c.text.width = 64;
  c.text.heads = 2;
  c.text.layers = 2;
  c.text.mlp_dim = 256;
  return c;
}

// Batches that are a pure function of (seed, epoch, sample index), as the real loader's.
class SyntheticSource : public BatchSource {
 public:
  SyntheticSource(const ModelConfig& c, int64_t batch, int64_t epoch_size, uint64_t seed)
      : c_(c), batch_(batch), epoch_size_(epoch_size), seed_(seed) {}
  data::Batch next() override {
    if (pos_.samples + batch_ > epoch_size_) {
      ++pos_.epoch;
      pos_.samples = 0;
    }
    const int S = c_.vision.image_size, L = c_.text.context_length, V = c_.text.vocab_size;
    data::Batch b;
    b.size = batch_;
    b.pixels.resize(size_t(batch_) * 3 * S * S);
    b.ids.assign(size_t(batch_) * L, 0);
    for (int64_t i = 0; i < batch_; ++i) {
      Rng rng(seed_ * 1000003u + uint64_t(pos_.epoch) * 7919u + uint64_t(pos_.samples + i));
      float* px = b.pixels.data() + size_t(i) * 3 * S * S;
      for (int k = 0; k < 3 * S * S; ++k) px[k] = float(rng.normal());
      int32_t* row = b.ids.data() + size_t(i) * L;
      const int len = 3 + int(rng.next_u64() % uint64_t(L - 3));
      row[0] = V - 2;
      for (int l = 1; l < len - 1; ++l) row[l] = 1 + int32_t(rng.next_u64() % uint64_t(V - 3));
      row[len - 1] = V - 1;
      b.labels.push_back(-1);
      b.captions.push_back("");
    }
    pos_.samples += batch_;
    b.end = pos_;
    ++delivered_;
    if (stop_after_ > 0 && delivered_ == stop_after_ && stop_) stop_->store(1);
    return b;
  }
  void seek(const data::LoaderPosition& p) override { pos_ = p; }
  // Raise `stop` when the n-th batch is delivered (a Ctrl-C during that step).
  void stop_after(int64_t n, std::atomic<int>* stop) {
    stop_after_ = n;
    stop_ = stop;
  }

 private:
  ModelConfig c_;
  int64_t batch_, epoch_size_;
  uint64_t seed_;
  data::LoaderPosition pos_;
  int64_t delivered_ = 0, stop_after_ = 0;
  std::atomic<int>* stop_ = nullptr;
};

TrainConfig train_config(int64_t total) {
  TrainConfig tc;
  tc.adamw.lr = 1e-3;
  tc.warmup_steps = 2;
  tc.total_steps = total;
  tc.max_grad_norm = 1.0;
  return tc;
}

// A tiny BPE vocabulary (so the model directories are complete).
std::string tiny_vocab(const fs::path& dir) {
  text::BpeTrainOptions o;
  o.vocab_size = 530;
  o.min_pair_count = 1;
  text::write_trained_bpe(text::train_bpe({"a photo of a cat", "a photo of a dog"}, o), dir.string());
  return dir.string();
}

std::vector<float> params_of(const ClipNetwork<float>& m) {
  return std::vector<float>(m.params(), m.params() + m.num_params());
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST(TrainCheckpoint, FullTrainingStateRoundTripsAndIsAModelDirectory) {
  const fs::path d = scratch("roundtrip");
  const ModelConfig c = tiny_config();
  ClipNetwork<float> m(c);
  m.init_openai(3);
  Trainer<float> tr(m, train_config(10));
  SyntheticSource src(c, 4, 12, 5);
  for (int i = 0; i < 3; ++i) {
    data::Batch b = src.next();
    tr.step(b.pixels.data(), b.ids.data(), b.size);
  }
  TrainState st;
  st.step = tr.steps_done();
  st.loader = {1, 4};
  st.samples_seen = 12;
  st.seed = 0xfedcba9876543210ull;  // above INT64_MAX: kept exactly
  st.elapsed_seconds = 1.25;
  st.config_json = R"({"lr": 0.001, "train-data": "x.csv"})";
  ModelDirectoryExtras extras;
  extras.preprocess.image_size = 32;
  extras.preprocess.mean = {0.5f, 0.25f, 0.125f};
  extras.preprocess.interpolation = Interpolation::Bilinear;
  extras.vocab_files = vocabulary_files(tiny_vocab(d / "vocab"));
  const std::string dir = save_checkpoint((d / "checkpoints").string(), m, tr.optimizer(), st, extras);
  EXPECT_EQ(fs::path(dir).filename(), "step_00000003");
  EXPECT_EQ(read_text_file((d / "checkpoints" / "latest").string()), "step_00000003\n");
  EXPECT_EQ(latest_checkpoint((d / "checkpoints").string()).value(), dir);

  ClipNetwork<float> m2(c);
  m2.init_openai(99);
  Trainer<float> tr2(m2, train_config(10));
  const TrainState back = load_checkpoint_into(dir, m2, tr2.optimizer());
  EXPECT_EQ(params_of(m2), params_of(m));
  EXPECT_EQ(tr2.optimizer().exp_avg(), tr.optimizer().exp_avg());
  EXPECT_EQ(tr2.optimizer().exp_avg_sq(), tr.optimizer().exp_avg_sq());
  EXPECT_EQ(tr2.optimizer().steps(), 3);
  EXPECT_EQ(back.step, 3);
  EXPECT_EQ(back.optimizer_steps, 3);
  EXPECT_EQ(back.loader.epoch, 1);
  EXPECT_EQ(back.loader.samples, 4);
  EXPECT_EQ(back.samples_seen, 12);
  EXPECT_EQ(back.seed, st.seed);
  EXPECT_EQ(back.elapsed_seconds, 1.25);
  EXPECT_EQ(nlohmann::json::parse(back.config_json), nlohmann::json::parse(st.config_json));
  EXPECT_EQ(read_train_state(dir).step, 3);

  // The checkpoint is a complete model directory: weights + config + vocabulary + preprocessing.
  LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.config.vision.heads, 2);
  EXPECT_EQ(ck.config.text.vocab_size, 64);
  Tokenizer tok = Tokenizer::from_directory(dir);
  EXPECT_EQ(tok.vocab_size(), Tokenizer::from_directory((d / "vocab").string()).vocab_size());
  EXPECT_EQ(tok.encode("a photo of a dog"), Tokenizer::from_directory((d / "vocab").string()).encode("a photo of a dog"));
  PreprocessConfig pp = load_preprocess_config(dir);
  EXPECT_EQ(pp.image_size, 32);
  EXPECT_EQ(pp.mean, extras.preprocess.mean);
  EXPECT_EQ(pp.std, extras.preprocess.std);
  EXPECT_EQ(pp.interpolation, Interpolation::Bilinear);

  // Another architecture refuses the moments.
  ModelConfig other = c;
  other.text.layers = 1;
  ClipNetwork<float> m3(other);
  Trainer<float> tr3(m3, train_config(10));
  EXPECT_THROW(load_checkpoint_into(dir, m3, tr3.optimizer()), Error);
}

TEST(TrainCheckpoint, LeftoverTemporaryDirectoriesAreIgnoredAndRemoved) {
  const fs::path d = scratch("leftovers");
  const fs::path ck = d / "checkpoints";
  const ModelConfig c = tiny_config();
  ClipNetwork<float> m(c);
  m.init_openai(1);
  AdamW<float> opt(m, AdamWConfig{});
  TrainState st;
  st.step = 2;
  ModelDirectoryExtras extras;
  extras.preprocess.image_size = 32;
  save_checkpoint(ck.string(), m, opt, st, extras);
  // A crash in the middle of saving step 4: a partial temporary directory.
  fs::create_directories(ck / "step_00000004.tmp-12345");
  write_file_atomic((ck / "step_00000004.tmp-12345" / "open_clip_model.safetensors").string(), std::string("junk"));
  // ... and in the middle of deleting step 1.
  fs::create_directories(ck / "step_00000001.tmp-del-12345");
  auto all = list_checkpoints(ck.string());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, 2);
  EXPECT_EQ(fs::path(latest_checkpoint(ck.string()).value()).filename(), "step_00000002");
  EXPECT_EQ(remove_temporary_checkpoints(ck.string()), 2);
  EXPECT_FALSE(fs::exists(ck / "step_00000004.tmp-12345"));
  EXPECT_FALSE(fs::exists(ck / "step_00000001.tmp-del-12345"));
  EXPECT_TRUE(fs::exists(ck / "step_00000002" / "train_state.safetensors"));
  // Saving the same step again replaces it.
  m.params()[0] += 1.0f;
  save_checkpoint(ck.string(), m, opt, st, extras);
  ClipNetwork<float> m2(c);
  AdamW<float> opt2(m2, AdamWConfig{});
  load_checkpoint_into((ck / "step_00000002").string(), m2, opt2);
  EXPECT_EQ(params_of(m2), params_of(m));
  EXPECT_EQ(list_checkpoints(ck.string()).size(), 1u);
}

TEST(TrainCheckpoint, PruningKeepsTheNewestAndEveryNth) {
  const fs::path d = scratch("prune");
  const fs::path ck = d / "checkpoints";
  ClipNetwork<float> m(tiny_config());
  m.init_openai(1);
  AdamW<float> opt(m, AdamWConfig{});
  ModelDirectoryExtras extras;
  extras.preprocess.image_size = 32;
  for (int64_t s = 1; s <= 10; ++s) {
    TrainState st;
    st.step = s;
    save_checkpoint(ck.string(), m, opt, st, extras);
    prune_checkpoints(ck.string(), CheckpointPolicy{2, 4});
  }
  std::vector<int64_t> steps;
  for (auto& [s, p] : list_checkpoints(ck.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 8, 9, 10}));
  prune_checkpoints(ck.string(), CheckpointPolicy{1, 0});
  steps.clear();
  for (auto& [s, p] : list_checkpoints(ck.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{10}));
  int entries = 0;
  for (auto& e : fs::directory_iterator(ck)) entries += e.path().filename() != "latest";
  EXPECT_EQ(entries, 1);  // no temporary leftovers
}

namespace {

struct RunOutcome {
  std::vector<float> params, m, v;
  RunResult result;
};

// Trains `total` steps in `out`; stop_after > 0 interrupts after that many batches of this
// session; resume continues from the latest checkpoint.
RunOutcome train_session(const fs::path& out, int64_t total, int64_t stop_after, bool resume,
                         const ModelDirectoryExtras& extras) {
  const ModelConfig c = tiny_config();
  ClipNetwork<float> m(c);
  m.init_openai(7);
  Trainer<float> tr(m, train_config(total));
  SyntheticSource src(c, 4, 14, 11);  // 3 batches per epoch (2 samples dropped)
  std::atomic<int> stop{0};
  if (stop_after > 0) src.stop_after(stop_after, &stop);
  RunOptions o;
  o.output = out.string();
  o.total_steps = total;
  o.save_every = 3;
  o.keep = CheckpointPolicy{2, 0};
  o.val_every = 4;
  o.seed = 11;
  o.config_json = R"({"steps": )" + std::to_string(total) + "}";
  o.model_extras = extras;
  o.progress = false;
  o.log = [](const std::string&) {};
  TrainRun run(m, tr, src, o);
  std::string from;
  if (resume) {
    auto latest = latest_checkpoint((out / "checkpoints").string());
    if (latest) from = *latest;
  }
  run.start(from);
  // Validation reads the model at another batch size: it must not disturb training.
  Validator val = [&c](ClipNetwork<float>& model) {
    std::vector<float> px(size_t(7) * 3 * 32 * 32, 0.25f), f(size_t(7) * c.embed_dim);
    model.forward_image(px.data(), 7, f.data());
    return std::vector<std::pair<std::string, double>>{{"val/feature0", double(f[0])}};
  };
  RunOutcome r;
  r.result = run.run(&stop, val);
  r.params = params_of(m);
  r.m = tr.optimizer().exp_avg();
  r.v = tr.optimizer().exp_avg_sq();
  return r;
}

}  // namespace

TEST(TrainCheckpoint, ResumedRunIsBitwiseEqualToAnUninterruptedOne) {
  const fs::path d = scratch("resume");
  ModelDirectoryExtras extras;
  extras.preprocess.image_size = 32;
  const int64_t total = 11;
  RunOutcome a = train_session(d / "a", total, 0, false, extras);
  ASSERT_TRUE(a.result.finished);
  EXPECT_EQ(a.result.step, total);

  // Interrupted at step 4 (not a multiple of save_every: the stop saves), then at step 6 (a
  // regular checkpoint step) with a killed writer's partial metrics line, then to the end.
  RunOutcome b1 = train_session(d / "b", total, 4, false, extras);
  EXPECT_FALSE(b1.result.finished);
  EXPECT_EQ(b1.result.step, 4);
  EXPECT_EQ(fs::path(b1.result.checkpoint).filename(), "step_00000004");
  EXPECT_THROW(train_session(d / "b", total, 0, false, extras), Error);  // fresh start refused
  RunOutcome b2 = train_session(d / "b", total, 2, true, extras);
  EXPECT_EQ(b2.result.step, 6);
  {
    std::ofstream f(d / "b" / "metrics.jsonl", std::ios::app);
    f << "{\"type\": \"train\", \"step\": 7, \"lo";
  }
  RunOutcome b3 = train_session(d / "b", total, 0, true, extras);
  ASSERT_TRUE(b3.result.finished);
  EXPECT_EQ(b3.params, a.params);
  EXPECT_EQ(b3.m, a.m);
  EXPECT_EQ(b3.v, a.v);
  EXPECT_EQ(read_file((d / "a" / "model" / "open_clip_model.safetensors").string()),
            read_file((d / "b" / "model" / "open_clip_model.safetensors").string()));

  // metrics.jsonl: every line parses; train lines are steps 1..total once each, in order, with
  // the same losses as the uninterrupted run; validation lines at steps 4, 8 and the end.
  auto records = [](const fs::path& p) {
    std::vector<nlohmann::json> out;
    for (const std::string& line : read_lines(p)) out.push_back(nlohmann::json::parse(line));
    return out;
  };
  const auto ra = records(d / "a" / "metrics.jsonl"), rb = records(d / "b" / "metrics.jsonl");
  std::vector<int64_t> train_steps, val_steps;
  std::vector<double> la, lb;
  for (const auto& j : ra)
    if (j["type"] == "train") la.push_back(j["loss"].get<double>());
  for (const auto& j : rb) {
    if (j["type"] == "train") {
      train_steps.push_back(j["step"].get<int64_t>());
      lb.push_back(j["loss"].get<double>());
      for (const char* k : {"epoch", "samples", "lr", "logit_scale", "temperature", "grad_norm", "samples_per_s", "elapsed"})
        EXPECT_TRUE(j.contains(k)) << k;
    } else {
      val_steps.push_back(j["step"].get<int64_t>());
      EXPECT_TRUE(j.contains("val/feature0"));
    }
  }
  EXPECT_EQ(train_steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(val_steps, (std::vector<int64_t>{4, 8, 11}));
  EXPECT_EQ(lb, la);
  const std::string svg = read_text_file((d / "b" / "curves.svg").string());
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("val/feature0"), std::string::npos);

  // Resuming a finished run changes nothing.
  RunOutcome b4 = train_session(d / "b", total, 0, true, extras);
  EXPECT_TRUE(b4.result.finished);
  EXPECT_EQ(b4.params, a.params);
}

// A checkpoint that cannot be written (here: a file size limit, as a full disk) is an error
// naming the file; nothing partial is left and the earlier checkpoint is intact.
TEST(TrainCheckpoint, FailedSaveLeavesTheEarlierCheckpointIntact) {
  const fs::path d = scratch("fullsave");
  const fs::path ck = d / "checkpoints";
  ClipNetwork<float> m(tiny_config());
  m.init_openai(1);
  AdamW<float> opt(m, AdamWConfig{});
  ModelDirectoryExtras extras;
  extras.preprocess.image_size = 32;
  TrainState st;
  st.step = 1;
  save_checkpoint(ck.string(), m, opt, st, extras);
  const std::vector<uint8_t> before = read_file((ck / "step_00000001" / "open_clip_model.safetensors").string());
  const fs::path msg_file = d / "message.txt";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = 64 * 1024;
    ::setrlimit(RLIMIT_FSIZE, &rl);
    int code = 3;
    try {
      TrainState s2;
      s2.step = 2;
      m.params()[0] += 1;
      save_checkpoint(ck.string(), m, opt, s2, extras);
      code = 2;  // should have failed
    } catch (const Error& e) {
      std::ofstream(msg_file) << e.what();
      code = 0;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  const std::string msg = read_text_file(msg_file.string());
  EXPECT_NE(msg.find("open_clip_model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(EFBIG)), std::string::npos) << msg;
  auto all = list_checkpoints(ck.string());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, 1);
  for (auto& e : fs::directory_iterator(ck))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  EXPECT_EQ(read_file((ck / "step_00000001" / "open_clip_model.safetensors").string()), before);
  ClipNetwork<float> m2(tiny_config());
  AdamW<float> opt2(m2, AdamWConfig{});
  EXPECT_EQ(load_checkpoint_into(all[0].second, m2, opt2).step, 1);
}
