// Checkpoint loading: the three naming schemes give the same canonical tensors, build_model's
// shape inference (ViT and ResNet), f16/bf16 conversion, model directories, JSON configs, and
// clear errors that name the file and the tensor for missing / mis-shaped / unexpected weights.
// Synthetic tiny checkpoints are written with our writer (its bytes match the reference
// safetensors writer, see test_core_safetensors).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"
#include "core/safetensors.h"
#include "model/checkpoint_writer.h"
#include "model/config.h"
#include "model/weights.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {

std::string temp_path(const std::string& name) {
  static const std::string dir = [] {
    // Per process: CTest runs each test case as its own process, several at once.
    std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/model_weights/" + std::to_string(::getpid());
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir + "/" + name;
}

// A tiny ViT whose dims follow OpenAI's rules (heads = width / 64), so inference recovers it.
ModelConfig tiny_vit() {
  ModelConfig c;
  c.embed_dim = 32;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 64;
  c.vision.layers = 2;
  c.vision.heads = 1;
  c.vision.mlp_dim = 256;
  c.text.context_length = 7;
  c.text.vocab_size = 50;
  c.text.width = 64;
  c.text.heads = 1;
  c.text.layers = 3;
  c.text.mlp_dim = 256;
  return c;
}

ModelConfig tiny_resnet() {
  ModelConfig c = tiny_vit();
  c.embed_dim = 24;
  c.vision.resnet_layers = {1, 2, 1, 1};
  c.vision.width = 8;
  c.vision.heads = 8 * 32 / 64;
  c.vision.image_size = 64;
  c.vision.layers = 0;
  c.vision.patch_size = 0;
  c.vision.mlp_dim = 0;
  return c;
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.embed_dim, b.embed_dim);
  EXPECT_EQ(a.vision.image_size, b.vision.image_size);
  EXPECT_EQ(a.vision.patch_size, b.vision.patch_size);
  EXPECT_EQ(a.vision.width, b.vision.width);
  EXPECT_EQ(a.vision.layers, b.vision.layers);
  EXPECT_EQ(a.vision.heads, b.vision.heads);
  EXPECT_EQ(a.vision.mlp_dim, b.vision.mlp_dim);
  EXPECT_EQ(a.vision.resnet_layers, b.vision.resnet_layers);
  EXPECT_EQ(a.text.context_length, b.text.context_length);
  EXPECT_EQ(a.text.vocab_size, b.text.vocab_size);
  EXPECT_EQ(a.text.width, b.text.width);
  EXPECT_EQ(a.text.heads, b.text.heads);
  EXPECT_EQ(a.text.layers, b.text.layers);
  EXPECT_EQ(a.text.mlp_dim, b.text.mlp_dim);
  EXPECT_EQ(a.activation, b.activation);
}

// Every canonical tensor loaded equals `want` after rounding through `dtype`.
void expect_tensors(const LoadedCheckpoint& ck, const std::map<std::string, Tensor>& want, DType dtype = DType::F32) {
  ASSERT_EQ(ck.tensors.size(), want.size());
  for (const auto& [name, w] : want) {
    auto it = ck.tensors.find(name);
    ASSERT_NE(it, ck.tensors.end()) << name;
    const Tensor& t = it->second;
    ASSERT_EQ(t.dtype, DType::F32) << name;
    ASSERT_EQ(t.shape, w.shape) << name;
    const float* a = t.f32();
    const float* b = w.f32();
    for (int64_t i = 0; i < w.numel(); ++i) {
      float expect = b[i];
      if (dtype == DType::F16) expect = f16_to_f32(f32_to_f16(expect));
      if (dtype == DType::BF16) expect = bf16_to_f32(f32_to_bf16(expect));
      if (a[i] != expect) {
        ADD_FAILURE() << name << "[" << i << "] = " << a[i] << ", expected " << expect;
        return;
      }
    }
  }
}

