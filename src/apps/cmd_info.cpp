// `clip info --model M`: what a checkpoint is -- naming scheme, architecture with all its
// dimensions, embedding size, parameter count, stored dtype and file size -- after the same
// validation inference does (so a bad file fails here with the same one-line error).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/command.h"
#include "backend/comm.h"
#include "backend/cpu_features.h"
#include "core/error.h"
#include "backend/matmul.h"
#include "model/config.h"
#include "model/weights.h"

namespace clip::app {
namespace {

struct InfoOptions {
  std::string model;
  std::string config;
  bool json = false;
  bool system = false;
  bool model_configs = false;
};

// `clip info --system`: the CPU, what it supports, the CLIP_MAX_ISA cap and the kernel paths
// this process uses under it.
void print_system() {
  std::printf("%s", cpu_report().c_str());
  std::printf("matrix products:  %s\n", matmul_backend_name());
  std::printf("--precision:      fp32%s%s\n", bf16_available() ? ", bf16 (oneDNN brgemm, AVX512-BF16/AMX)"
                                                             : " (bf16 needs AVX512-BF16 or AMX and oneDNN)",
              int8_available() ? ", int8 (oneDNN brgemm u8 x s8, AVX512-VNNI/AMX)"
                               : " (int8 needs AVX512-VNNI or AMX and oneDNN)");
  std::printf("                  int4 and GGUF q4_0/q8_0 weights (block kernel: %s)\n", block_kernel_name());
  std::printf("training:         %s\n", comm_built_with_mpi() ? "across processes and machines: mpirun -np N clip train (MPI)"
                                                              : "one process (built without MPI: libopenmpi-dev)");
  std::printf("build:            %s\n",
#if defined(__AVX512F__)
              "compiled for AVX-512 (CLIP_NATIVE)"
#elif defined(__AVX2__)
              "compiled for AVX2 (CLIP_NATIVE)"
#else
              "portable (x86-64-v2 baseline, kernels chosen at run time)"
#endif
  );
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1ull << 20));
  else if (b >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / double(1ull << 10));
  else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(b));
  return buf;
}

// `clip info --model-configs`: the named architectures (src/model/model_configs/*.json).
void print_model_configs(bool as_json) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const std::string& name : model_config_names()) {
    const ModelConfig c = named_model_config(name);
    if (as_json) {
      all.push_back({{"name", name}, {"parameters", parameter_count(c)},
                     {"config", nlohmann::ordered_json::parse(model_config_to_openclip_json(c))}});
    } else {
      std::printf("%-16s %7.1f M  %s\n", name.c_str(), double(parameter_count(c)) / 1e6, describe_model_config(c).c_str());
    }
  }
  if (as_json) std::printf("%s\n", all.dump().c_str());
}

