// Our training step against PyTorch's on a tiny ViT CLIP (tools/train_reference.py writes
// tests/data/train/debug_state.safetensors: inputs, initial parameters, the loss, every
// parameter's gradient and the parameters after 5 AdamW steps with warm-up + cosine schedule,
// global-norm clipping and the logit_scale clamp; once computed by torch in float32 and once
// in float64).
//
// Tolerances (issue 5): loss and gradients within 1e-5 relative with a 1e-7 absolute floor,
// element-wise:  |ours - ref| <= max(1e-5 * |ref|, 1e-7);  parameters after the 5 steps within
// 1e-6 absolute.
//   * Our float64 build of the same code meets these against torch's float64 run (the exact
//     answer; the stored values are rounded to float32, 6e-8 relative).
//   * In float32 the bound cannot be met element-wise by ANY float32 implementation: torch's
//     own float32 run misses it against its float64 run (the script stores that measurement
//     in the metadata, "float32_vs_float64"). Rounding differences of ~1e-7 relative in the
//     activations become absolute gradient errors of a few 1e-6 in gradients of size 10 (the
//     gradient norm is 59), which is over the 1e-7 floor on near-zero entries. So the float32
//     run is checked against the float64 truth with a bound derived from torch's float32 error:
//     ours must be no worse than twice torch's own float32 error (per tensor, in max-abs
//     terms, plus the tolerance), and within the tolerance relative to the
//     tensor's largest entry (a normwise 1e-5 bound).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "nn/clip_network.h"
#include "train/grad_accum.h"
#include "nn/resnet_tower.h"
#include "train/trainer.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;

namespace {

const std::string kPath = std::string(CLIP_SOURCE_DIR) + "/tests/data/train/debug_state.safetensors";
// The same with openai/CLIP's ModifiedResNet as the image tower (tools/train_reference.py
// --vision resnet): batch norm in training mode, running statistics updated each step.
const std::string kResNetPath =
    std::string(CLIP_SOURCE_DIR) + "/tests/data/train/debug_state_resnet.safetensors";

struct Reference {
  SafetensorsFile file;
  ModelConfig config;
  nlohmann::json hp;
  std::vector<float> pixels;
  std::vector<int32_t> ids;
  int64_t N = 0;