// load_checkpoint(path) throws one clip::Error containing every string in `parts`.
// `absent`, when given, must not appear (no knock-on complaints).
void expect_load_error(const std::string& path, const std::vector<std::string>& parts, const LoadOptions& opt = {},
                       const std::string& absent = "") {
  try {
    load_checkpoint(path, opt);
    ADD_FAILURE() << path << " loaded; expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "error lacks '" << p << "': " << msg;
    if (!absent.empty()) {
      EXPECT_EQ(msg.find(absent), std::string::npos) << "error has '" << absent << "': " << msg;
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

bool inside_mapping(const LoadedCheckpoint& ck, const Tensor& t) {
  auto map = std::static_pointer_cast<MappedFile>(ck.keepalive);
  auto* p = static_cast<const uint8_t*>(t.data);
  return p >= map->data() && p < map->data() + map->size();
}

}  // namespace

TEST(ModelConfig, ViTB32ParameterCountMatchesReference) {
  ModelConfig c;  // the defaults are ViT-B/32's
  c.embed_dim = 512;
  c.vision = VisionConfig{};
  c.text = TextConfig{};
  EXPECT_EQ(known_model_name(c), "ViT-B-32");
  EXPECT_EQ(parameter_count(c), 151277313);  // openai/CLIP's published count
}

TEST(ModelWeights, OpenAISchemeInfersArchitectureAndIsZeroCopy) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 1);
  const std::string path = temp_path("openai_vit.safetensors");
  write_checkpoint(path, canonical, cfg, NamingScheme::OpenAI);
  LoadedCheckpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.scheme, NamingScheme::OpenAI);
  EXPECT_EQ(ck.stored_dtype, DType::F32);
  EXPECT_EQ(ck.weights_path, path);
  EXPECT_EQ(ck.model_dir, "");
  EXPECT_EQ(ck.config_path, "");
  EXPECT_EQ(ck.file_size, fs::file_size(path));
  expect_same_config(ck.config, cfg);  // QuickGELU: OpenAI weights
  expect_tensors(ck, canonical);
  for (const auto& [name, t] : ck.tensors) EXPECT_TRUE(inside_mapping(ck, t)) << name << " was copied";
  EXPECT_EQ(ck.get("visual.proj", {64, 32}).shape, (std::vector<int64_t>{64, 32}));
  EXPECT_TRUE(ck.get("logit_scale").shape.empty());
  EXPECT_NEAR(ck.get("logit_scale").f32()[0], std::log(1 / 0.07), 1e-6);
}

TEST(ModelWeights, GetNamesTensorAndFile) {
  const ModelConfig cfg = tiny_vit();
  const std::string path = temp_path("get.safetensors");
  write_checkpoint(path, random_canonical_tensors(cfg, 2), cfg, NamingScheme::OpenAI);
  LoadedCheckpoint ck = load_checkpoint(path);
  try {
    ck.get("visual.nope");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": missing tensor 'visual.nope'"), std::string::npos) << e.what();
  }
  try {
    ck.get("visual.proj", {32, 64});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'visual.proj' has shape [64, 32], expected [32, 64]"), std::string::npos)
        << e.what();
  }
}

