// A complete program using the clip library: zero-shot classification of one image.
//   example_zeroshot MODEL IMAGE label1 label2 ...
#include <clip/clip.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL IMAGE LABEL [LABEL...]\n", argv[0]);
    return 2;
  }
  try {
    clip::Model model = clip::Model::load(argv[1]);
    clip::Embeddings image = model.encode_image_files({argv[2]});
    std::vector<std::string> labels(argv + 3, argv + argc);
    for (const clip::Prediction& p : model.zeroshot(image.row(0), labels))
      std::printf("%6.2f%%  %s\n", 100.0 * p.probability, p.label.c_str());
  } catch (const clip::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
