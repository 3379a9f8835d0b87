#pragma once
// PyTorch checkpoints without PyTorch, and without running anything they contain:
//   * torch.save zip archives (PyTorch >= 1.6): open_clip .pt files, Hugging Face
//     pytorch_model.bin, training checkpoints ({"state_dict": ...} is unwrapped);
//   * TorchScript archives (torch.jit.save; OpenAI's released ViT-B-32.pt, RN50.pt, ...): the
//     module tree's tensors, named by their attribute paths as model.state_dict() names them.
// The archive is read with libarchive; data.pkl is interpreted by a restricted unpickler that
// builds only dicts, lists, tuples, strings, numbers, tensors (torch._utils._rebuild_tensor_v2
// and _rebuild_parameter over the archive's storages) and, for TorchScript, plain attribute
// objects of `__torch__.*` classes. Any other global (os.system, builtins.eval, ...) is refused
// with a clear error naming the file and the global: nothing in the file is ever executed.
// The legacy (pre-1.6, non-zip) format is refused with a message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace clip {

// Every tensor of the checkpoint (floating and integer), contiguous, by name, in file order.
// `label` names the file in errors.
std::vector<std::pair<std::string, Tensor>> read_torch_checkpoint(const uint8_t* data, size_t size,
                                                                 const std::string& label);
std::vector<std::pair<std::string, Tensor>> read_torch_checkpoint_file(const std::string& path);

// Whether `path`'s name is a PyTorch checkpoint's (.pt, .pth, .bin, .ckpt).
bool is_torch_checkpoint_name(const std::string& path);

}  // namespace clip