TEST(ModelWeights, AllThreeSchemesLoadTheSameCanonicalTensors) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 3);
  const std::string openai = temp_path("scheme_openai.safetensors");
  write_checkpoint(openai, canonical, cfg, NamingScheme::OpenAI);
  const std::string hf_dir = temp_path("scheme_hf"), oc_dir = temp_path("scheme_openclip");
  write_model_directory(hf_dir, canonical, cfg, NamingScheme::HuggingFace);
  write_model_directory(oc_dir, canonical, cfg, NamingScheme::OpenCLIP);

  LoadedCheckpoint a = load_checkpoint(openai);
  LoadedCheckpoint h = load_checkpoint(hf_dir);
  LoadedCheckpoint o = load_checkpoint(oc_dir);
  EXPECT_EQ(h.scheme, NamingScheme::HuggingFace);
  EXPECT_EQ(o.scheme, NamingScheme::OpenCLIP);
  EXPECT_EQ(h.model_dir, hf_dir);
  EXPECT_EQ(h.config_path, hf_dir + "/config.json");
  EXPECT_EQ(o.config_path, oc_dir + "/open_clip_config.json");
  EXPECT_EQ(o.weights_path, oc_dir + "/open_clip_model.safetensors");
  for (const auto* ck : {&a, &h, &o}) {
    expect_same_config(ck->config, cfg);
    expect_tensors(*ck, canonical);
  }
  // HF stores q/k/v separately and the projections transposed: check the file really does.
  SafetensorsFile hf = SafetensorsFile::open(hf_dir + "/model.safetensors");
  ASSERT_NE(hf.find("vision_model.encoder.layers.1.self_attn.k_proj.weight"), nullptr);
  EXPECT_EQ(hf.find("visual_projection.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(hf.find("text_projection.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(hf.find("text_model.embeddings.position_ids")->dtype, DType::I64);  // ignored by the loader
  EXPECT_EQ(hf.find("visual.proj"), nullptr);
  // Untouched HF tensors stay zero-copy; packed in_proj is an owned copy.
  EXPECT_TRUE(inside_mapping(h, h.get("visual.conv1.weight")));
  EXPECT_FALSE(inside_mapping(h, h.get("transformer.resblocks.0.attn.in_proj_weight")));
}

TEST(ModelWeights, HuggingFaceFileWithoutConfigInfersShapes) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 4);
  const std::string path = temp_path("hf_bare.safetensors");
  write_checkpoint(path, canonical, cfg, NamingScheme::HuggingFace);
  LoadedCheckpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.scheme, NamingScheme::HuggingFace);
  expect_same_config(ck.config, cfg);
  expect_tensors(ck, canonical);
}

TEST(ModelWeights, HalfPrecisionWeightsAreConverted) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 5);
  for (DType dt : {DType::F16, DType::BF16}) {
    for (NamingScheme scheme : {NamingScheme::OpenAI, NamingScheme::HuggingFace}) {
      const std::string path =
          temp_path(std::string("half_") + dtype_name(dt) + "_" + naming_scheme_name(scheme) + ".safetensors");
      write_checkpoint(path, canonical, cfg, scheme, dt);
      LoadedCheckpoint ck = load_checkpoint(path);
      EXPECT_EQ(ck.stored_dtype, dt);
      expect_tensors(ck, canonical, dt);
    }
  }
}

TEST(ModelWeights, ResNetShapeInferenceIgnoresBatchCounters) {
  const ModelConfig cfg = tiny_resnet();
  auto canonical = random_canonical_tensors(cfg, 6);
  // Released ResNet checkpoints carry int64 num_batches_tracked for every batch norm.
  NamedTensors stored = tensors_for_scheme(canonical, cfg, NamingScheme::OpenAI);
  int counters = 0;
  for (const auto& [name, shape] : expected_tensors(cfg))
    if (name.size() > 12 && name.compare(name.size() - 12, 12, "running_mean") == 0) {
      Tensor n = Tensor::zeros({}, DType::I64);
      stored.emplace_back(name.substr(0, name.size() - 12) + "num_batches_tracked", n);
      ++counters;
    }
  EXPECT_EQ(counters, 3 + 3 * 5 + 4);  // stem, 3 per block, one downsample per stage
  const std::string path = temp_path("openai_resnet.safetensors");
  write_safetensors(path, stored);
  LoadedCheckpoint ck = load_checkpoint(path);
  expect_same_config(ck.config, cfg);
  expect_tensors(ck, canonical);
  EXPECT_TRUE(ck.config.vision.is_resnet());
  EXPECT_EQ(ck.config.vision.heads, 4);
  // The downsample branch exists exactly on the first block of each stage.
  EXPECT_TRUE(ck.tensors.count("visual.layer1.0.downsample.0.weight"));
  EXPECT_TRUE(ck.tensors.count("visual.layer2.0.downsample.1.running_var"));
  EXPECT_FALSE(ck.tensors.count("visual.layer2.1.downsample.0.weight"));
}

