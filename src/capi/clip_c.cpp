// The C API (include/clip/clip_c.h) over the C++ one: every call catches everything, maps it to a
// clip_status and keeps the message per thread.
#include "clip/clip_c.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "clip/clip.h"

struct clip_model {
  clip::Model model;
};

namespace {

thread_local std::string g_last_error;

clip_status fail(clip_status s, std::string message) {
  g_last_error = std::move(message);
  return s;
}

template <typename F>
clip_status guarded(F f) {
  try {
    g_last_error.clear();
    return f();
  } catch (const std::bad_alloc&) {
    return fail(CLIP_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const clip::Error& e) {
    return fail(CLIP_ERROR_FAILED, e.what());
  } catch (const std::exception& e) {
    return fail(CLIP_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(CLIP_ERROR_INTERNAL, "unknown error");
  }
}

clip_status invalid(const char* what) { return fail(CLIP_ERROR_INVALID_ARGUMENT, what); }

std::vector<std::string> strings(const char* const* p, size_t n, const char* what, bool& ok) {
  std::vector<std::string> v;
  ok = true;
  for (size_t i = 0; i < n; ++i) {
    if (!p[i]) {
      ok = false;
      g_last_error = std::string(what) + "[" + std::to_string(i) + "] is NULL";
      return {};
    }
    v.emplace_back(p[i]);
  }
  return v;
}

void copy_rows(const clip::Embeddings& e, float* out) {
  std::copy(e.data.begin(), e.data.end(), out);
}

}  // namespace

extern "C" {

void clip_model_options_init(clip_model_options* o) {
  if (!o) return;
  const clip::ModelOptions d;
  o->vocab_path = nullptr;
  o->config_path = nullptr;
  o->num_threads = d.num_threads;
  o->fast_jpeg = d.fast_jpeg;
  o->exif_orient = d.exif_orient;
  o->max_pixels = d.max_pixels;
  o->precision = nullptr;
}

clip_status clip_model_load(const char* path, const clip_model_options* options, clip_model** out) {
  if (!path || !out) return invalid("clip_model_load: path and out must not be NULL");
  *out = nullptr;
  return guarded([&] {
    clip::ModelOptions o;
    if (options) {
      if (options->vocab_path) o.vocab_path = options->vocab_path;
      if (options->config_path) o.config_path = options->config_path;
      o.num_threads = options->num_threads;
      o.fast_jpeg = options->fast_jpeg != 0;
      o.exif_orient = options->exif_orient != 0;
      o.max_pixels = options->max_pixels;
      if (options->precision) o.precision = options->precision;
    }
    *out = new clip_model{clip::Model::load(path, o)};
    return CLIP_OK;
  });
}

void clip_model_free(clip_model* m) { delete m; }

int clip_model_embed_dim(const clip_model* m) { return m ? m->model.embed_dim() : 0; }
int clip_model_image_size(const clip_model* m) { return m ? m->model.image_size() : 0; }
int clip_model_context_length(const clip_model* m) { return m ? m->model.context_length() : 0; }
float clip_model_logit_scale(const clip_model* m) { return m ? m->model.logit_scale() : 0.f; }

clip_status clip_encode_image_files(const clip_model* m, const char* const* paths, size_t count, float* out) {
  if (!m || !paths || !out || count == 0) return invalid("clip_encode_image_files: NULL argument or count 0");
  bool ok = false;
  auto p = strings(paths, count, "paths", ok);
  if (!ok) return CLIP_ERROR_INVALID_ARGUMENT;
  return guarded([&] {
    copy_rows(m->model.encode_image_files(p), out);
    return CLIP_OK;
  });
}

clip_status clip_encode_image_rgb(const clip_model* m, const unsigned char* rgb, int width, int height, float* out) {
  if (!m || !rgb || !out) return invalid("clip_encode_image_rgb: NULL argument");
  if (width <= 0 || height <= 0) return invalid("clip_encode_image_rgb: width and height must be positive");
  return guarded([&] {
    copy_rows(m->model.encode_image_rgb(rgb, width, height), out);
    return CLIP_OK;
  });
}

clip_status clip_encode_texts(const clip_model* m, const char* const* texts, size_t count, int truncate, float* out) {
  if (!m || !texts || !out || count == 0) return invalid("clip_encode_texts: NULL argument or count 0");
  bool ok = false;
  auto t = strings(texts, count, "texts", ok);
  if (!ok) return CLIP_ERROR_INVALID_ARGUMENT;
  return guarded([&] {
    copy_rows(m->model.encode_texts(t, 64, truncate != 0), out);
    return CLIP_OK;
  });
}

clip_status clip_tokenize(const clip_model* m, const char* const* texts, size_t count, int truncate, int32_t* out) {
  if (!m || !texts || !out || count == 0) return invalid("clip_tokenize: NULL argument or count 0");
  bool ok = false;
  auto t = strings(texts, count, "texts", ok);
  if (!ok) return CLIP_ERROR_INVALID_ARGUMENT;
  return guarded([&] {
    const std::vector<int32_t> ids = m->model.tokenize(t, truncate != 0);
    std::copy(ids.begin(), ids.end(), out);
    return CLIP_OK;
  });
}

clip_status clip_zeroshot(const clip_model* m, const float* image, const char* const* labels, size_t label_count,
                          const char* const* templates, size_t template_count, float* probabilities) {
  if (!m || !image || !labels || !probabilities || label_count == 0)
    return invalid("clip_zeroshot: NULL argument or no labels");
  if (templates && template_count == 0) return invalid("clip_zeroshot: templates given but template_count is 0");
  bool ok = false;
  auto l = strings(labels, label_count, "labels", ok);
  if (!ok) return CLIP_ERROR_INVALID_ARGUMENT;
  std::vector<std::string> t = {"a photo of a {}."};
  if (templates) {
    t = strings(templates, template_count, "templates", ok);
    if (!ok) return CLIP_ERROR_INVALID_ARGUMENT;
  }
  return guarded([&] {
    const std::span<const float> img(image, size_t(m->model.embed_dim()));
    for (const clip::Prediction& p : m->model.zeroshot(img, l, 0, t)) probabilities[p.index] = p.probability;
    return CLIP_OK;
  });
}

const char* clip_last_error(void) { return g_last_error.c_str(); }
const char* clip_version(void) { return CLIP_VERSION; }

}  // extern "C"