  std::vector<float> get(const std::string& name) const {
    const auto* t = file.find(name);
    if (!t) throw Error(file.path() + ": no tensor " + name);
    std::vector<float> v(size_t(t->numel()));
    file.copy_f32(*t, v.data());
    return v;
  }
  bool has(const std::string& name) const { return file.find(name) != nullptr; }
};

Reference load_reference(const std::string& path = kPath) {
  Reference r{SafetensorsFile::open(path), {}, {}, {}, {}, 0};
  const auto cfg = nlohmann::json::parse(r.file.metadata().at("config"));
  r.hp = nlohmann::json::parse(r.file.metadata().at("train"));
  ModelConfig& c = r.config;
  c.embed_dim = cfg["embed_dim"];
  c.activation = cfg["activation"] == "gelu" ? Activation::GELU : Activation::QuickGELU;
  c.vision.image_size = cfg["vision"]["image_size"];
  c.vision.width = cfg["vision"]["width"];
  c.vision.heads = cfg["vision"]["heads"];
  if (cfg["vision"]["layers"].is_array()) {  // ModifiedResNet
    c.vision.resnet_layers = cfg["vision"]["layers"].get<std::vector<int>>();
    c.vision.layers = 0;
    c.vision.patch_size = 0;
    c.vision.mlp_dim = 0;
  } else {
    c.vision.patch_size = cfg["vision"]["patch_size"];
    c.vision.layers = cfg["vision"]["layers"];
    c.vision.mlp_dim = 4 * c.vision.width;
  }
  c.text.context_length = cfg["text"]["context_length"];
  c.text.vocab_size = cfg["text"]["vocab_size"];
  c.text.width = cfg["text"]["width"];
  c.text.layers = cfg["text"]["layers"];
  c.text.heads = cfg["text"]["heads"];
  c.text.mlp_dim = 4 * c.text.width;
  r.pixels = r.get("input.pixels");
  const auto* ids = r.file.find("input.text");
  EXPECT_EQ(ids->dtype, DType::I32);
  const auto* p = reinterpret_cast<const int32_t*>(r.file.bytes(*ids));
  r.ids.assign(p, p + ids->numel());
  r.N = ids->shape[0];
  return r;
}

template <typename T>
std::map<std::string, Tensor> initial_params(const Reference& ref, const ClipNetwork<T>& m) {
  std::map<std::string, Tensor> out;
  std::set<std::string> ours;
  for (const auto& e : m.parameters()) ours.insert(e.name);
  size_t params = 0;
  for (const auto& t : ref.file.tensors()) {
    if (t.name.rfind("buffer.", 0) == 0) {  // batch-norm running statistics
      out[t.name.substr(7)] = ref.file.to_f32(t);
      continue;
    }
    if (t.name.rfind("param.", 0) != 0) continue;
    const std::string name = t.name.substr(6);
    EXPECT_TRUE(ours.count(name)) << "torch has parameter " << name << " that we lack";
    out[name] = ref.file.to_f32(t);
    ++params;
  }
  EXPECT_EQ(params, ours.size()) << "parameter sets differ";
  return out;
}

struct Diff {
  double max_abs = 0;     // max |a - b|
  double max_ref = 0;     // max |b|
  double worst = 0;       // max |a - b| / max(rtol |b|, atol): <= 1 means within tolerance
  std::string worst_name;
};

template <typename A>
void accumulate_diff(Diff& d, const std::string& name, const A* a, const std::vector<float>& b,
                     double rtol, double atol) {
  for (size_t i = 0; i < b.size(); ++i) {
    const double e = std::abs(double(a[i]) - double(b[i]));
    d.max_abs = std::max(d.max_abs, e);
    d.max_ref = std::max(d.max_ref, std::abs(double(b[i])));
    const double w = e / std::max(rtol * std::abs(double(b[i])), atol);
    if (w > d.worst) {
      d.worst = w;
      d.worst_name = name + "[" + std::to_string(i) + "]";
    }
  }
}

// Gradients of the initial parameters: ours (type T) vs the tensors "<prefix><name>".
template <typename T>
Diff compare_grads(const Reference& ref, ClipNetwork<T>& m, const std::string& prefix) {
  Diff d;
  for (const auto& e : m.parameters())
    accumulate_diff(d, e.name, m.grads() + e.offset, ref.get(prefix + e.name), 1e-5, 1e-7);
  return d;
}
// The elements of a key bias, whose exact gradient is zero (see check_float32): the key third
// of a transformer's attn.in_proj_bias, or all of the attention pool's k_proj.bias. Empty
// range otherwise.
std::pair<size_t, size_t> key_bias_range(const ParamEntry& e) {
  if (e.name.find("attn.in_proj_bias") != std::string::npos) return {e.numel / 3, 2 * e.numel / 3};
  if (e.name.find("attnpool.k_proj.bias") != std::string::npos) return {0, e.numel};
  return {0, 0};
}
template <typename V>
void erase_range(V& v, std::pair<size_t, size_t> r) {
  v.erase(v.begin() + long(r.first), v.begin() + long(r.second));
}

// skip_key_bias: leave out the key biases (key_bias_range; see below).
template <typename T>
Diff compare_params(const Reference& ref, ClipNetwork<T>& m, const std::string& prefix,
                    bool skip_key_bias = false) {
  Diff d;
  for (const auto& e : m.parameters()) {
    auto b = ref.get(prefix + e.name);
    std::vector<T> a(m.params() + e.offset, m.params() + e.offset + e.numel);
    if (skip_key_bias) {
      erase_range(a, key_bias_range(e));
      erase_range(b, key_bias_range(e));
    }
    accumulate_diff(d, e.name, a.data(), b, 0.0, 1e-6);
  }
  return d;
}
Diff compare_ref(const Reference& ref, const ClipNetwork<float>& m, const std::string& a_prefix,
                 const std::string& b_prefix, double rtol, double atol,
                 bool skip_key_bias = false) {
  Diff d;
  for (const auto& e : m.parameters()) {
    auto a = ref.get(a_prefix + e.name), b = ref.get(b_prefix + e.name);
    if (skip_key_bias) {
      erase_range(a, key_bias_range(e));
      erase_range(b, key_bias_range(e));
    }
    accumulate_diff(d, e.name, a.data(), b, rtol, atol);
  }
  return d;
}

template <typename T>
TrainConfig train_config(const Reference& ref) {
  TrainConfig tc;
  tc.adamw.lr = ref.hp["lr"];
  tc.adamw.beta1 = ref.hp["beta1"];
  tc.adamw.beta2 = ref.hp["beta2"];
  tc.adamw.eps = ref.hp["eps"];
  tc.adamw.weight_decay = ref.hp["weight_decay"];
  tc.warmup_steps = ref.hp["warmup"];
  tc.total_steps = ref.hp["steps"];
  tc.max_grad_norm = ref.hp["max_grad_norm"];
  return tc;
}

// Batch-norm running statistics after the steps: ours vs the tensors "<prefix><name>" (none
// for a ViT). rtol/atol as accumulate_diff.
template <typename T>
Diff compare_running_stats(const Reference& ref, const ClipNetwork<T>& m,
                           const std::string& prefix, double rtol, double atol) {
  Diff d;
  if (!m.resnet()) return d;
  for (const auto& [name, t] : m.resnet()->state_dict()) {
    if (name.find("running_") == std::string::npos) continue;
    accumulate_diff(d, name, t.f32(), ref.get(prefix + name), rtol, atol);
  }
  return d;
}
// The same between two stored sets.
Diff compare_stored_stats(const Reference& ref, const std::string& a_prefix,
                          const std::string& b_prefix, double rtol, double atol) {
  Diff d;
  for (const auto& t : ref.file.tensors()) {
    if (t.name.rfind(b_prefix, 0) != 0) continue;
    const std::string name = t.name.substr(b_prefix.size());
    const auto a = ref.get(a_prefix + name);
    accumulate_diff(d, name, a.data(), ref.get(t.name), rtol, atol);
  }
  return d;
}

void print(const char* what, const Diff& d) {
  std::printf("%-44s max|diff| %.3e (max|ref| %.3e), worst/tolerance %.3f at %s\n", what,
              d.max_abs, d.max_ref, d.worst, d.worst_name.c_str());
}

}  // namespace