TEST(ModelWeights, OpenClipConfigDecidesActivation) {
  ModelConfig cfg = tiny_vit();
  cfg.activation = Activation::GELU;
  auto canonical = random_canonical_tensors(cfg, 7);
  const std::string dir = temp_path("openclip_gelu");
  write_model_directory(dir, canonical, cfg, NamingScheme::OpenCLIP);
  LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.config.activation, Activation::GELU);
  expect_same_config(ck.config, cfg);
  // --config overrides: the same file with a quick_gelu config.
  const std::string quick = temp_path("quick.json");
  ModelConfig q = cfg;
  q.activation = Activation::QuickGELU;
  write_file_atomic(quick, model_config_to_openclip_json(q));
  LoadOptions opt;
  opt.config_path = quick;
  EXPECT_EQ(load_checkpoint(dir, opt).config.activation, Activation::QuickGELU);
}

TEST(ModelWeights, ModulePrefixIsStripped) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 8);
  NamedTensors stored = tensors_for_scheme(canonical, cfg, NamingScheme::OpenAI);
  for (auto& [name, t] : stored) name = "module." + name;
  const std::string path = temp_path("ddp.safetensors");
  write_safetensors(path, stored);
  expect_tensors(load_checkpoint(path), canonical);
}

// ---- errors ----

TEST(ModelWeightsErrors, MissingTensorIsNamed) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 9);
  NamedTensors stored = tensors_for_scheme(canonical, cfg, NamingScheme::OpenAI);
  std::erase_if(stored, [](const auto& nt) {
    return nt.first == "visual.transformer.resblocks.1.mlp.c_fc.bias" || nt.first == "ln_final.bias";
  });
  const std::string path = temp_path("missing.safetensors");
  write_safetensors(path, stored);
  expect_load_error(path, {path, "missing tensors", "'visual.transformer.resblocks.1.mlp.c_fc.bias'", "'ln_final.bias'"});
}

TEST(ModelWeightsErrors, MisShapedTensorIsNamed) {
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 10);
  canonical["ln_final.bias"] = Tensor::zeros({63});
  NamedTensors stored;
  for (auto& [name, t] : canonical) stored.emplace_back(name, t);
  const std::string path = temp_path("misshaped.safetensors");
  write_safetensors(path, stored);
  expect_load_error(path, {path, "tensor 'ln_final.bias' has shape [63], expected [64]"});
}

TEST(ModelWeightsErrors, ConfigThatDisagreesWithTheFile) {
  const ModelConfig cfg = tiny_vit();
  const std::string dir = temp_path("wrong_config");
  write_model_directory(dir, random_canonical_tensors(cfg, 11), cfg, NamingScheme::OpenCLIP);
  ModelConfig other = cfg;
  other.vision.layers = 3;
  write_file_atomic(dir + "/open_clip_config.json", "{\"model_cfg\": " + model_config_to_openclip_json(other) + "}");
  expect_load_error(dir, {dir + "/open_clip_model.safetensors", "from " + dir + "/open_clip_config.json",
                          "missing tensors 'visual.transformer.resblocks.2.attn.in_proj_weight'"});
}

TEST(ModelWeightsErrors, HuggingFaceMissingKeyProjection) {
  const ModelConfig cfg = tiny_vit();
  NamedTensors stored = tensors_for_scheme(random_canonical_tensors(cfg, 12), cfg, NamingScheme::HuggingFace);
  std::erase_if(stored, [](const auto& nt) { return nt.first == "text_model.encoder.layers.1.self_attn.k_proj.weight"; });
  const std::string path = temp_path("hf_missing_k.safetensors");
  write_safetensors(path, stored);
  expect_load_error(path, {path, "missing tensor 'text_model.encoder.layers.1.self_attn.k_proj.weight'"}, {}, "unexpected");
}

