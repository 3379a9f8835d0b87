// `clip serve` started by the test on a free loopback port and driven by a real HTTP client
// (cpp-httplib's): every endpoint answers and agrees with the command line (/v1/embed with
// `clip embed`, /v1/search with `clip search`, Immich's /predict with /v1/embed); hostile requests
// (a huge body, bad base64, a broken image, invalid UTF-8, ../ in thumbnail paths, malformed
// multipart) get 4xx with a message and never break the server; concurrent clients are served
// with no error and share encoder batches; a full queue answers 503; SIGTERM stops it cleanly.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/io.h"
#include "core/base64.h"
#include "test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kShared = CLIP_SHARED_DATA;
// Per process: CTest runs the cases in parallel, and each one indexes its own folder.
const std::string kTmp = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_serve_" + std::to_string(::getpid());
const std::string kClip = std::string(CLIP_BINARY_DIR) + "/clip";

clip::test::CliRun clip_cmd(const std::string& args) { return clip::test::run_clip(args, kTmp); }

// A running `clip serve`: started with fork/exec, stderr to a file, port read from it.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args) {
    fs::create_directories(kTmp);
    log_ = kTmp + "/serve_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".log";
    std::vector<std::string> argv = {kClip, "serve", "--port", "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = clip::test::spawn_with_output(argv, log_, /*with_stderr=*/true);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = fs::exists(log_) ? clip::read_text_file(log_) : "";
      const size_t at = text.find("listening on http://127.0.0.1:");
      if (at != std::string::npos && text.find('/', at + 30) != std::string::npos) {
        port_ = std::stoi(text.substr(at + 30));
        return;
      }
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "clip serve did not start:\n" << (fs::exists(log_) ? clip::read_text_file(log_) : "");
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  // SIGTERM, then the exit status.
  int terminate() {
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string log() const { return clip::read_text_file(log_); }

 private:
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

// A folder of 30 CIFAR-10 test images and 4 photos, indexed with the shipped model.
const std::string& indexed_db() {
  static const std::string db = [] {
    const std::string dir = kTmp + "/photos";
    fs::remove_all(dir);
    for (const char* cls : {"cat", "dog", "ship"}) {
      fs::create_directories(dir + "/" + cls);
      for (int i = 0; i < 10; ++i) {
        char f[16];
        std::snprintf(f, sizeof f, "%04d.jpg", i);
        fs::copy_file(kShared + "/cifar10_jpeg/test/" + cls + "/" + f, dir + "/" + cls + "/" + f);
      }
    }
    for (const char* p : {"chelsea.png", "coffee.png", "astronaut.png", "horse.png"})
      fs::copy_file(kShared + "/sample_photos/skimage/" + p, dir + "/" + p);
    const std::string path = kTmp + "/photos.db";
    fs::remove(path);
    auto r = clip_cmd("index -m " + kModel + " --db " + path + " " + dir);
    EXPECT_EQ(r.status, 0) << r.err;
    return path;
  }();
  return db;
}

std::vector<float> floats(const json& a) { return a.get<std::vector<float>>(); }

class Serve : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kShared + "/cifar10_jpeg/test")) << "shared data not found at " << kShared;
    ASSERT_TRUE(fs::exists(kClip));
    fs::create_directories(kTmp);
  }
};