TEST(TrainDebugState, WeightDecayGroupsMatchTheRule) {
  const Reference ref = load_reference();
  ClipNetwork<float> m(ref.config);
  // The decayed parameters: exactly the matrices that are not embeddings.
  std::set<std::string> decayed;
  for (const auto& e : m.parameters())
    if (e.weight_decay) decayed.insert(e.name);
  for (const auto& e : m.parameters()) {
    const bool matrix_weight = e.shape.size() >= 2 && e.name.find("embedding") == std::string::npos;
    EXPECT_EQ(decayed.count(e.name) == 1, matrix_weight) << e.name;
  }
  EXPECT_TRUE(decayed.count("visual.conv1.weight"));
  EXPECT_TRUE(decayed.count("text_projection"));
  EXPECT_TRUE(decayed.count("visual.proj"));
  EXPECT_FALSE(decayed.count("logit_scale"));
  EXPECT_FALSE(decayed.count("visual.class_embedding"));
  EXPECT_FALSE(decayed.count("visual.positional_embedding"));
  EXPECT_FALSE(decayed.count("token_embedding.weight"));
}

// float64: the math, checked at the tolerances against torch's float64 run.
void check_float64(const Reference& ref) {
  ClipNetwork<double> m(ref.config);
  m.load(initial_params(ref, m));
  const auto r = contrastive_gradients(m, ref.pixels.data(), ref.ids.data(), ref.N);
  const double loss64 = ref.get("loss64")[0];
  EXPECT_LE(std::abs(r.loss - loss64), 1e-5 * std::abs(loss64));
  const Diff g = compare_grads(ref, m, "grad64.");
  print("float64 grads vs torch float64", g);
  EXPECT_LE(g.worst, 1.0) << g.worst_name;

  ClipNetwork<double> m2(ref.config);
  m2.load(initial_params(ref, m2));
  Trainer<double> trainer(m2, train_config<double>(ref));
  for (int s = 0; s < int(ref.hp["steps"]); ++s) trainer.step(ref.pixels.data(), ref.ids.data(), ref.N);
  const Diff p = compare_params(ref, m2, "final64.");
  print("float64 params after 5 steps vs torch float64", p);
  EXPECT_LE(p.worst, 1.0) << p.worst_name;
  if (m2.resnet()) {
    // Five momentum-0.1 updates with the unbiased batch variance; the stored values are
    // float32 roundings of torch's float64 ones (6e-8 relative).
    const Diff b = compare_running_stats(ref, m2, "finalbuf64.", 1e-6, 1e-7);
    print("float64 running statistics vs torch float64", b);
    EXPECT_GT(b.max_ref, 0.0);
    EXPECT_LE(b.worst, 1.0) << b.worst_name;
  }
}