TEST(ModelWeightsErrors, UnexpectedTensorIsRefused) {
  // Layer scale (open_clip ls_init_value) would be silently ignored otherwise.
  const ModelConfig cfg = tiny_vit();
  NamedTensors stored = tensors_for_scheme(random_canonical_tensors(cfg, 13), cfg, NamingScheme::OpenAI);
  stored.emplace_back("visual.transformer.resblocks.0.ls_1.gamma", Tensor::zeros({64}));
  const std::string path = temp_path("unexpected.safetensors");
  write_safetensors(path, stored);
  expect_load_error(path, {path, "unexpected tensor 'visual.transformer.resblocks.0.ls_1.gamma'"});
}

TEST(ModelWeightsErrors, IntegerWeightIsNamed) {
  const ModelConfig cfg = tiny_vit();
  NamedTensors stored = tensors_for_scheme(random_canonical_tensors(cfg, 14), cfg, NamingScheme::OpenAI);
  for (auto& [name, t] : stored)
    if (name == "visual.ln_post.bias") t = Tensor::zeros({64}, DType::I32);
  const std::string path = temp_path("intweight.safetensors");
  write_safetensors(path, stored);
  expect_load_error(path, {path, "'visual.ln_post.bias' has dtype I32, expected a floating-point dtype"});
}

TEST(ModelWeightsErrors, NotACheckpoint) {
  const std::string path = temp_path("notclip.safetensors");
  write_safetensors(path, NamedTensors{{"foo", Tensor::zeros({3})}});
  expect_load_error(path, {path, "cannot infer the architecture: missing tensor 'text_projection'"});
  expect_load_error(temp_path("does_not_exist"), {"does_not_exist: no such file or directory"});
  const std::string hostile = temp_path("hostile.safetensors");
  write_file_atomic(hostile, std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10));
  expect_load_error(hostile, {hostile, "exceeds the limit"});
}

TEST(ModelWeightsErrors, DirectoriesAndPickles) {
  const std::string empty = temp_path("empty_dir");
  fs::create_directories(empty);
  expect_load_error(empty, {empty, "no .safetensors weights"});
  const std::string pickles = temp_path("pickle_dir");
  fs::create_directories(pickles);
  write_file_atomic(pickles + "/pytorch_model.bin", "PK\x03\x04");  // found in the folder; not a readable zip
  expect_load_error(pickles, {pickles + "/pytorch_model.bin", "zip"});
  expect_load_error(pickles + "/pytorch_model.bin", {"pytorch_model.bin", "zip"});
  write_file_atomic(pickles + "/raw.pkl", "\x80\x02}q\x00.");
  expect_load_error(pickles + "/raw.pkl", {"raw.pkl", "raw pickles are not loaded"});
  const std::string two = temp_path("two_dir");
  fs::create_directories(two);
  const ModelConfig cfg = tiny_vit();
  auto canonical = random_canonical_tensors(cfg, 15);
  write_checkpoint(two + "/a.safetensors", canonical, cfg, NamingScheme::OpenAI);
  write_checkpoint(two + "/b.safetensors", canonical, cfg, NamingScheme::OpenAI);
  expect_load_error(two, {two, "several .safetensors files (a.safetensors, b.safetensors)"});
  // One unusually named file is found on its own.
  fs::remove(two + "/b.safetensors");
  EXPECT_EQ(load_checkpoint(two).weights_path, two + "/a.safetensors");
}

// ---- JSON configs ----