TEST_F(Serve, EndpointsAnswerAndAgreeWithTheCommandLine) {
  const std::string db = indexed_db();
  ServeProcess s({"--db", db});
  ASSERT_GT(s.port(), 0);
  httplib::Client c = s.client();
  auto ping = c.Get("/ping");
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->status, 200);
  EXPECT_EQ(ping->body, "pong");
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  const json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["indexed"].get<int>(), 34);
  EXPECT_EQ(h["model"], "cifar10-vit-tiny");

  // /v1/embed = clip embed, texts and images.
  const std::string cat = kTmp + "/photos/chelsea.png", ship = kTmp + "/photos/ship/0003.jpg";
  auto r = clip_cmd("embed -m " + kModel + " " + cat + " " + ship + " --text 'a photo of a cat' --text 'a ship' -o " +
                    kTmp + "/ref.npy");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<int64_t> shape;
  const std::vector<float> ref = clip::read_npy_f32(kTmp + "/ref.npy", shape);
  const int D = int(shape[1]);
  auto row = [&](int i) { return std::vector<float>(ref.begin() + i * D, ref.begin() + (i + 1) * D); };
  auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] - b[i]) > 1e-6) return false;
    return true;
  };
  auto t = c.Post("/v1/embed", R"({"texts": ["a photo of a cat", "a ship"]})", "application/json");
  ASSERT_TRUE(t);
  ASSERT_EQ(t->status, 200) << t->body;
  const json te = json::parse(t->body);
  EXPECT_EQ(te["dim"].get<int>(), D);
  EXPECT_TRUE(near(floats(te["embeddings"][0]), row(2)));
  EXPECT_TRUE(near(floats(te["embeddings"][1]), row(3)));
  const std::string cat_bytes = clip::read_text_file(cat), ship_bytes = clip::read_text_file(ship);
  const json images = {{"images", {clip::base64_encode(cat_bytes), "data:image/jpeg;base64," + clip::base64_encode(ship_bytes)}}};
  auto im = c.Post("/v1/embed", images.dump(), "application/json");
  ASSERT_TRUE(im);
  ASSERT_EQ(im->status, 200) << im->body;
  const json ie = json::parse(im->body);
  EXPECT_TRUE(near(floats(ie["embeddings"][0]), row(0)));
  EXPECT_TRUE(near(floats(ie["embeddings"][1]), row(1)));

  // Immich's /predict = /v1/embed (the embedding as a JSON array in a string).
  httplib::MultipartFormDataItems text_form = {
      {"entries", R"({"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en"}}}})", "", ""},
      {"text", "a photo of a cat", "", ""}};
  auto pt = c.Post("/predict", text_form);
  ASSERT_TRUE(pt);
  ASSERT_EQ(pt->status, 200) << pt->body;
  // Equal up to float rounding: the encoder's products round differently with another batch
  // composition (here 1 text against 2).
  EXPECT_TRUE(near(floats(json::parse(json::parse(pt->body)["clip"].get<std::string>())), floats(te["embeddings"][0])));
  httplib::MultipartFormDataItems image_form = {{"entries", R"({"clip":{"visual":{"modelName":"ViT-B-32__openai"}}})", "", ""},
                                                {"image", cat_bytes, "chelsea.png", "application/octet-stream"}};
  auto pi = c.Post("/predict", image_form);
  ASSERT_TRUE(pi);
  ASSERT_EQ(pi->status, 200) << pi->body;
  const json pj = json::parse(pi->body);
  EXPECT_TRUE(near(floats(json::parse(pj["clip"].get<std::string>())), floats(ie["embeddings"][0])));
  EXPECT_EQ(pj["imageWidth"].get<int>(), 451);  // chelsea.png is 451 x 300
  EXPECT_EQ(pj["imageHeight"].get<int>(), 300);

  // /v1/search = clip search; /knn-service ranks the same; /metadata names the rows.
  r = clip_cmd("search --db " + db + " 'a photo of a dog' -n 5 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<json> cli_hits;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) cli_hits.push_back(json::parse(line));
  auto sr = c.Post("/v1/search", R"({"text": "a photo of a dog", "k": 5})", "application/json");
  ASSERT_TRUE(sr);
  ASSERT_EQ(sr->status, 200) << sr->body;
  const json results = json::parse(sr->body)["results"];
  ASSERT_EQ(results.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(results[i]["path"], cli_hits[i]["path"]);
    EXPECT_NEAR(results[i]["score"].get<double>(), cli_hits[i]["score"].get<double>(), 1e-6);
  }
  auto knn = c.Post("/knn-service", R"({"text": "a photo of a dog", "modality": "image", "num_images": 5})", "application/json");
  ASSERT_TRUE(knn);
  ASSERT_EQ(knn->status, 200) << knn->body;
  const json kj = json::parse(knn->body);
  ASSERT_EQ(kj.size(), 5u);
  EXPECT_EQ(kj[0]["image_path"], results[0]["path"]);
  auto meta = c.Post("/metadata", json({{"ids", {kj[0]["id"]}}}).dump(), "application/json");
  ASSERT_TRUE(meta);
  EXPECT_EQ(json::parse(meta->body)[0]["metadata"]["image_path"], results[0]["path"]);
  auto list = c.Get("/indices-list");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body), json({"clip"}));
  // Search by an example image: itself first.
  auto by_image = c.Post("/v1/search", json({{"image", clip::base64_encode(cat_bytes)}, {"k", 1}}).dump(), "application/json");
  ASSERT_TRUE(by_image);
  EXPECT_EQ(json::parse(by_image->body)["results"][0]["path"], fs::absolute(cat).lexically_normal().string());

  // The page and thumbnails (indexed files only).
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("/v1/search"), std::string::npos);
  const std::string p = results[0]["path"].get<std::string>();
  auto thumb = c.Get("/thumb?path=" + httplib::detail::encode_query_param(p));
  ASSERT_TRUE(thumb);
  EXPECT_EQ(thumb->status, 200);
  EXPECT_EQ(thumb->body, clip::read_text_file(p));
  for (const std::string& bad : {std::string("/etc/passwd"), kTmp + "/photos/../photos.db", kTmp + "/photos/cat/../cat/0001.jpg"}) {
    auto b = c.Get("/thumb?path=" + httplib::detail::encode_query_param(bad));
    ASSERT_TRUE(b);
    EXPECT_EQ(b->status, 404) << bad;
  }
  EXPECT_EQ(s.terminate(), 0);
  EXPECT_NE(s.log().find("clip serve: stopped"), std::string::npos) << s.log();
}