void run_info(const InfoOptions& o) {
  if (o.model_configs) {
    print_model_configs(o.json);
    return;
  }
  if (o.system) {
    print_system();
    if (o.model.empty()) return;
    std::printf("\n");
  }
  if (o.model.empty()) throw Error("info: --model is required (or --system for the machine)");
  LoadOptions lo;
  lo.config_path = o.config;
  lo.validate_only = true;
  const LoadedCheckpoint ck = load_checkpoint(o.model, lo);
  const ModelConfig& c = ck.config;
  const auto& v = c.vision;
  const auto& t = c.text;
  const char* act = c.activation == Activation::QuickGELU ? "quick_gelu" : "gelu";
  const int64_t params = parameter_count(c);

  if (o.json) {
    nlohmann::ordered_json j;
    j["model"] = o.model;
    j["weights"] = ck.weights_path;
    j["config"] = ck.config_path.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(ck.config_path);
    j["naming_scheme"] = naming_scheme_name(ck.scheme);
    j["name"] = c.name.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.name);
    nlohmann::ordered_json vj;
    vj["type"] = v.is_resnet() ? "resnet" : "vit";
    vj["image_size"] = v.image_size;
    if (v.is_resnet()) {
      vj["layers"] = v.resnet_layers;
      vj["width"] = v.width;
      vj["attnpool_heads"] = v.heads;
    } else {
      vj["patch_size"] = v.patch_size;
      vj["width"] = v.width;
      vj["layers"] = v.layers;
      vj["heads"] = v.heads;
      vj["mlp_dim"] = v.mlp_dim;
    }
    j["vision"] = vj;
    j["text"] = {{"context_length", t.context_length}, {"vocab_size", t.vocab_size}, {"width", t.width},
                 {"layers", t.layers}, {"heads", t.heads}, {"mlp_dim", t.mlp_dim}};
    j["embed_dim"] = c.embed_dim;
    j["activation"] = act;
    char eps[32];
    std::snprintf(eps, sizeof eps, "%g", double(c.layer_norm_eps));  // 1e-05, not 9.99999974e-06
    j["layer_norm_eps"] = std::stod(eps);
    j["parameters"] = params;
    j["stored_dtype"] = dtype_name(ck.stored_dtype);
    j["file_size"] = ck.file_size;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("weights:       %s\n", ck.weights_path.c_str());
  std::printf("config:        %s\n", ck.config_path.empty() ? "(inferred from tensor shapes)" : ck.config_path.c_str());
  std::printf("naming scheme: %s\n", naming_scheme_name(ck.scheme));
  const std::string kind = v.is_resnet() ? "ModifiedResNet" : "ViT";
  std::printf("architecture:  %s\n", c.name.empty() ? kind.c_str() : (c.name + " (" + kind + ")").c_str());
  if (v.is_resnet()) {
    std::string layers;
    for (size_t i = 0; i < v.resnet_layers.size(); ++i) layers += (i ? "," : "") + std::to_string(v.resnet_layers[i]);
    std::printf("  vision:      image %d, stages (%s), width %d, attention-pool heads %d\n", v.image_size,
                layers.c_str(), v.width, v.heads);
  } else {
    std::printf("  vision:      image %d, patch %d, width %d, layers %d, heads %d, mlp %d\n", v.image_size,
                v.patch_size, v.width, v.layers, v.heads, v.mlp_dim);
  }
  std::printf("  text:        context %d, vocab %d, width %d, layers %d, heads %d, mlp %d\n", t.context_length,
              t.vocab_size, t.width, t.layers, t.heads, t.mlp_dim);
  std::printf("  embed dim:   %d\n", c.embed_dim);
  std::printf("  activation:  %s, layer norm eps %g\n", act, double(c.layer_norm_eps));
  std::printf("parameters:    %s\n", with_commas(params).c_str());
  std::printf("stored dtype:  %s\n", dtype_name(ck.stored_dtype));
  std::printf("file size:     %s (%s bytes)\n", human_bytes(ck.file_size).c_str(),
              with_commas(int64_t(ck.file_size)).c_str());
}

const CommandRegistrar info_command("info", 70, [](CLI::App& root) {
  auto opts = std::make_shared<InfoOptions>();
  CLI::App* cmd = root.add_subcommand("info", "Describe a model: naming scheme, architecture, parameters, dtype");
  cmd->add_option("-m,--model", opts->model, "A .safetensors file or a model directory");
  cmd->add_flag("--system", opts->system,
                "Describe this machine instead: CPU features, the CLIP_MAX_ISA cap, kernel paths");
  cmd->add_option("--config", opts->config, "Model config JSON (open_clip or Hugging Face) overriding the model's");
  cmd->add_flag("--json", opts->json, "Print JSON");
  cmd->add_flag("--model-configs", opts->model_configs,
                "List the named architectures (for clip train --model-config NAME) with their sizes");
  cmd->footer(
      "Examples:\n"
      "  clip info -m models/cifar10-vit-tiny\n"
      "  clip info -m ViT-B-32.safetensors --json\n"
      "  clip info --system");
  cmd->callback([opts] { run_info(*opts); });
});

}  // namespace
}  // namespace clip::app