TEST(ModelConfigJson, HuggingFaceConfig) {
  // The fields of openai/clip-vit-base-patch32's config.json that matter.
  const char* text = R"({
    "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                    "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408,
                    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                      "num_hidden_layers": 12, "image_size": 224, "patch_size": 32,
                      "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05}})";
  ConfigFormat f;
  ModelConfig c = parse_model_config_json(text, "config.json", &f);
  EXPECT_EQ(f, ConfigFormat::HuggingFace);
  EXPECT_EQ(c.name, "ViT-B-32");
  EXPECT_EQ(c.activation, Activation::QuickGELU);
  EXPECT_EQ(parameter_count(c), 151277313);
  // Our HF writer's output parses back to the same config.
  expect_same_config(parse_model_config_json(model_config_to_hf_json(c), "x"), c);
}

TEST(ModelConfigJson, OpenClipConfigs) {
  // open_clip's RN50.json and ViT-L-14-quickgelu.json; wrapped as open_clip_config.json.
  ModelConfig rn = parse_model_config_json(
      R"({"embed_dim": 1024, "quick_gelu": true, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3],
          "width": 64, "patch_size": null}, "text_cfg": {"context_length": 77, "vocab_size": 49408,
          "width": 512, "heads": 8, "layers": 12}})",
      "RN50.json");
  EXPECT_EQ(rn.name, "RN50");
  EXPECT_EQ(rn.vision.heads, 32);
  EXPECT_EQ(rn.vision.resnet_layers, (std::vector<int>{3, 4, 6, 3}));
  ConfigFormat f;
  ModelConfig l = parse_model_config_json(
      R"({"model_cfg": {"embed_dim": 768, "quick_gelu": true, "vision_cfg": {"image_size": 224, "layers": 24,
          "width": 1024, "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408,
          "width": 768, "heads": 12, "layers": 12}},
          "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}})",
      "open_clip_config.json", &f);
  EXPECT_EQ(f, ConfigFormat::OpenCLIP);
  EXPECT_EQ(l.name, "ViT-L-14");
  EXPECT_EQ(l.vision.heads, 16);
  EXPECT_EQ(l.vision.mlp_dim, 4096);
  // Without quick_gelu, open_clip builds nn.GELU.
  ModelConfig g = parse_model_config_json(R"({"embed_dim": 512, "vision_cfg": {"patch_size": 32}, "text_cfg": {}})", "g.json");
  EXPECT_EQ(g.activation, Activation::GELU);
  EXPECT_EQ(g.vision.width, 768);
  expect_same_config(parse_model_config_json(model_config_to_openclip_json(rn), "x"), rn);
  expect_same_config(parse_model_config_json(model_config_to_openclip_json(l), "x"), l);
}