// `clip index` while the server runs: the next query sees the new images (no restart).
TEST_F(Serve, NewlyIndexedImagesAppearWithoutARestart) {
  const std::string dir = kTmp + "/growing";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kShared + "/sample_photos/skimage/coffee.png", dir + "/coffee.png");
  const std::string db = kTmp + "/growing.db";
  fs::remove(db);
  ASSERT_EQ(clip_cmd("index -m " + kModel + " --db " + db + " " + dir).status, 0);
  ServeProcess s({"--db", db});
  ASSERT_GT(s.port(), 0);
  httplib::Client c = s.client();
  auto count = [&] {
    auto r = c.Post("/v1/search", R"({"text": "a photo of a cat", "k": 100})", "application/json");
    return r && r->status == 200 ? json::parse(r->body)["results"].size() : size_t(0);
  };
  EXPECT_EQ(count(), 1u);
  fs::copy_file(kShared + "/sample_photos/skimage/chelsea.png", dir + "/chelsea.png");
  fs::copy_file(kShared + "/sample_photos/skimage/horse.png", dir + "/horse.png");
  ASSERT_EQ(clip_cmd("index --db " + db + " " + dir).status, 0);
  EXPECT_EQ(count(), 3u);
  EXPECT_EQ(json::parse(c.Get("/healthz")->body)["indexed"].get<int>(), 3);
  fs::remove(dir + "/coffee.png");
  ASSERT_EQ(clip_cmd("index --db " + db + " " + dir).status, 0);
  EXPECT_EQ(count(), 2u);
  EXPECT_EQ(s.terminate(), 0);
}