// ---- The float32 criterion: per tensor, normwise, against the float64 truth ----
// An element-wise bound is decided by a few near-zero entries whose float32 rounding depends
// on the kernels the CPU runs (oneDNN's blocking for AVX2, AVX-512 or AMX; vector widths of
// reductions), so it passed on one CPU and failed on another (issue 14). Per tensor, the
// Euclidean error of our float32 run against torch's float64 run must be within
//     kTorchFactor * (torch float32's own error of that tensor)
//   + kRelFloor * |reference tensor|       (float32's precision through the whole network)
//   + floor * sqrt(tensor size)            (an allowance per entry, for near-zero entries)
// Gradients: floor = kGradFloor * rms(all gradient entries). Parameters after the AdamW steps:
// the reference tensor is the update p_final - p_0, and floor = kStepFloor * (sum of the
// steps' learning rates): Adam divides each gradient entry by its own magnitude, so the
// rounding noise of a near-zero entry moves its parameter by up to a sizeable part of a full
// step, whatever the gradient's size.
// torch's float32 run is a second, independent float32 implementation: rounding differences
// between two correct implementations are of the same size, whatever the CPU. A real bug is
// not: Float32CriterionCatchesRealBugs shows a dropped term failing it by orders of magnitude.
constexpr double kTorchFactor = 4.0, kRelFloor = 2e-6, kGradFloor = 1e-6, kStepFloor = 1e-4;

using TensorSet = std::map<std::string, std::vector<double>>;

struct Normwise {
  double worst = 0;  // max over tensors of error / bound; <= 1 passes
  std::string worst_name;
  double worst_err = 0, worst_bound = 0;
};

