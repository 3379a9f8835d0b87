// The Python module `clipcpp._clipcpp` (pybind11): numpy in and out, the GIL released while the
// library computes, every library error raised as a Python exception with the library's message.
// python/clipcpp/__init__.py is the public face; python/clipcpp/open_clip.py the open_clip-shaped
// front.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <clip/clip.h>

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "text/vocabulary.h"

namespace py = pybind11;

namespace {

// An (rows, cols) float32 array owning the embeddings' buffer (moved, not copied).
py::array_t<float> to_numpy(clip::Embeddings&& e) {
  auto* owner = new std::vector<float>(std::move(e.data));
  py::capsule free_it(owner, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>({py::ssize_t(e.rows), py::ssize_t(e.cols)},
                            {py::ssize_t(e.cols * sizeof(float)), py::ssize_t(sizeof(float))}, owner->data(), free_it);
}

py::array_t<int32_t> ids_to_numpy(std::vector<int32_t>&& ids, size_t rows, size_t ctx) {
  auto* owner = new std::vector<int32_t>(std::move(ids));
  py::capsule free_it(owner, [](void* p) { delete static_cast<std::vector<int32_t>*>(p); });
  return py::array_t<int32_t>({py::ssize_t(rows), py::ssize_t(ctx)},
                              {py::ssize_t(ctx * sizeof(int32_t)), py::ssize_t(sizeof(int32_t))}, owner->data(), free_it);
}

std::vector<std::string> text_list(const py::handle& texts, const char* what) {
  if (py::isinstance<py::str>(texts)) return {texts.cast<std::string>()};
  std::vector<std::string> out;
  size_t i = 0;
  for (const py::handle& t : texts) {
    if (!py::isinstance<py::str>(t))
      throw py::type_error(std::string(what) + "[" + std::to_string(i) + "] is " +
                           std::string(py::str(py::type::of(t).attr("__name__"))) + ", not str");
    out.push_back(t.cast<std::string>());
    ++i;
  }
  return out;
}

// One HxWx3 uint8 image -> a row.
clip::Embeddings encode_array(const clip::Model& m, const py::array& a, const std::string& what) {
  if (a.dtype().kind() != 'u' || a.itemsize() != 1)
    throw py::value_error(what + ": expected dtype uint8, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 3 || a.shape(2) != 3)
    throw py::value_error(what + ": expected shape (height, width, 3), got " + std::string(py::str(py::tuple(py::cast(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()))))));
  auto c = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
  const int h = int(a.shape(0)), w = int(a.shape(1));
  if (h <= 0 || w <= 0) throw py::value_error(what + ": an empty image");
  py::gil_scoped_release nogil;
  return m.encode_image_rgb(c.data(), w, h);
}

py::array_t<float> encode_image(const clip::Model& m, const py::object& x, bool normalize, int batch_size) {
  if (!normalize)
    throw py::value_error("normalize=False is not supported: the library returns L2-normalized embeddings");
  // A path, or a list of paths.
  if (py::isinstance<py::str>(x) || (py::isinstance<py::list>(x) && py::len(x) > 0 && py::isinstance<py::str>(x.cast<py::list>()[0]))) {
    const std::vector<std::string> paths = text_list(x, "paths");
    clip::Embeddings e;
    {
      py::gil_scoped_release nogil;
      e = m.encode_image_files(paths, batch_size);
    }
    return to_numpy(std::move(e));
  }
  std::vector<py::array> images;
  if (py::isinstance<py::array>(x)) {
    py::array a = x.cast<py::array>();
    if (a.ndim() == 4) {
      for (py::ssize_t i = 0; i < a.shape(0); ++i) images.push_back(a[py::int_(i)].cast<py::array>());
    } else {
      images.push_back(a);
    }
  } else if (py::isinstance<py::list>(x) || py::isinstance<py::tuple>(x)) {
    size_t i = 0;
    for (const py::handle& h : x) {
      if (!py::isinstance<py::array>(h))
        throw py::type_error("images[" + std::to_string(i) + "]: expected a numpy array or a path");
      images.push_back(h.cast<py::array>());
      ++i;
    }
  } else {
    throw py::type_error("expected a path, a list of paths, a uint8 array (H, W, 3) or (N, H, W, 3), or a list of arrays");
  }
  if (images.empty()) throw py::value_error("no images");
  clip::Embeddings all;
  all.cols = m.embed_dim();
  for (size_t i = 0; i < images.size(); ++i) {
    clip::Embeddings e = encode_array(m, images[i], "images[" + std::to_string(i) + "]");
    all.data.insert(all.data.end(), e.data.begin(), e.data.end());
    ++all.rows;
  }
  return to_numpy(std::move(all));
}

}  // namespace

PYBIND11_MODULE(_clipcpp, mod) {
  mod.doc() = "clip: CLIP in C++ (the native module; use the clipcpp package)";
  py::register_exception<clip::Error>(mod, "ClipError", PyExc_RuntimeError);

  py::class_<clip::Model>(mod, "Model")
      .def_property_readonly("embed_dim", &clip::Model::embed_dim)
      .def_property_readonly("context_length", &clip::Model::context_length)
      .def_property_readonly("image_size", &clip::Model::image_size)
      .def_property_readonly("logit_scale", &clip::Model::logit_scale)
      .def("describe", &clip::Model::describe)
      .def("encode_image", &encode_image, py::arg("images"), py::arg("normalize") = true, py::arg("batch_size") = 32,
           "Paths, a uint8 array (H, W, 3) or (N, H, W, 3), or a list of arrays -> float32 (N, embed_dim)")
      .def(
          "encode_text",
          [](const clip::Model& m, const py::object& texts, bool truncate, int batch_size) {
            const std::vector<std::string> t = text_list(texts, "texts");
            clip::Embeddings e;
            {
              py::gil_scoped_release nogil;
              e = m.encode_texts(t, batch_size, truncate);
            }
            return to_numpy(std::move(e));
          },
          py::arg("texts"), py::arg("truncate") = false, py::arg("batch_size") = 64)
      .def(
          "encode_tokens",
          [](const clip::Model& m, const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& ids) {
            if (ids.ndim() != 2) throw py::value_error("expected token ids of shape (N, context_length)");
            std::vector<int32_t> v(ids.data(), ids.data() + ids.size());
            clip::Embeddings e;
            {
              py::gil_scoped_release nogil;
              e = m.encode_token_ids(v, int(ids.shape(0)), int(ids.shape(1)));
            }
            return to_numpy(std::move(e));
          },
          py::arg("ids"))
      .def(
          "tokenize",
          [](const clip::Model& m, const py::object& texts, bool truncate) {
            const std::vector<std::string> t = text_list(texts, "texts");
            return ids_to_numpy(m.tokenize(t, truncate), t.size(), size_t(m.context_length()));
          },
          py::arg("texts"), py::arg("truncate") = false)
      .def(
          "zeroshot",
          [](const clip::Model& m, const py::array_t<float, py::array::c_style | py::array::forcecast>& image,
             const py::object& labels, const py::object& templates, int top_k) {
            if (image.ndim() != 1 || image.shape(0) != m.embed_dim())
              throw py::value_error("expected one image embedding of shape (" + std::to_string(m.embed_dim()) + ",)");
            const std::vector<std::string> l = text_list(labels, "labels");
            const std::vector<std::string> t =
                templates.is_none() ? std::vector<std::string>{"a photo of a {}."} : text_list(templates, "templates");
            std::vector<clip::Prediction> p;
            {
              py::gil_scoped_release nogil;
              p = m.zeroshot(std::span<const float>(image.data(), size_t(image.shape(0))), l, top_k, t);
            }
            py::list out;
            for (const auto& x : p) out.append(py::make_tuple(x.label, x.probability));
            return out;
          },
          py::arg("image_embedding"), py::arg("labels"), py::arg("templates") = py::none(), py::arg("top_k") = 0);

  mod.def(
      "load",
      [](const std::string& path, const std::string& precision, int threads, const std::string& vocab) {
        if (precision != "fp32" && precision != "bf16" && precision != "int8" && precision != "int4")
          throw py::value_error("precision '" + precision +
                                "': fp32, bf16 (needs AVX512-BF16 or AMX), int8 (needs AVX512-VNNI or AMX) or int4");
        clip::ModelOptions o;
        o.precision = precision;
        o.num_threads = threads;
        o.vocab_path = vocab;
        py::gil_scoped_release nogil;
        return clip::Model::load(path, o);
      },
      py::arg("path"), py::arg("precision") = "fp32", py::arg("threads") = 0, py::arg("vocab") = "",
      "A .safetensors file, a model directory, or ORG/NAME pulled with `clip pull`");

  mod.def(
      "tokenize",
      [](const py::object& texts, int context_length, bool truncate, const std::string& vocab) {
        const std::vector<std::string> t = text_list(texts, "texts");
        const std::string path = clip::vocabulary_or_default(vocab);
        static std::unique_ptr<clip::Tokenizer> cached;
        static std::string cached_path;
        if (!cached || cached_path != path) {
          cached = std::make_unique<clip::Tokenizer>(clip::load_tokenizer(path));
          cached_path = path;
        }
        return ids_to_numpy(cached->tokenize(t, context_length, truncate), t.size(), size_t(context_length));
      },
      py::arg("texts"), py::arg("context_length") = 77, py::arg("truncate") = false, py::arg("vocab") = "",
      "As OpenAI's clip.tokenize: int32 (N, context_length)");
  mod.def("version", [] { return std::string(CLIP_VERSION); });
}
