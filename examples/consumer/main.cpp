// Loads a model, embeds an image and a text through the installed library, and prints their
// cosine similarity: consumer MODEL IMAGE TEXT
#include <clip/clip.h>
#include <clip/image.h>
#include <clip/tokenizer.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer MODEL IMAGE TEXT\n");
    return 2;
  }
  try {
    const clip::Model model = clip::Model::load(argv[1]);
    const clip::Image decoded = clip::decode_image_file(argv[2]);  // clip/image.h
    const clip::Embeddings image = model.encode_image_files({argv[2]});
    const clip::Embeddings text = model.encode_texts({argv[3]});
    double cosine = 0;
    for (int64_t j = 0; j < image.cols; ++j) cosine += double(image.data[size_t(j)]) * text.data[size_t(j)];
    std::printf("image %dx%d dim %lld cosine %.6f\n", decoded.width, decoded.height, static_cast<long long>(image.cols),
                cosine);
  } catch (const clip::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
