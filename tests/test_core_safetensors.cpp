// safetensors reader/writer: round trips, byte-exact agreement with the reference writer
// (Python `safetensors`), zero-copy views, half-precision conversion, and one test per kind of
// hostile file, each expecting one clip::Error that names the file and the exact problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/io.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {

std::string temp_dir() {
  static const std::string dir = [] {
    std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/core_safetensors";
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

std::string write_raw(const std::string& name, const std::string& bytes) {
  std::string path = temp_dir() + "/" + name;
  write_file_atomic(path, bytes);
  return path;
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A file whose header is `header` (exact text, no padding) followed by `data_size` zero bytes.
std::string with_header(const std::string& name, const std::string& header, size_t data_size) {
  return write_raw(name, le64(header.size()) + header + std::string(data_size, '\0'));
}

// Expects SafetensorsFile::open(path) to throw one clip::Error naming the file and `problem`.
void expect_rejected(const std::string& path, const std::string& problem) {
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << path << " was accepted; expected an error containing: " << problem;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "error does not name the file: " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "error lacks '" << problem << "': " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error is not one line: " << msg;
  }
}

bool have_reference() {
  static const bool ok =
      std::system((std::string(CLIP_PYTHON) + " -c 'import safetensors, numpy' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << "command failed: " << cmd;
  return out;
}

std::string reference(const std::string& args) {
  return run_capture(std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/safetensors_reference.py " + args);
}

Tensor f32_tensor(std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t = Tensor::empty(std::move(shape), DType::F32);
  std::memcpy(t.data, values.data(), values.size() * 4);
  return t;
}

// The same tensors as tools/safetensors_reference.py's fixed_tensors().
NamedTensors fixed_tensors() {
  NamedTensors out;
  out.emplace_back("weight", f32_tensor({2, 3}, {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f}));
  Tensor half = Tensor::empty({5}, DType::F16);
  const float hv[] = {0.0f, -1.5f, 65504.0f, 6.1035156e-05f, 1.0f / 3.0f};
  for (int i = 0; i < 5; ++i) half.ptr<uint16_t>()[i] = f32_to_f16(hv[i]);
  out.emplace_back("half", half);
  Tensor brain = Tensor::empty({3}, DType::BF16);
  const float bv[] = {1.0f, -2.5f, 3.140625f};
  for (int i = 0; i < 3; ++i) brain.ptr<uint16_t>()[i] = f32_to_bf16(bv[i]);
  out.emplace_back("brain", brain);
  Tensor steps = Tensor::empty({4}, DType::I64);
  const int64_t sv[] = {0, 1, -2, int64_t(1) << 40};
  std::memcpy(steps.data, sv, sizeof sv);
  out.emplace_back("steps", steps);
  Tensor scalar = Tensor::empty({}, DType::F64);
  *scalar.ptr<double>() = 2.5;
  out.emplace_back("scalar", scalar);
  out.emplace_back("empty", Tensor::zeros({0, 3}, DType::F32));
  Tensor bytes = Tensor::empty({3}, DType::U8);
  const uint8_t uv[] = {1, 2, 255};
  std::memcpy(bytes.data, uv, 3);
  out.emplace_back("bytes", bytes);
  return out;
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  const std::string path = temp_dir() + "/roundtrip.safetensors";
  const NamedTensors in = fixed_tensors();
  write_safetensors(path, in, {{"format", "pt"}, {"who", "test"}});
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("who"), "test");
  ASSERT_EQ(f.tensors().size(), in.size());
  EXPECT_EQ(f.header().header_size % 8, 0u) << "header must be padded to 8 bytes";
  for (const auto& [name, t] : in) {
    const SafetensorsTensorInfo* info = f.find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->dtype, t.dtype) << name;
    EXPECT_EQ(info->shape, t.shape) << name;
    ASSERT_EQ(info->nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(f.bytes(*info), t.data, t.nbytes()), 0) << name;
    // Every tensor is aligned to its element size within the file.
    EXPECT_EQ((f.header().data_offset + info->begin) % dtype_size(info->dtype), 0u) << name;
  }
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST(Safetensors, F32IsZeroCopyAndHalvesConvert) {
  const std::string path = temp_dir() + "/convert.safetensors";
  write_safetensors(path, fixed_tensors());
  SafetensorsFile f = SafetensorsFile::open(path);
  Tensor w = f.to_f32(*f.find("weight"));
  const uint8_t* begin = f.mapping()->data();
  EXPECT_GE(static_cast<const uint8_t*>(w.data), begin);
  EXPECT_LT(static_cast<const uint8_t*>(w.data), begin + f.file_size()) << "F32 should be a view into the map";
  EXPECT_EQ(w.f32()[5], 1.5f);

  Tensor h = f.to_f32(*f.find("half"));
  EXPECT_EQ(h.dtype, DType::F32);
  EXPECT_EQ(h.f32()[1], -1.5f);
  EXPECT_EQ(h.f32()[2], 65504.0f);
  EXPECT_EQ(h.f32()[3], 6.103515625e-05f);
  EXPECT_EQ(h.f32()[4], 0.333251953125f);  // 1/3 rounded to f16
  Tensor b = f.to_f32(*f.find("brain"));
  EXPECT_EQ(b.f32()[0], 1.0f);
  EXPECT_EQ(b.f32()[1], -2.5f);
  EXPECT_EQ(b.f32()[2], 3.140625f);
  Tensor d = f.to_f32(*f.find("scalar"));
  EXPECT_TRUE(d.shape.empty());
  EXPECT_EQ(d.f32()[0], 2.5f);
  try {
    f.to_f32(*f.find("steps"));
    ADD_FAILURE() << "an I64 tensor converted to F32";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'steps' has dtype I64"), std::string::npos) << e.what();
  }
  // The views keep the mapping alive after the file object is gone.
  Tensor kept;
  {
    SafetensorsFile g = SafetensorsFile::open(path);
    kept = g.to_f32(*g.find("weight"));
  }
  EXPECT_EQ(kept.f32()[0], -1.0f);
}

TEST(Safetensors, UnalignedF32IsCopied) {
  // A writer that does not pad: 1 byte of U8 data pushes the F32 tensor off 4-byte alignment.
  const std::string header =
      R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  std::string data(9, '\0');
  float v[2] = {1.25f, -7.0f};
  std::memcpy(&data[1], v, 8);
  std::string path = write_raw("unaligned.safetensors", le64(header.size()) + header + data);
  SafetensorsFile f = SafetensorsFile::open(path);
  Tensor a = f.to_f32(*f.find("a"));
  EXPECT_EQ(a.f32()[0], 1.25f);
  EXPECT_EQ(a.f32()[1], -7.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % 4, 0u);
}

TEST(Safetensors, SerializedBytesMatchReferenceWriter) {
  if (!have_reference()) GTEST_FAIL() << "Python safetensors not installed (scripts/install-deps.sh)";
  // One metadata key: the reference keeps metadata in a hash map, so several keys have no
  // fixed order.
  const std::string ref_path = temp_dir() + "/reference_written.safetensors";
  reference("write1 " + ref_path);
  std::vector<uint8_t> ours = serialize_safetensors(fixed_tensors(), {{"format", "pt"}});
  std::vector<uint8_t> theirs = read_file(ref_path);
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "our writer's bytes differ from the reference writer's";
}

TEST(Safetensors, ReferenceReadsOurFileAndWeReadTheirs) {
  if (!have_reference()) GTEST_FAIL() << "Python safetensors not installed (scripts/install-deps.sh)";
  const std::string ours = temp_dir() + "/ours_for_reference.safetensors";
  write_safetensors(ours, fixed_tensors(), {{"format", "pt"}, {"note", "ours"}});
  auto dumped = nlohmann::json::parse(reference("dump " + ours));
  EXPECT_EQ(dumped["__metadata__"]["note"], "ours");
  EXPECT_EQ(dumped["weight"]["values"], nlohmann::json({-1.0, -0.5, 0.0, 0.5, 1.0, 1.5}));
  EXPECT_EQ(dumped["half"]["values"], nlohmann::json({0.0, -1.5, 65504.0, 6.103515625e-05, 0.333251953125}));
  EXPECT_EQ(dumped["brain"]["values"], nlohmann::json({1.0, -2.5, 3.140625}));
  EXPECT_EQ(dumped["steps"]["values"], nlohmann::json({0, 1, -2, int64_t(1) << 40}));
  EXPECT_EQ(dumped["scalar"]["shape"], nlohmann::json::array());
  EXPECT_EQ(dumped["empty"]["shape"], nlohmann::json({0, 3}));
  EXPECT_EQ(dumped["bytes"]["dtype"], "U8");

  const std::string theirs = temp_dir() + "/reference_multi.safetensors";
  reference("write " + theirs);
  SafetensorsFile f = SafetensorsFile::open(theirs);
  EXPECT_EQ(f.metadata().at("note"), "reference");
  for (const auto& [name, t] : fixed_tensors()) {
    const auto* info = f.find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(f.bytes(*info), t.data, t.nbytes()), 0) << name;
  }
}

// ---- hostile input: each gives exactly one clear error ----

TEST(SafetensorsHostile, ZeroLengthFile) { expect_rejected(write_raw("zero.safetensors", ""), "file is empty"); }

TEST(SafetensorsHostile, TruncatedBeforeHeaderLength) {
  expect_rejected(write_raw("short.safetensors", "\x10\x00\x00"), "too short for the 8-byte");
}

TEST(SafetensorsHostile, TruncatedInsideHeader) {
  std::vector<uint8_t> full = serialize_safetensors(fixed_tensors());
  std::string cut(full.begin(), full.begin() + 40);
  expect_rejected(write_raw("cut_header.safetensors", cut), "runs past the end of the file");
}

TEST(SafetensorsHostile, TruncatedInsideData) {
  std::vector<uint8_t> full = serialize_safetensors(fixed_tensors());
  std::string cut(full.begin(), full.end() - 3);
  expect_rejected(write_raw("cut_data.safetensors", cut), "run past the end of the data");
}

TEST(SafetensorsHostile, HugeHeaderLength) {
  expect_rejected(write_raw("huge.safetensors", le64(~uint64_t(0)) + "{}"), "exceeds the limit of 100000000");
  expect_rejected(write_raw("huge2.safetensors", le64(200'000'000) + "{}"), "exceeds the limit");
}

TEST(SafetensorsHostile, HeaderNotJson) {
  expect_rejected(with_header("notjson.safetensors", "{\"a\": [1, 2", 0), "not valid JSON");
  expect_rejected(with_header("notobject.safetensors", "[1, 2, 3]", 0), "does not start with '{'");
  expect_rejected(with_header("trailing.safetensors", "{} {}", 0), "not valid JSON");
}

TEST(SafetensorsHostile, WrongDtypeString) {
  expect_rejected(with_header("dtype.safetensors", R"({"w":{"dtype":"float32","shape":[1],"data_offsets":[0,4]}})", 4),
                  "tensor 'w': unsupported dtype 'float32'");
  expect_rejected(with_header("dtype2.safetensors", R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4),
                  "tensor 'w': \"dtype\" is not a string");
}

TEST(SafetensorsHostile, ShapeSizeMismatch) {
  expect_rejected(with_header("mismatch.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
                  "tensor 'w': data_offsets [0,20] span 20 bytes but shape [2, 3] of F32 needs 24 bytes");
}

TEST(SafetensorsHostile, BadShapes) {
  expect_rejected(with_header("negshape.safetensors", R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,0]}})", 0),
                  "tensor 'w': shape [-1,4] has an entry that is not a non-negative integer");
  expect_rejected(with_header("floatshape.safetensors", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                  "not a non-negative integer");
  expect_rejected(with_header("shapeobj.safetensors", R"({"w":{"dtype":"F32","shape":{},"data_offsets":[0,0]}})", 0),
                  "\"shape\" is not an array");
  // 2^62 * 2^62 elements: the element count overflows 64 bits.
  expect_rejected(with_header("overflow.safetensors",
                              R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})", 0),
                  "more elements than can be addressed");
  expect_rejected(with_header("overflow2.safetensors",
                              R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
                  "needs more bytes than can be addressed");
}

TEST(SafetensorsHostile, OffsetsPastTheEnd) {
  expect_rejected(with_header("pastend.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
                  "tensor 'w': data_offsets [8,24] run past the end of the data (16 bytes");
  expect_rejected(with_header("reversed.safetensors", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 16),
                  "end before they begin");
  expect_rejected(with_header("negoffset.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 16),
                  "are not non-negative integers");
  expect_rejected(with_header("oneoffset.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 16),
                  "is not a [begin, end] pair");
  expect_rejected(with_header("hugeoffset.safetensors",
                              R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}})", 16),
                  "are not non-negative integers");
}

TEST(SafetensorsHostile, OverlappingRanges) {
  expect_rejected(with_header("overlap.safetensors",
                              R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
                  "tensors 'a' [0, 16) and 'b' [8, 16) overlap");
  // Contained entirely inside another range.
  expect_rejected(with_header("inside.safetensors",
                              R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                              R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                              R"("c":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})", 16),
                  "overlap");
}

TEST(SafetensorsHostile, MissingFieldsAndDuplicates) {
  expect_rejected(with_header("nodtype.safetensors", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4),
                  "tensor 'w': no \"dtype\"");
  expect_rejected(with_header("noshape.safetensors", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                  "tensor 'w': no \"shape\"");
  expect_rejected(with_header("nooffsets.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", 4),
                  "tensor 'w': no \"data_offsets\"");
  expect_rejected(with_header("entrynotobj.safetensors", R"({"w":[1,2]})", 4), "tensor 'w': header entry is not a JSON object");
  expect_rejected(with_header("dup.safetensors",
                              R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
                  "lists 'w' twice");
  expect_rejected(with_header("emptyname.safetensors", R"({"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
                  "empty name");
}

TEST(SafetensorsHostile, BadMetadataAndNesting) {
  expect_rejected(with_header("meta.safetensors", R"({"__metadata__":{"format":1}})", 0),
                  "__metadata__ value for 'format' is not a string");
  expect_rejected(with_header("meta2.safetensors", R"({"__metadata__":[]})", 0), "__metadata__ is not a JSON object");
  expect_rejected(with_header("deep.safetensors", "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0),
                  "nests deeper than");
}

TEST(SafetensorsHostile, PyTorchPickleIsNamed) {
  // (SafetensorsFile only; the model loader reads such files by their .pt/.bin names.)
  expect_rejected(write_raw("model.bin", std::string("PK\x03\x04", 4) + std::string(64, 'x')), "this is a PyTorch checkpoint");
  expect_rejected(write_raw("model.pt", std::string("\x80\x02}q\x00(X", 7) + std::string(64, 'x')),
                  "this is a PyTorch checkpoint");
}

TEST(SafetensorsHostile, ReferenceRejectsTheSameFiles) {
  // Our rejections are not over-strict: the reference reader refuses these too.
  if (!have_reference()) GTEST_FAIL() << "Python safetensors not installed (scripts/install-deps.sh)";
  std::vector<std::string> files = {
      write_raw("r_zero.safetensors", ""),
      write_raw("r_huge.safetensors", le64(~uint64_t(0)) + "{}"),
      with_header("r_dtype.safetensors", R"({"w":{"dtype":"float32","shape":[1],"data_offsets":[0,4]}})", 4),
      with_header("r_mismatch.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
      with_header("r_pastend.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
      with_header("r_overlap.safetensors",
                  R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                  16),
  };
  std::string args = "validate";
  for (const auto& f : files) args += " " + f;
  std::string out = reference(args);
  size_t errors = 0;
  for (size_t p = 0; (p = out.find("error", p)) != std::string::npos; ++p) ++errors;
  EXPECT_EQ(errors, files.size()) << out;
}
