// PyTorch's own files read without PyTorch (core/torch_checkpoint.h), against files PyTorch
// wrote (tools/torch_checkpoints.py, Debian's python3-torch): a torch.save state dict (with a
// non-contiguous view), an f16 one, an open_clip-style training checkpoint ("state_dict" with
// DDP "module." names) and a TorchScript archive (the form of OpenAI's released .pt files)
// give exactly the tensors of the safetensors file of the same weights, and the reference
// features (2e-5, the parity tolerance); a pickle that would run code is refused and runs
// nothing; damaged and legacy files are clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/io.h"
#include "core/torch_checkpoint.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const std::string& files() {
  static const std::string dir = [] {
    const std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/torch_checkpoints";
    const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/torch_checkpoints.py --out " + d +
                            " > " + d + ".log 2>&1";
    return clip::test::generate_once(d + "/evil/model.pt", cmd) ? d : std::string();
  }();
  return dir;
}

void expect_same_tensors(const std::string& got_path, const std::string& want_path) {
  const clip::LoadedCheckpoint got = clip::load_checkpoint(got_path), want = clip::load_checkpoint(want_path);
  EXPECT_EQ(got.config.embed_dim, want.config.embed_dim);
  ASSERT_EQ(got.tensors.size(), want.tensors.size()) << got_path;
  for (const auto& [name, t] : want.tensors) {
    const clip::Tensor& g = got.get(name, t.shape);
    ASSERT_EQ(std::memcmp(g.data, t.data, t.nbytes()), 0) << got_path << ": " << name;
  }
}

class TorchCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    if (files().empty())
      GTEST_FAIL() << "tools/torch_checkpoints.py failed (needs python3-torch; see "
                   << CLIP_BINARY_DIR << "/test_tmp/torch_checkpoints.log)";
  }
};

TEST_F(TorchCheckpoint, StateDictsAndTorchScriptGiveTheSafetensorsTensors) {
  const std::string d = files();
  expect_same_tensors(d + "/torch/model.pt", d + "/openai/model.safetensors");
  expect_same_tensors(d + "/torch/training.pt", d + "/openai/model.safetensors");
  expect_same_tensors(d + "/torchscript/model.pt", d + "/openai/model.safetensors");
  expect_same_tensors(d + "/torch/model_f16.pt", d + "/openai_f16/model.safetensors");
  EXPECT_EQ(clip::load_checkpoint(d + "/torch/model_f16.pt").stored_dtype, clip::DType::F16);
}

TEST_F(TorchCheckpoint, TorchScriptArchiveGivesTheReferenceFeatures) {
  const std::string d = files();
  clip::ClipModel model(clip::load_checkpoint(d + "/torchscript/model.pt"));
  std::vector<int64_t> shape, fshape;
  const std::vector<float> pixels = clip::read_npy_f32(d + "/golden/pixels.npy", shape);
  const std::vector<float> want = clip::read_npy_f32(d + "/golden/image_features.npy", fshape);
  std::vector<float> got(want.size());
  model.encode_images(pixels.data(), int(shape[0]), got.data());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-5) << i;
}

TEST_F(TorchCheckpoint, APickleThatWouldRunCodeIsRefusedAndRunsNothing) {
  const std::string d = files();
  fs::remove(d + "/evil/PWNED");
  try {
    (void)clip::load_checkpoint(d + "/evil/model.pt");
    FAIL() << "loaded";
  } catch (const clip::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(d + "/evil/model.pt"), std::string::npos) << m;
    EXPECT_NE(m.find("refuses the pickle global posix.system"), std::string::npos) << m;
  }
  EXPECT_FALSE(fs::exists(d + "/evil/PWNED"));
}

TEST_F(TorchCheckpoint, DamagedAndLegacyFilesAreClearErrors) {
  const std::string d = files();
  const std::string whole = clip::read_text_file(d + "/torch/model.pt");
  for (size_t cut : {size_t(10), whole.size() / 3, whole.size() * 2 / 3}) {
    const std::string s = whole.substr(0, cut);
    EXPECT_THROW(clip::read_torch_checkpoint(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "cut.pt"), clip::Error)
        << cut;
  }
  const std::string legacy = std::string("\x80\x02\x8a\x0a", 4) + std::string(40, 'x');
  try {
    (void)clip::read_torch_checkpoint(reinterpret_cast<const uint8_t*>(legacy.data()), legacy.size(), "old.pt");
    FAIL() << "read";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("legacy"), std::string::npos) << e.what();
  }
  EXPECT_THROW(clip::read_torch_checkpoint(reinterpret_cast<const uint8_t*>("hello"), 5, "x.pt"), clip::Error);
  // A tuple nested 2,000,000 deep: an error, and no stack overflow while it is torn down.
  EXPECT_THROW(clip::read_torch_checkpoint_file(d + "/deep/model.pt"), clip::Error);
}

}  // namespace