TEST_F(Serve, HostileRequestsGetClearErrorsAndTheServerStaysUp) {
  ServeProcess s({"--db", indexed_db(), "--max-body-mb", "1"});
  ASSERT_GT(s.port(), 0);
  httplib::Client c = s.client();
  struct Case {
    std::string path, body;
    int status;
    std::string says;
  };
  const std::string broken_jpeg = clip::base64_encode(std::string("\xff\xd8\xff\xe0garbage", 11));
  const std::vector<Case> cases = {
      {"/v1/embed", std::string(2 << 20, 'x'), 413, "exceeds --max-body-bytes"},
      {"/v1/embed", "{\"texts\": [", 400, "malformed JSON"},
      {"/v1/embed", "[1, 2]", 400, "expected a JSON object"},
      {"/v1/embed", R"({"images": ["not base64!"]})", 400, "images[0]: not valid base64"},
      {"/v1/embed", "{\"images\": [\"" + broken_jpeg + "\"]}", 400, "images[0]"},
      {"/v1/embed", R"({"texts": [42]})", 400, "texts[0]: expected a string"},
      {"/v1/embed", "{\"texts\": [\"caf\xc3\x28\"]}", 400, "malformed JSON"},  // invalid UTF-8
      {"/v1/embed", R"({"nothing": 1})", 400, "give \"texts\""},
      {"/v1/search", R"({"text": "a dog", "k": 0})", 400, "k: expected 1..1000"},
      {"/v1/search", R"({"k": 3})", 400, "give \"text\""},
      {"/knn-service", R"({"text": "a dog", "modality": "text"})", 400, "images only"},
      {"/no-such-endpoint", "{}", 404, "no such endpoint"},
  };
  for (const Case& k : cases) {
    auto r = c.Post(k.path, k.body, "application/json");
    ASSERT_TRUE(r) << k.path;
    EXPECT_EQ(r->status, k.status) << k.path << " " << k.body.substr(0, 40) << ": " << r->body;
    const json err = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(err.is_object() && err.contains("error")) << r->body;
    EXPECT_NE(err["error"].get<std::string>().find(k.says), std::string::npos) << r->body;
  }
  // Immich /predict: malformed entries 422, neither image nor text 400, a broken image 400.
  auto p = c.Post("/predict", httplib::MultipartFormDataItems{{"entries", "{not json", "", ""}, {"text", "x", "", ""}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 422) << p->body;
  p = c.Post("/predict", httplib::MultipartFormDataItems{{"text", "x", "", ""}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 422) << p->body;
  p = c.Post("/predict", httplib::MultipartFormDataItems{{"entries", R"({"clip":{"visual":{"modelName":"m"}}})", "", ""}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 400) << p->body;
  p = c.Post("/predict", httplib::MultipartFormDataItems{{"entries", R"({"clip":{"visual":{"modelName":"m"}}})", "", ""},
                                                          {"image", "not an image", "x.jpg", "image/jpeg"}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 400) << p->body;
  // Still serving, and every error was counted.
  auto ping = c.Get("/ping");
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->body, "pong");
  EXPECT_EQ(s.terminate(), 0);
}

// N concurrent clients: all answered (0 errors), encodes shared between requests; the latency
// percentiles are printed. A request that would overflow the queue gets 503.
TEST_F(Serve, ConcurrentClientsAreBatchedWithNoErrorsAndAFullQueueIs503) {
  ServeProcess s({"-m", kModel, "--max-queue", "64", "--http-threads", "8"});
  ASSERT_GT(s.port(), 0);
  const int clients = 8, per_client = 25;
  std::vector<double> latencies_ms(size_t(clients * per_client));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      httplib::Client c = s.client();
      for (int i = 0; i < per_client; ++i) {
        const auto a = std::chrono::steady_clock::now();
        const json body = {{"texts", {"a photo of number " + std::to_string(t * per_client + i), "a ship"}}};
        auto r = c.Post("/v1/embed", body.dump(), "application/json");
        latencies_ms[size_t(t * per_client + i)] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
        if (!r || r->status != 200 || json::parse(r->body)["embeddings"].size() != 2) ++failures;
      }
    });
  for (auto& th : threads) th.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(failures.load(), 0);
  std::sort(latencies_ms.begin(), latencies_ms.end());
  std::printf("%d clients x %d requests: %.0f requests/s, p50 %.2f ms, p99 %.2f ms\n", clients, per_client,
              clients * per_client / seconds, latencies_ms[latencies_ms.size() / 2], latencies_ms[latencies_ms.size() * 99 / 100]);
  httplib::Client c = s.client();
  const json h = json::parse(c.Get("/healthz")->body);
  EXPECT_EQ(h["items"].get<int>(), 2 * clients * per_client);
  EXPECT_GT(h["largest_batch"].get<int>(), 1) << "no two texts were ever encoded together";
  EXPECT_LT(h["batches"].get<int>(), h["items"].get<int>());
  EXPECT_EQ(h["errors"].get<int>(), 0);
  // 100 texts in one request cannot wait in a queue of 64.
  json many = {{"texts", json::array()}};
  for (int i = 0; i < 100; ++i) many["texts"].push_back("text " + std::to_string(i));
  auto full = c.Post("/v1/embed", many.dump(), "application/json");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 503) << full->body;
  EXPECT_NE(full->body.find("--max-queue"), std::string::npos) << full->body;
  EXPECT_EQ(s.terminate(), 0);
}

