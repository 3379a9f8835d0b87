#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/test_points.h"
#include "core/io.h"
#include "text/vocabulary.h"
#include "core/safetensors.h"
#include "model/checkpoint_writer.h"
#include "model/weights.h"

namespace clip::train {

using namespace clip::nn;
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kStateFile = "train_state.safetensors";
constexpr const char* kStateFormat = "clip-train-state";
constexpr int kStateVersion = 1;

// Before each file of a save: the test point "save" (core/test_points.h) and, with
// CLIP_TEST_SLOW_SAVE=<ms>, a pause (tests kill runs mid-save).
void slow_save_pause() {
  test_point("save");
  static const int ms = [] {
    const char* v = std::getenv("CLIP_TEST_SLOW_SAVE");
    return v ? std::max(0, std::atoi(v)) : 0;
  }();
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

const char* interpolation_name(Interpolation i) {
  switch (i) {
    case Interpolation::Bilinear: return "bilinear";
    case Interpolation::Nearest: return "nearest";
    case Interpolation::Bicubic: break;
  }
  return "bicubic";
}

const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::LongestPad: return "longest";
    case ResizeMode::Squash: return "squash";
    case ResizeMode::ShortestCrop: break;
  }
  return "shortest";
}

// A fingerprint of the parameter arena's layout (names, shapes, offsets): moments saved for
// one layout are never loaded into another.
std::string layout_fingerprint(const ClipNetwork<float>& model) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
  };
  for (const ParamEntry& e : model.parameters()) {
    mix(e.name);
    for (int64_t d : e.shape) mix(":" + std::to_string(d));
    mix("@" + std::to_string(e.offset) + ";");
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

bool parse_step_name(const std::string& name, int64_t& step) {
  if (name.size() != 13 || name.compare(0, 5, "step_") != 0) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  step = v;
  return true;
}

std::string tmp_suffix(const char* kind) { return std::string(kind) + std::to_string(::getpid()); }

json state_to_json(const TrainState& s) {
  return {{"step", s.step},
          {"optimizer_steps", s.optimizer_steps},
          {"epoch", s.loader.epoch},
          {"samples", s.loader.samples},
          {"samples_seen", s.samples_seen},
          {"seed", s.seed},
          {"elapsed_seconds", s.elapsed_seconds}};
}

struct StateFile {
  TrainState state;
  int64_t num_params = 0;
  std::string layout;
};

StateFile read_state_file(const SafetensorsFile& f) {
  const std::string& path = f.path();
  const auto& meta = f.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) throw Error(path + ": not a training state (no '" + key + "' metadata)");
    return it->second;
  };
  if (get("format") != kStateFormat) throw Error(path + ": not a training state (format '" + get("format") + "')");
  StateFile out;
  try {
    if (std::stoi(get("version")) != kStateVersion)
      throw Error(path + ": training state version " + get("version") + " is not supported (expected " +
                  std::to_string(kStateVersion) + ")");
    const json j = json::parse(get("state"));
    TrainState& s = out.state;
    s.step = j.at("step").get<int64_t>();
    s.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
    s.loader.epoch = j.at("epoch").get<int64_t>();
    s.loader.samples = j.at("samples").get<int64_t>();
    s.samples_seen = j.at("samples_seen").get<int64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.elapsed_seconds = j.at("elapsed_seconds").get<double>();
    const json cfg = json::parse(get("config"));
    if (!cfg.is_object()) throw Error(path + ": the saved configuration is not a JSON object");
    s.config_json = get("config");
    out.num_params = std::stoll(get("num_params"));
    out.layout = get("layout");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path + ": bad training state metadata: " + e.what());
  }
  if (out.state.step < 0 || out.state.optimizer_steps < 0 || out.state.loader.epoch < 0 ||
      out.state.loader.samples < 0)
    throw Error(path + ": bad training state: negative counters");
  return out;
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open for fsync: " + std::strerror(errno));
  if (::fsync(fd) != 0) {
    const std::string msg = path + ": fsync failed: " + std::strerror(errno);
    ::close(fd);
    throw Error(msg);
  }
  ::close(fd);
}

std::vector<std::pair<std::string, std::vector<uint8_t>>> vocabulary_files(const std::string& vocab_path) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  for (const TokenizerFile& f : tokenizer_files(vocab_path)) out.emplace_back(f.name, read_file(f.path));
  return out;
}