TEST(ModelConfigJson, ErrorsNameTheFileAndKey) {
  auto expect_error = [](const std::string& text, const std::string& part) {
    try {
      parse_model_config_json(text, "cfg.json");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cfg.json: "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error("{", "not valid JSON");
  expect_error("[]", "not a JSON object");
  expect_error(R"({"foo": 1})", "not a CLIP model config");
  expect_error(R"({"embed_dim": 512, "vision_cfg": {"ls_init_value": 0.1}})", "\"ls_init_value\" (layer scale) is not supported");
  expect_error(R"({"embed_dim": 512, "text_cfg": {"hf_model_name": "roberta-base"}})", "hf_model_name");
  expect_error(R"({"embed_dim": "big"})", "\"embed_dim\" = \"big\" is not a non-negative integer");
  expect_error(R"({"embed_dim": 512, "vision_cfg": {"width": 100, "head_width": 64}})", "not a multiple of head_width");
  expect_error(R"({"embed_dim": 512, "vision_cfg": {"image_size": 225, "patch_size": 32}})", "not a multiple of patch_size");
  expect_error(R"({"model_type": "siglip", "text_config": {}})", "is not a CLIP model");
  expect_error(R"({"text_config": {"hidden_act": "relu"}})", "\"hidden_act\" = \"relu\" is not supported");
}

// ---- against independent references ----

TEST(ModelConfig, RN50ParameterCountMatchesReference) {
  ModelConfig c = parse_model_config_json(
      R"({"embed_dim": 1024, "quick_gelu": true, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64}})",
      "RN50.json");
  // sum(p.numel() for p in model.parameters()) of tools/reference_resnet.py's ModifiedResNet
  // (38,316,896) plus tools/reference_model.py's text tower, logit_scale (63,690,241).
  EXPECT_EQ(parameter_count(c), 102007137);
}

TEST(ModelWeights, ResNetNamesMatchTheReferenceModule) {
  // tests/data/resnet/tiny.safetensors is tools/reference_resnet.py's ModifiedResNet state
  // dict (vision only). Our expected ResNet names and shapes must be exactly its float tensors.
  const std::string path = std::string(CLIP_SOURCE_DIR) + "/tests/data/resnet/tiny.safetensors";
  if (!fs::exists(path)) GTEST_FAIL() << path << " not present";
  SafetensorsFile f = SafetensorsFile::open(path);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& t : f.tensors())
    if (t.dtype != DType::I64) shapes[t.name] = t.shape;
  const int64_t embed = shapes.at("visual.attnpool.c_proj.weight")[0];
  // A text tower so that build_model's inference runs on the whole state dict.
  shapes["text_projection"] = {64, embed};
  shapes["token_embedding.weight"] = {10, 64};
  shapes["positional_embedding"] = {5, 64};
  shapes["ln_final.weight"] = {64};
  shapes["transformer.resblocks.0.attn.in_proj_weight"] = {192, 64};
  ModelConfig c = infer_config_from_shapes(shapes, path);
  ASSERT_TRUE(c.vision.is_resnet());
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& [name, shape] : expected_tensors(c))
    if (name.rfind("visual.", 0) == 0) want[name] = shape;
  std::map<std::string, std::vector<int64_t>> have;
  for (const auto& [name, shape] : shapes)
    if (name.rfind("visual.", 0) == 0) have[name] = shape;
  EXPECT_EQ(want, have);
}

TEST(ModelWeights, PythonReferenceSchemesAgreeSlow) {
  // tools/reference_model.py writes its model in the three schemes with its own (Python)
  // name mapping; all three must load to identical canonical tensors and config. F16, so the
  // conversion is covered too. ("Slow": torch start-up; skipped in the sanitizer run.)
  if (std::system((std::string(CLIP_PYTHON) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0)
    GTEST_FAIL() << "torch not available in " << CLIP_PYTHON;
  const std::string out = temp_path("python_reference");
  for (const char* dtype : {"f16"}) {
    const std::string dir = out + "/" + dtype;
    const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                            "/tools/reference_model.py write --config tiny --seed 3 --threads 1 --schemes "
                            "openai,openclip,hf --dtype " + dtype + " --out " + dir + " >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    LoadedCheckpoint a = load_checkpoint(dir + "/openai");
    LoadedCheckpoint o = load_checkpoint(dir + "/openclip");
    LoadedCheckpoint h = load_checkpoint(dir + "/hf");
    EXPECT_EQ(a.scheme, NamingScheme::OpenAI);
    EXPECT_EQ(o.scheme, NamingScheme::OpenCLIP);
    EXPECT_EQ(h.scheme, NamingScheme::HuggingFace);
    EXPECT_EQ(a.stored_dtype, std::string(dtype) == "f16" ? DType::F16 : DType::F32);
    expect_same_config(a.config, o.config);
    expect_same_config(a.config, h.config);
    EXPECT_EQ(a.config.vision.heads, 2);
    std::map<std::string, Tensor> want;
    for (const auto& [name, t] : a.tensors) want.emplace(name, t);
    expect_tensors(o, want);
    expect_tensors(h, want);
  }
}

// ---- memory ----

namespace {
// Resident pages of mapped files (RssFile): what views into the checkpoint's map cost.
int64_t resident_file_bytes() {
  std::string status = read_text_file("/proc/self/status");
  size_t p = status.find("RssFile:");
  if (p == std::string::npos) return -1;
  return std::atoll(status.c_str() + p + 8) * 1024;
}
}  // namespace

TEST(ModelWeights, LoadingF32CopiesNothing) {
  // A text tower with the real vocabulary makes a ~26 MB file. Loading must not raise the
  // resident set (views into the map); reading every weight then brings the file's pages in,
  // which shows the measurement can see them.
  ModelConfig cfg = tiny_vit();
  cfg.text.vocab_size = 49408;
  cfg.text.width = 128;
  cfg.text.heads = 2;
  cfg.text.mlp_dim = 512;
  const std::string path = temp_path("rss.safetensors");
  ModelConfig small = cfg;
  small.text.vocab_size = 50;
  auto canonical = random_canonical_tensors(small, 16);
  Tensor big = Tensor::empty({cfg.text.vocab_size, cfg.text.width});  // cheap values, many pages
  for (int64_t i = 0; i < big.numel(); ++i) big.f32()[i] = float(i & 1023) * 1e-3f;
  canonical["token_embedding.weight"] = big;
  write_checkpoint(path, canonical, cfg, NamingScheme::OpenAI);
  const int64_t file_size = int64_t(fs::file_size(path));
  ASSERT_GT(file_size, 20 << 20);
  if (resident_file_bytes() < 0) GTEST_SKIP() << "no RssFile in /proc/self/status";
  load_checkpoint(path);  // warm-up: RssFile also counts this program's code pages
  const int64_t before = resident_file_bytes();
  LoadedCheckpoint ck = load_checkpoint(path);
  const int64_t after_load = resident_file_bytes();
  EXPECT_LT(after_load - before, 4 << 20) << "loading an F32 file should map, not copy";
  double sum = 0;
  for (const auto& [name, t] : ck.tensors)
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.f32()[i];
  const int64_t after_touch = resident_file_bytes();
  EXPECT_GT(after_touch - before, file_size / 2) << "sum " << sum;
}

TEST(ModelWeights, LoadingF16ReleasesTheStoredPages) {
  // Converting reads the stored pages; they are released afterwards, so the peak resident set
  // is the F32 copies, not copies + the mapped F16 file.
  ModelConfig cfg = tiny_vit();
  ModelConfig small = cfg;
  cfg.text.vocab_size = 49408;
  auto canonical = random_canonical_tensors(small, 17);
  Tensor big = Tensor::empty({cfg.text.vocab_size, cfg.text.width});
  for (int64_t i = 0; i < big.numel(); ++i) big.f32()[i] = float(i & 1023) * 1e-3f;
  canonical["token_embedding.weight"] = big;
  const std::string path = temp_path("rss_f16.safetensors");
  write_checkpoint(path, canonical, cfg, NamingScheme::OpenAI, DType::F16);
  canonical.clear();
  big = Tensor();
  const int64_t file_size = int64_t(fs::file_size(path));
  if (resident_file_bytes() < 0) GTEST_SKIP() << "no RssFile in /proc/self/status";
  // RssFile also counts this program's code pages: run the same code once so that the
  // measurement sees only the checkpoint's pages.
  const std::string warm = temp_path("rss_f16_warmup.safetensors");
  write_checkpoint(warm, random_canonical_tensors(small, 18), small, NamingScheme::OpenAI, DType::F16);
  load_checkpoint(warm);
  const int64_t before = resident_file_bytes();
  LoadedCheckpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.tensors.at("token_embedding.weight").f32()[1023], f16_to_f32(f32_to_f16(float(1023) * 1e-3f)));
  const int64_t grew = resident_file_bytes() - before;
  EXPECT_LT(grew, file_size / 10) << "stored F16 pages (" << file_size << " bytes) were kept resident";
}
