#include "serve/batcher.h"

#include <algorithm>

namespace clip::serve {

EncodeBatcher::EncodeBatcher(const clip::Model& model, int max_batch, size_t max_queue)
    : model_(model), max_batch_(std::max(1, max_batch)), max_queue_(std::max<size_t>(1, max_queue)) {
  worker_ = std::thread([this] { run(); });
}

EncodeBatcher::~EncodeBatcher() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  for (Item& it : queue_) it.done.set_value({{}, "the server is stopping", 0, 0});
}

std::vector<std::future<Encoded>> EncodeBatcher::submit_items(std::vector<Item> items) {
  std::vector<std::future<Encoded>> futures;
  for (Item& it : items) futures.push_back(it.done.get_future());
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.size() + items.size() > max_queue_) throw QueueFull();
    for (Item& it : items) queue_.push_back(std::move(it));
  }
  cv_.notify_one();
  return futures;
}

std::vector<std::future<Encoded>> EncodeBatcher::submit(Request request) {
  std::vector<Item> items;
  for (std::string& t : request.texts) {
    Item it;
    it.data = std::move(t);
    it.truncate = request.truncate;
    items.push_back(std::move(it));
  }
  for (size_t i = 0; i < request.images.size(); ++i) {
    Item it;
    it.is_image = true;
    it.data = std::move(request.images[i]);
    it.name = i < request.names.size() ? request.names[i] : "image " + std::to_string(i);
    items.push_back(std::move(it));
  }
  return submit_items(std::move(items));
}

std::future<Encoded> EncodeBatcher::text(std::string text, bool truncate) {
  Request r;
  r.texts.push_back(std::move(text));
  r.truncate = truncate;
  return std::move(submit(std::move(r))[0]);
}

std::future<Encoded> EncodeBatcher::image(std::string bytes, std::string name) {
  Request r;
  r.images.push_back(std::move(bytes));
  r.names.push_back(std::move(name));
  return std::move(submit(std::move(r))[0]);
}

BatcherStats EncodeBatcher::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void EncodeBatcher::run() {
  for (;;) {
    std::vector<Item> texts, images;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      // Everything waiting now, up to a batch of each kind, in arrival order.
      for (auto it = queue_.begin(); it != queue_.end();) {
        auto& dst = it->is_image ? images : texts;
        if (int(dst.size()) >= max_batch_) {
          ++it;
          continue;
        }
        dst.push_back(std::move(*it));
        it = queue_.erase(it);
      }
      const int64_t n = int64_t(texts.size() + images.size());
      stats_.batches += (!texts.empty()) + (!images.empty());
      stats_.items += n;
      stats_.largest_batch = std::max<int64_t>(stats_.largest_batch, int64_t(std::max(texts.size(), images.size())));
    }
    if (!texts.empty()) encode_texts(texts);
    if (!images.empty()) encode_images(images);
  }
}

void EncodeBatcher::encode_texts(std::vector<Item>& items) {
  // Texts that do not fit (without truncate) fail alone; the rest share one encoder call.
  std::vector<std::string> ok;
  std::vector<size_t> which;
  std::vector<int64_t> unused;
  for (size_t i = 0; i < items.size(); ++i) {
    try {
      (void)model_.tokenize({items[i].data}, items[i].truncate);
      ok.push_back(items[i].data);
      which.push_back(i);
    } catch (const std::exception& e) {
      items[i].done.set_value({{}, e.what(), 0, 0});
    }
  }
  if (ok.empty()) return;
  try {
    const clip::Embeddings e = model_.encode_texts(ok, int(ok.size()), /*truncate=*/true);
    for (size_t k = 0; k < which.size(); ++k) {
      const auto r = e.row(int64_t(k));
      items[which[k]].done.set_value({std::vector<float>(r.begin(), r.end()), "", 0, 0});
    }
  } catch (const std::exception& e) {
    for (size_t i : which) items[i].done.set_value({{}, e.what(), 0, 0});
  }
}

void EncodeBatcher::encode_images(std::vector<Item>& items) {
  std::vector<std::string_view> data;
  std::vector<std::string> names;
  for (const Item& it : items) {
    data.emplace_back(it.data);
    names.push_back(it.name);
  }
  try {
    std::vector<clip::SkippedInput> bad;
    std::vector<std::array<int, 2>> sizes;
    const clip::Embeddings e = model_.encode_image_data(data, names, int(items.size()), bad, &sizes);
    size_t b = 0, row = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (b < bad.size() && size_t(bad[b].index) == i) {
        items[i].done.set_value({{}, bad[b].reason, 0, 0});
        ++b;
        continue;
      }
      const auto r = e.row(int64_t(row));
      items[i].done.set_value({std::vector<float>(r.begin(), r.end()), "", sizes[row][0], sizes[row][1]});
      ++row;
    }
  } catch (const std::exception& e) {
    for (Item& it : items) it.done.set_value({{}, e.what(), 0, 0});
  }
}

}  // namespace clip::serve
