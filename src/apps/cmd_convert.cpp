// `clip convert IN OUT --type T`: a model to clip.cpp's GGUF (f32, f16, q8_0, q4_0) or to
// safetensors (f32, f16, bf16). The work is model/convert.h's.
#include <cstdio>
#include <memory>
#include <string>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "model/convert.h"

namespace clip::app {
namespace {

struct ConvertOptions {
  std::string input, output, type = "f16";
  bool json = false;
};

const CommandRegistrar convert_command("convert", 75, [](CLI::App& root) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* c = root.add_subcommand("convert", "Convert a model to clip.cpp's GGUF or to safetensors");
  c->add_option("input", o->input, "Model: .safetensors, model folder, .pt/.bin (PyTorch, TorchScript) or .gguf")->required();
  c->add_option("output", o->output, "Output file: .gguf (clip.cpp's layout) or .safetensors (OpenAI's names)")->required();
  c->add_option("--type", o->type, "GGUF: f32, f16, q8_0, q4_0 (the 2-D weights); safetensors: f32, f16, bf16")
      ->capture_default_str();
  c->add_flag("--json", o->json, "Print what was written as JSON");
  c->footer(
      "Examples:\n"
      "  clip convert ViT-B-32.pt vit-b-32-q8_0.gguf --type q8_0\n"
      "  clip convert models/cifar10-vit-tiny tiny-f16.gguf --type f16\n"
      "  clip convert open_clip_pytorch_model.bin model.safetensors --type f32");
  c->callback([o] {
    check_output_file(o->output, "output");
    const ConvertReport r = convert_model(o->input, o->output, o->type);
    if (o->json) {
      print_json_line({{"output", o->output}, {"format", r.format}, {"type", r.type}, {"tensors", r.tensors}, {"bytes", r.bytes}});
    } else {
      std::printf("wrote %s (%s, %s, %lld tensors, %.1f MB)\n", o->output.c_str(), r.format.c_str(), r.type.c_str(),
                  static_cast<long long>(r.tensors), double(r.bytes) / 1e6);
    }
  });
});

}  // namespace
}  // namespace clip::app