void write_trained_model_directory(const std::string& dir, const ClipNetwork<float>& model,
                                   const ModelDirectoryExtras& extras) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create directory: " + ec.message());
  const fs::path d(dir);
  const ModelConfig& config = model.config();
  slow_save_pause();
  write_checkpoint((d / "open_clip_model.safetensors").string(), model.state_dict(), config,
                   NamingScheme::OpenCLIP, DType::F32);
  slow_save_pause();
  const clip::PreprocessConfig& pp = extras.preprocess;
  if (pp.image_size != config.vision.image_size)
    throw Error(dir + ": preprocessing image size " + std::to_string(pp.image_size) +
                " differs from the model's " + std::to_string(config.vision.image_size));
  json cfg;
  cfg["model_cfg"] = json::parse(model_config_to_openclip_json(config));
  cfg["preprocess_cfg"] = {{"size", pp.image_size},
                           {"mean", {pp.mean[0], pp.mean[1], pp.mean[2]}},
                           {"std", {pp.std[0], pp.std[1], pp.std[2]}},
                           {"interpolation", interpolation_name(pp.interpolation)},
                           {"resize_mode", resize_mode_name(pp.resize_mode)},
                           {"fill_color", pp.fill}};
  write_file_atomic((d / "open_clip_config.json").string(), cfg.dump(2) + "\n");
  for (const auto& [name, bytes] : extras.vocab_files) {
    slow_save_pause();
    write_file_atomic((d / name).string(), bytes.data(), bytes.size());
  }
}

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    int64_t step = 0;
    if (!parse_step_name(e.path().filename().string(), step)) continue;
    std::error_code ec2;
    if (!e.is_directory(ec2) || !fs::is_regular_file(e.path() / kStateFile, ec2)) continue;
    out.emplace_back(step, e.path().string());
  }
  if (ec) throw Error(checkpoints_dir + ": cannot read directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& checkpoints_dir) {
  auto all = list_checkpoints(checkpoints_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

int remove_temporary_checkpoints(const std::string& checkpoints_dir) {
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return 0;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = e.path().filename().string();
    // step_X.tmp-<pid> (interrupted saves), step_X.tmp-del-<pid> (interrupted deletions) and
    // write_file_atomic's hidden ".latest.tmp<n>" files.
    if (name.find(".tmp-") != std::string::npos || (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos))
      doomed.push_back(e.path());
  }
  int n = 0;
  for (const auto& p : doomed) {
    std::error_code ec2;
    fs::remove_all(p, ec2);
    if (ec2) throw Error(p.string() + ": cannot remove an interrupted checkpoint: " + ec2.message());
    ++n;
  }
  return n;
}

std::string save_checkpoint(const std::string& checkpoints_dir, const ClipNetwork<float>& model,
                            const AdamW<float>& optimizer, const TrainState& state,
                            const ModelDirectoryExtras& extras) {
  std::error_code ec;
  fs::create_directories(checkpoints_dir, ec);
  if (ec) throw Error(checkpoints_dir + ": cannot create directory: " + ec.message());
  const std::string name = checkpoint_dir_name(state.step);
  const fs::path root(checkpoints_dir);
  const fs::path final_dir = root / name;
  const fs::path tmp = root / (name + tmp_suffix(".tmp-"));
  fs::remove_all(tmp, ec);
  try {
    if (!fs::create_directory(tmp, ec) || ec)
      throw Error(tmp.string() + ": cannot create directory: " + (ec ? ec.message() : std::string("it exists")));
    write_trained_model_directory(tmp.string(), model, extras);
    slow_save_pause();
    const size_t P = model.num_params();
    if (optimizer.exp_avg().size() != P || optimizer.exp_avg_sq().size() != P)
      throw Error("the optimizer's moments do not match the model's parameter count");
    NamedTensors tensors;
    tensors.emplace_back("exp_avg", Tensor::view(const_cast<float*>(optimizer.exp_avg().data()),
                                                 {int64_t(P)}, DType::F32));
    tensors.emplace_back("exp_avg_sq", Tensor::view(const_cast<float*>(optimizer.exp_avg_sq().data()),
                                                    {int64_t(P)}, DType::F32));
    TrainState s = state;
    s.optimizer_steps = optimizer.steps();
    const std::map<std::string, std::string> meta = {
        {"format", kStateFormat},
        {"version", std::to_string(kStateVersion)},
        {"state", state_to_json(s).dump()},
        {"config", state.config_json.empty() ? std::string("{}") : state.config_json},
        {"num_params", std::to_string(P)},
        {"layout", layout_fingerprint(model)},
    };
    write_safetensors((tmp / kStateFile).string(), tensors, meta);
    fsync_path(tmp.string());
  } catch (const std::exception& e) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    throw Error("checkpoint " + final_dir.string() + " not saved (earlier checkpoints are intact): " + e.what());
  }
  // Publish: an existing checkpoint of this step is moved aside first (never left half-deleted).
  fs::path old;
  if (fs::exists(final_dir, ec)) {
    old = root / (name + tmp_suffix(".tmp-del-"));
    fs::remove_all(old, ec);
    if (::rename(final_dir.c_str(), old.c_str()) != 0) {
      const std::string msg = final_dir.string() + ": cannot replace: " + std::strerror(errno);
      fs::remove_all(tmp, ec);
      throw Error(msg);
    }
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    const std::string msg = final_dir.string() + ": rename failed: " + std::strerror(errno);
    fs::remove_all(tmp, ec);
    throw Error(msg);
  }
  fsync_path(root.string());
  if (!old.empty()) fs::remove_all(old, ec);
  write_file_atomic((root / "latest").string(), name + "\n");
  return final_dir.string();
}

