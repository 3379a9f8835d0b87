// `clip pull` against a local hub the test starts (tests/hub_server.py: the Hugging Face API's
// file list, LFS redirects with X-Linked-Etag/Size, git-blob ETags, Range): a download that
// breaks off resumes with Range and completes; a corrupted file is refused and kept nowhere;
// an unknown repository, an unreachable endpoint and a repository without safetensors are clear
// errors; the pulled model loads by its id with no network and embeds as the original does.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/io.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kTmp = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_pull_" + std::to_string(::getpid());

// A running hub_server.py; its port from the first line of its stdout.
class Hub {
 public:
  explicit Hub(const std::vector<std::string>& args) {
    fs::create_directories(kTmp);
    out_ = kTmp + "/hub_" + std::to_string(counter_++) + ".out";
    log_ = out_ + ".log";
    std::vector<std::string> argv = {"/usr/bin/python3", std::string(CLIP_SOURCE_DIR) + "/tests/hub_server.py",
                                     "--log", log_};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = clip::test::spawn_with_output(argv, out_, /*with_stderr=*/false);
    for (int i = 0; i < 500 && port_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      const std::string s = fs::exists(out_) ? clip::read_text_file(out_) : "";
      if (s.find('\n') != std::string::npos) port_ = std::stoi(s);
    }
    EXPECT_GT(port_, 0) << "hub_server.py did not start";
  }
  ~Hub() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return fs::exists(log_) ? clip::read_text_file(log_) : ""; }

 private:
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string out_, log_;
};

clip::test::CliRun pull(const std::string& home, const std::string& args) {
  ::setenv("CLIP_HOME", home.c_str(), 1);
  clip::test::CliRun r = clip::test::run_clip(args, kTmp);
  ::unsetenv("CLIP_HOME");
  return r;
}

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

TEST(Pull, ABrokenDownloadResumesWithRangeAndThePulledModelEmbedsAsTheOriginal) {
  Hub hub({"clip-test/tiny=" + kModel, "--cut-after", "100000"});
  const std::string home = kTmp + "/home_resume";
  fs::remove_all(home);
  clip::test::CliRun r = pull(home, "pull clip-test/tiny --endpoint " + hub.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("open_clip_model.safetensors: the download broke off after 100000 bytes"), std::string::npos) << r.err;
  const std::string snap = home + "/models/clip-test--tiny/snapshots/" + kCommit;
  EXPECT_FALSE(fs::exists(snap + "/open_clip_model.safetensors"));  // never a partial file in the snapshot
  EXPECT_FALSE(fs::exists(home + "/models/clip-test--tiny/refs/main"));
  // The same command again: the rest only, with Range, verified, then the ref.
  r = pull(home, "pull clip-test/tiny --endpoint " + hub.endpoint());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, snap + "\n");
  EXPECT_NE(hub.log().find("range=bytes=100000-"), std::string::npos) << hub.log();
  for (const char* f : {"open_clip_model.safetensors", "open_clip_config.json", "bpe_vocab.txt.gz"})
    EXPECT_EQ(clip::read_file(snap + "/" + f), clip::read_file(kModel + "/" + f)) << f;
  EXPECT_FALSE(fs::exists(snap + "/pytorch_model.bin"));  // only the files clip reads
  EXPECT_EQ(clip::read_text_file(home + "/models/clip-test--tiny/refs/main"), kCommit + "\n");
  EXPECT_FALSE(fs::exists(home + "/models/clip-test--tiny/incomplete/" + kCommit));
  // A third run downloads nothing.
  r = pull(home, "pull clip-test/tiny --endpoint " + hub.endpoint());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("3 already here, 0.0 MB downloaded"), std::string::npos) << r.err;
  // --model ORG/NAME from the cache (no endpoint involved): the same embeddings as the folder.
  const std::string a = kTmp + "/pulled.npy", b = kTmp + "/original.npy";
  r = pull(home, "embed -m clip-test/tiny --text 'a photo of a ship' -o " + a);
  ASSERT_EQ(r.status, 0) << r.err;
  r = pull(home, "embed -m " + kModel + " --text 'a photo of a ship' -o " + b);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(clip::read_file(a), clip::read_file(b));
  r = pull(home, "embed -m clip-test/other --text x -o " + a);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("clip pull clip-test/other"), std::string::npos) << r.err;
}

TEST(Pull, ACorruptedFileIsRefusedAndKeptNowhere) {
  Hub hub({"clip-test/tiny=" + kModel, "--corrupt", "open_clip_model.safetensors"});
  const std::string home = kTmp + "/home_corrupt";
  fs::remove_all(home);
  clip::test::CliRun r = pull(home, "pull clip-test/tiny --endpoint " + hub.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("open_clip_model.safetensors: SHA-256"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("refused"), std::string::npos) << r.err;
  const std::string root = home + "/models/clip-test--tiny";
  EXPECT_FALSE(fs::exists(root + "/snapshots/" + kCommit + "/open_clip_model.safetensors"));
  EXPECT_FALSE(fs::exists(root + "/incomplete/" + kCommit + "/open_clip_model.safetensors.partial"));
  EXPECT_FALSE(fs::exists(root + "/refs/main"));
  // A small file's git blob id is checked too.
  Hub hub2({"clip-test/tiny=" + kModel, "--corrupt", "open_clip_config.json"});
  fs::remove_all(home);
  r = pull(home, "pull clip-test/tiny --endpoint " + hub2.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("open_clip_config.json: git blob SHA-1"), std::string::npos) << r.err;
}

TEST(Pull, UnknownRepositoriesAndUnreachableEndpointsAreClearErrors) {
  const std::string empty = kTmp + "/no_weights";
  fs::create_directories(empty);
  clip::write_file_atomic(empty + "/config.json", std::string("{}"));
  Hub hub({"clip-test/tiny=" + kModel, "clip-test/empty=" + empty});
  const std::string home = kTmp + "/home_errors";
  clip::test::CliRun r = pull(home, "pull clip-test/missing --endpoint " + hub.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("clip-test/missing@main: not found (HTTP 404)"), std::string::npos) << r.err;
  r = pull(home, "pull clip-test/empty --endpoint " + hub.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no .safetensors weights"), std::string::npos) << r.err;
  r = pull(home, "pull clip-test/tiny --endpoint http://127.0.0.1:1 --timeout 5");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("cannot reach http://127.0.0.1:1"), std::string::npos) << r.err;
  r = pull(home, "pull not-a-repo-id --endpoint " + hub.endpoint());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("expected a repository id ORG/NAME"), std::string::npos) << r.err;
  // HF_ENDPOINT is honoured.
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  r = pull(home, "pull clip-test/tiny");
  ::unsetenv("HF_ENDPOINT");
  EXPECT_EQ(r.status, 0) << r.err;
}

}  // namespace