// The page in a real browser (Debian's chromium, headless): a permalink query renders result
// tiles with thumbnails and scores; the screenshot is kept (docs/search-page.png is one).
TEST_F(Serve, PageShowsResultsInHeadlessChromium) {
  ASSERT_EQ(std::system("command -v chromium > /dev/null"), 0) << "chromium is not installed (scripts/install-deps.sh)";
  ServeProcess s({"--db", indexed_db()});
  ASSERT_GT(s.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port()) + "/?q=a%20photo%20of%20a%20ship";
  const std::string flags = "chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                            "--user-data-dir=" + kTmp + "/chromium-profile --virtual-time-budget=8000 ";
  const std::string dom = kTmp + "/page_dom.html", shot = kTmp + "/search-page.png";
  fs::remove(shot);
  ASSERT_EQ(std::system((flags + "--dump-dom '" + url + "' > " + dom + " 2>/dev/null").c_str()), 0);
  const std::string html = clip::read_text_file(dom);
  size_t tiles = 0;
  for (size_t p = html.find("class=\"result\""); p != std::string::npos; p = html.find("class=\"result\"", p + 1)) ++tiles;
  EXPECT_GE(tiles, 10u) << html.substr(0, 2000);
  EXPECT_NE(html.find("src=\"/thumb?path="), std::string::npos);
  EXPECT_NE(html.find("class=\"score\">0."), std::string::npos);
  EXPECT_NE(html.find(" results in "), std::string::npos);
  ASSERT_EQ(std::system((flags + "--window-size=1200,760 --screenshot=" + shot + " '" + url + "' > /dev/null 2>&1").c_str()), 0);
  ASSERT_TRUE(fs::exists(shot));
  EXPECT_GT(fs::file_size(shot), 20000u);
  EXPECT_EQ(clip::read_text_file(shot).substr(1, 3), "PNG");
  EXPECT_EQ(s.terminate(), 0);
}

TEST(ServeBase64, StrictDecoding) {
  using clip::base64_decode;
  using clip::base64_encode;
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)}) {
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  }
  EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64_decode("Zm9vYg"), "foob");  // padding optional
  EXPECT_EQ(base64_decode("data:image/png;base64,Zm9v"), "foo");
  EXPECT_FALSE(base64_decode("Zm9v!"));
  EXPECT_FALSE(base64_decode("Zm=9v"));   // data after padding
  EXPECT_FALSE(base64_decode("Z"));       // a lone sextet
  EXPECT_FALSE(base64_decode("Zm9===="));  // too much padding
  EXPECT_FALSE(base64_decode("data:text/plain,abc"));
}

}  // namespace