void prune_checkpoints(const std::string& checkpoints_dir, const CheckpointPolicy& policy) {
  auto all = list_checkpoints(checkpoints_dir);
  if (all.empty()) return;
  std::set<int64_t> keep;
  keep.insert(all.back().first);
  const size_t n = all.size();
  for (size_t i = 0; i < n; ++i) {
    const int64_t step = all[i].first;
    if (policy.keep <= 0 || i + size_t(policy.keep) >= n) keep.insert(step);
    if (policy.keep_every > 0 && step % policy.keep_every == 0) keep.insert(step);
  }
  bool removed = false;
  for (const auto& [step, path] : all) {
    if (keep.count(step)) continue;
    const std::string doomed = path + tmp_suffix(".tmp-del-");
    if (::rename(path.c_str(), doomed.c_str()) != 0)
      throw Error(path + ": cannot remove an old checkpoint: " + std::strerror(errno));
    std::error_code ec;
    fs::remove_all(doomed, ec);
    if (ec) throw Error(doomed + ": cannot remove an old checkpoint: " + ec.message());
    removed = true;
  }
  if (removed) fsync_path(checkpoints_dir);
}

TrainState read_train_state(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kStateFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(checkpoint_dir + ": not a training checkpoint (no " + kStateFile + ")");
  return read_state_file(SafetensorsFile::open(path)).state;
}

TrainState load_checkpoint_into(const std::string& checkpoint_dir, ClipNetwork<float>& model,
                                AdamW<float>& optimizer) {
  const std::string path = (fs::path(checkpoint_dir) / kStateFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(checkpoint_dir + ": not a training checkpoint (no " + kStateFile + ")");
  const SafetensorsFile f = SafetensorsFile::open(path);
  StateFile sf = read_state_file(f);
  const size_t P = model.num_params();
  if (sf.num_params != int64_t(P) || sf.layout != layout_fingerprint(model))
    throw Error(path + ": the checkpoint's parameter layout (" + std::to_string(sf.num_params) +
                " parameters) differs from this model's (" + std::to_string(P) + "): another architecture");
  for (const char* name : {"exp_avg", "exp_avg_sq"}) {
    const SafetensorsTensorInfo* t = f.find(name);
    if (!t || t->dtype != DType::F32 || t->numel() != int64_t(P))
      throw Error(path + ": tensor '" + name + "' is missing or is not F32 [" + std::to_string(P) + "]");
  }
  LoadedCheckpoint ck = load_checkpoint(checkpoint_dir);
  try {
    model.load(ck.tensors, /*ignore_unknown=*/false);
  } catch (const Error& e) {
    throw Error(checkpoint_dir + ": " + e.what());
  }
  f.copy_f32(*f.find("exp_avg"), optimizer.exp_avg().data());
  f.copy_f32(*f.find("exp_avg_sq"), optimizer.exp_avg_sq().data());
  optimizer.set_steps(sf.state.optimizer_steps);
  return sf.state;
}

}  // namespace clip::train
