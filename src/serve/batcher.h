#pragma once
// Concurrent requests batched into one encoder call: request threads submit texts or encoded
// images and wait; one worker takes everything queued (up to `max_batch` of each kind), encodes
// texts in one call and images in one call, and answers each item. The queue is bounded: a
// submit beyond `max_queue` waiting items throws QueueFull (the server answers 503).
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "clip/clip.h"

namespace clip::serve {

struct Encoded {
  std::vector<float> embedding;  // empty on error
  std::string error;             // why this item failed (bad image, text too long)
  int width = 0, height = 0;     // images: as decoded
};

struct QueueFull : std::runtime_error {
  QueueFull() : std::runtime_error("the encoder queue is full") {}
};

struct BatcherStats {
  int64_t batches = 0, items = 0, largest_batch = 0;
};

class EncodeBatcher {
 public:
  EncodeBatcher(const clip::Model& model, int max_batch, size_t max_queue);
  ~EncodeBatcher();
  EncodeBatcher(const EncodeBatcher&) = delete;
  EncodeBatcher& operator=(const EncodeBatcher&) = delete;

  // One request's items, queued together or not at all (QueueFull): a request larger than the
  // room left never half-waits.
  struct Request {
    std::vector<std::string> texts;  // or
    std::vector<std::string> images, names;
    bool truncate = false;
  };
  std::vector<std::future<Encoded>> submit(Request request);
  std::future<Encoded> text(std::string text, bool truncate);
  std::future<Encoded> image(std::string bytes, std::string name);
  BatcherStats stats() const;

 private:
  struct Item {
    bool is_image = false, truncate = false;
    std::string data, name;
    std::promise<Encoded> done;
  };
  std::vector<std::future<Encoded>> submit_items(std::vector<Item> items);
  void run();
  void encode_texts(std::vector<Item>& items);
  void encode_images(std::vector<Item>& items);

  const clip::Model& model_;
  const int max_batch_;
  const size_t max_queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  BatcherStats stats_;
  std::thread worker_;
};

}  // namespace clip::serve