TensorSet stored(const Reference& ref, const std::string& prefix,
                 const std::vector<ParamEntry>& entries, bool skip_key_bias = false) {
  TensorSet s;
  for (const auto& e : entries) {
    const auto v = ref.get(prefix + e.name);
    std::vector<double> d(v.begin(), v.end());
    if (skip_key_bias) erase_range(d, key_bias_range(e));
    s[e.name] = std::move(d);
  }
  return s;
}
// ours, truth, torch32: the same tensors; base: subtracted from truth for the relative floor
// (the initial parameters), or empty; floor: the allowance per entry (see above).
Normwise normwise(const TensorSet& ours, const TensorSet& truth, const TensorSet& torch32,
                  const TensorSet& base, double floor) {
  Normwise n;
  for (const auto& [name, b] : truth) {
    const auto& a = ours.at(name);
    const auto& t = torch32.at(name);
    double e = 0, te = 0, r = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      e += (a[i] - b[i]) * (a[i] - b[i]);
      te += (t[i] - b[i]) * (t[i] - b[i]);
      const double ref = b[i] - (base.empty() ? 0.0 : base.at(name)[i]);
      r += ref * ref;
    }
    const double bound =
        kTorchFactor * std::sqrt(te) + kRelFloor * std::sqrt(r) + floor * std::sqrt(double(b.size()));
    const double ratio = std::sqrt(e) / bound;
    if (ratio > n.worst) n = Normwise{ratio, name, std::sqrt(e), bound};
  }
  return n;
}
Normwise normwise_grads(const TensorSet& ours, const TensorSet& truth, const TensorSet& torch32) {
  double sq = 0;
  size_t count = 0;
  for (const auto& [name, b] : truth)
    for (double v : b) sq += v * v, ++count;
  return normwise(ours, truth, torch32, {}, kGradFloor * std::sqrt(sq / double(std::max<size_t>(count, 1))));
}
Normwise normwise_params(const Reference& ref, const TensorSet& ours,
                         const std::vector<ParamEntry>& entries) {
  double lr_sum = 0;
  for (float lr : ref.get("step.lr")) lr_sum += lr;
  return normwise(ours, stored(ref, "final64.", entries, true), stored(ref, "final.", entries, true),
                  stored(ref, "param.", entries, true), kStepFloor * lr_sum);
}

void print(const char* what, const Normwise& n) {
  std::printf("%-44s worst error/bound %.3f at %s (error %.3e, bound %.3e)\n", what, n.worst,
              n.worst_name.c_str(), n.worst_err, n.worst_bound);
}

template <typename T>
TensorSet of_arena(const T* arena, const std::vector<ParamEntry>& entries,
                   bool skip_key_bias = false) {
  TensorSet s;
  for (const auto& e : entries) {
    std::vector<double> d(arena + e.offset, arena + e.offset + e.numel);
    if (skip_key_bias) erase_range(d, key_bias_range(e));
    s[e.name] = std::move(d);
  }
  return s;
}

TensorSet float32_gradients(const Reference& ref, bool image_training = true) {
  ClipNetwork<float> m(ref.config);
  m.load(initial_params(ref, m));
  m.set_image_training(image_training);
  contrastive_gradients(m, ref.pixels.data(), ref.ids.data(), ref.N);
  return of_arena(m.grads(), m.parameters());
}

// Parameters after the reference's AdamW steps (key biases left out: see check_float32).
TensorSet float32_steps(const Reference& ref, TrainConfig tc) {
  ClipNetwork<float> m(ref.config);
  m.load(initial_params(ref, m));
  Trainer<float> trainer(m, tc);
  for (int s = 0; s < int(ref.hp["steps"]); ++s) trainer.step(ref.pixels.data(), ref.ids.data(), ref.N);
  return of_arena(m.params(), m.parameters(), true);
}

// float32: against torch's float32 run, and against the float64 truth with the criterion above.
void check_float32(const Reference& ref) {
  ClipNetwork<float> m(ref.config);
  m.load(initial_params(ref, m));
  const auto r = contrastive_gradients(m, ref.pixels.data(), ref.ids.data(), ref.N);
  const double loss32 = ref.get("loss")[0];
  EXPECT_LE(std::abs(r.loss - loss32), 1e-5 * std::abs(loss32)) << r.loss << " vs " << loss32;

  const Diff vs32 = compare_grads(ref, m, "grad.");
  const Diff vs64 = compare_grads(ref, m, "grad64.");
  const Diff torch32 = compare_ref(ref, m, "grad.", "grad64.", 1e-5, 1e-7);
  print("float32 grads vs torch float32", vs32);
  print("float32 grads vs torch float64", vs64);
  print("torch float32 grads vs torch float64", torch32);
  // Normwise 1e-5 of the largest gradient against both references.
  EXPECT_LE(vs32.max_abs, 1e-5 * vs32.max_ref);
  EXPECT_LE(vs64.max_abs, 1e-5 * vs64.max_ref);
  const auto& entries = m.parameters();
  const Normwise g = normwise_grads(of_arena(m.grads(), entries), stored(ref, "grad64.", entries),
                                    stored(ref, "grad.", entries));
  print("float32 grads vs torch float64, per tensor", g);
  EXPECT_LE(g.worst, 1.0) << g.worst_name;

  ClipNetwork<float> m2(ref.config);
  m2.load(initial_params(ref, m2));
  Trainer<float> trainer(m2, train_config<float>(ref));
  const auto step_loss = ref.get("step.loss"), step_norm = ref.get("step.grad_norm"),
             step_lr = ref.get("step.lr");
  for (int s = 0; s < int(ref.hp["steps"]); ++s) {
    const StepStats st = trainer.step(ref.pixels.data(), ref.ids.data(), ref.N);
    EXPECT_NEAR(st.loss, step_loss[s], 1e-5 * std::abs(step_loss[s])) << "step " << s;
    EXPECT_NEAR(st.grad_norm, step_norm[s], 1e-5 * std::abs(step_norm[s])) << "step " << s;
    EXPECT_NEAR(st.lr, step_lr[s], 1e-7 * step_lr[s]) << "step " << s;
  }
  const Diff p32 = compare_params(ref, m2, "final.");
  const Diff p64 = compare_params(ref, m2, "final64.");
  const Diff torch_p = compare_ref(ref, m2, "final.", "final64.", 0.0, 1e-6);
  print("float32 params after 5 steps vs torch float32", p32);
  print("float32 params after 5 steps vs torch float64", p64);
  print("torch float32 params vs torch float64", torch_p);
  EXPECT_LE(p32.max_abs, 1e-6 + 2 * torch_p.max_abs);
  EXPECT_LE(p64.max_abs, 1e-6 + 2 * torch_p.max_abs);
  // The KEY part of attn.in_proj_bias (and the attention pool's k_proj.bias) is left out of
  // the per-tensor check: its exact gradient is zero (a key bias adds the same amount to every
  // score of a softmax row), so in float32 it is pure rounding noise (~1e-9), which Adam
  // divides by sqrt(v) + eps (eps = 1e-6) into steps of up to a few 1e-6 in a direction set by
  // noise; torch's own float32 run shows the same (torch float32 vs float64 above, and the
  // max-abs bounds just above still cover those entries).
  const Normwise p = normwise_params(ref, of_arena(m2.params(), entries, true), entries);
  print("float32 params after 5 steps vs float64, per tensor", p);
  EXPECT_LE(p.worst, 1.0) << p.worst_name;
  if (m2.resnet()) {
    const Diff b32 = compare_running_stats(ref, m2, "finalbuf.", 1e-5, 1e-7);
    const Diff b64 = compare_running_stats(ref, m2, "finalbuf64.", 1e-5, 1e-7);
    const Diff torch_b = compare_stored_stats(ref, "finalbuf.", "finalbuf64.", 1e-5, 1e-7);
    print("float32 running statistics vs torch float32", b32);
    print("float32 running statistics vs torch float64", b64);
    print("torch float32 running statistics vs torch float64", torch_b);
    EXPECT_LE(b64.worst, std::max(1.0, 2 * torch_b.worst)) << b64.worst_name;
    EXPECT_LE(b32.worst, 1.0 + torch_b.worst) << b32.worst_name;
  }
}

// The float32 criterion must still fail on real bugs, on the same data:
//  - batch norm run on its running statistics during training (its batch-statistics terms
//    dropped from forward and backward: the classic "model left in eval mode");
//  - one gradient entry dropped (an off-by-one in a loop): the entry of median magnitude among
//    the nonzero entries of each tensor with at least 16 of them, one tensor at a time;
//  - the decoupled weight-decay term dropped from AdamW (parameters after the steps).
void check_criterion_catches_bugs(const Reference& ref) {
  ClipNetwork<float> shape(ref.config);
  const auto& entries = shape.parameters();
  const TensorSet truth = stored(ref, "grad64.", entries), torch32 = stored(ref, "grad.", entries);
  const TensorSet good = float32_gradients(ref);
  ASSERT_LE(normwise_grads(good, truth, torch32).worst, 1.0);
  if (shape.resnet()) {
    const Normwise n = normwise_grads(float32_gradients(ref, /*image_training=*/false), truth, torch32);
    print("batch norm in eval mode", n);
    EXPECT_GT(n.worst, 10.0);
  }
  int tensors = 0;
  double least = 1e300;
  std::string least_name;
  for (const auto& e : entries) {
    if (e.numel < 16) continue;
    TensorSet bad = good;
    auto& v = bad[e.name];
    const auto& exact = truth.at(e.name);
    const auto key = key_bias_range(e);  // exact gradient zero: nothing to drop there
    std::vector<size_t> order;
    for (size_t i = 0; i < exact.size(); ++i)
      if (exact[i] != 0.0 && !(key.first <= i && i < key.second)) order.push_back(i);
    if (order.size() < 16) continue;
    std::nth_element(order.begin(), order.begin() + long(order.size() / 2), order.end(),
                     [&](size_t a, size_t b) { return std::abs(exact[a]) < std::abs(exact[b]); });
    const size_t i = order[order.size() / 2];
    v[i] = 0.0;
    const Normwise n = normwise_grads(bad, truth, torch32);
    if (n.worst < least) least = n.worst, least_name = e.name;
    EXPECT_GT(n.worst, 1.0) << "dropping the median entry of " << e.name << " passes";
    ++tensors;
  }
  std::printf("one median gradient entry dropped: %d tensors, least error/bound %.1f (%s)\n",
              tensors, least, least_name.c_str());
  EXPECT_GT(tensors, 10);

  TrainConfig no_decay = train_config<float>(ref);
  no_decay.adamw.weight_decay = 0.0;
  const Normwise p = normwise_params(ref, float32_steps(ref, no_decay), entries);
  print("AdamW without its weight-decay term", p);
  EXPECT_GT(p.worst, 10.0);
}

TEST(TrainDebugState, Float64MatchesTorchFloat64) { check_float64(load_reference()); }
TEST(TrainDebugState, Float32MatchesTorch) { check_float32(load_reference()); }
TEST(TrainDebugState, ResNetFloat64MatchesTorchFloat64) {
  const Reference ref = load_reference(kResNetPath);
  ASSERT_TRUE(ref.config.vision.is_resnet());
  check_float64(ref);
}
TEST(TrainDebugState, ResNetFloat32MatchesTorch) { check_float32(load_reference(kResNetPath)); }
TEST(TrainDebugState, Float32CriterionCatchesRealBugs) { check_criterion_catches_bugs(load_reference()); }
TEST(TrainDebugState, ResNetFloat32CriterionCatchesRealBugs) {
  check_criterion_catches_bugs(load_reference(kResNetPath));
}

// The same with GELU instead of QuickGELU. This state is not committed (size): it is generated
// here by the reference script, which needs Debian's python3-torch.
// ("Slow": it runs torch for a few seconds, so the sanitizer run skips it.)
TEST(TrainDebugState, GeluGeneratedByTheReferenceScriptSlow) {
  const std::string out = std::string(CLIP_BINARY_DIR) + "/train_debug_state_gelu.safetensors";
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                          "/tools/train_reference.py --activation gelu --out " + out +
                          " > /dev/null";
  if (std::system(cmd.c_str()) != 0) GTEST_FAIL() << "reference script failed (no torch?): " << cmd;
  const Reference ref = load_reference(out);
  ASSERT_EQ(ref.config.activation, Activation::GELU);
  check_float64(ref);
  check_float32(ref);
}
