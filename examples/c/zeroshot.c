/* The C API from C: load a model, classify images among labels, compare with a text.
 *
 *   example_c_zeroshot MODEL IMAGE... -- LABEL...
 *
 * Prints, per image, each label's probability; then the cosine of the first image with the
 * first label's prompt. Exit status 1 with the library's message on any error. */
#include <clip/clip_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char* what) {
  fprintf(stderr, "example_c_zeroshot: %s: %s\n", what, clip_last_error());
  return 1;
}

int main(int argc, char** argv) {
  int sep = 0;
  for (int i = 2; i < argc; ++i)
    if (strcmp(argv[i], "--") == 0) sep = i;
  if (argc < 5 || sep < 3 || sep == argc - 1) {
    fprintf(stderr, "usage: %s MODEL IMAGE... -- LABEL...\n", argv[0]);
    return 2;
  }
  const char* const* images = (const char* const*)(argv + 2);
  const size_t n_images = (size_t)(sep - 2);
  const char* const* labels = (const char* const*)(argv + sep + 1);
  const size_t n_labels = (size_t)(argc - sep - 1);

  clip_model_options options;
  clip_model_options_init(&options);
  options.num_threads = 0;
  clip_model* model = NULL;
  if (clip_model_load(argv[1], &options, &model) != CLIP_OK) return fail(argv[1]);
  const int dim = clip_model_embed_dim(model);
  printf("clip %s, embed_dim %d, context %d\n", clip_version(), dim, clip_model_context_length(model));

  float* embeddings = (float*)malloc(sizeof(float) * (size_t)dim * n_images);
  float* probabilities = (float*)malloc(sizeof(float) * n_labels);
  float* text = (float*)malloc(sizeof(float) * (size_t)dim);
  int status = 0;
  if (!embeddings || !probabilities || !text) {
    fprintf(stderr, "example_c_zeroshot: out of memory\n");
    status = 1;
  } else if (clip_encode_image_files(model, images, n_images, embeddings) != CLIP_OK) {
    status = fail("images");
  } else {
    for (size_t i = 0; i < n_images && status == 0; ++i) {
      if (clip_zeroshot(model, embeddings + i * (size_t)dim, labels, n_labels, NULL, 0, probabilities) != CLIP_OK) {
        status = fail("zeroshot");
        break;
      }
      printf("%s\n", images[i]);
      for (size_t k = 0; k < n_labels; ++k) printf("  %6.2f%%  %s\n", 100.0 * probabilities[k], labels[k]);
    }
    char prompt[256];
    snprintf(prompt, sizeof prompt, "a photo of a %s.", labels[0]);
    const char* texts[1] = {prompt};
    if (status == 0 && clip_encode_texts(model, texts, 1, 0, text) == CLIP_OK) {
      double cosine = 0;
      for (int j = 0; j < dim; ++j) cosine += (double)embeddings[j] * text[j];
      printf("cosine(%s, \"%s\") = %.6f\n", images[0], prompt, cosine);
    } else if (status == 0) {
      status = fail("texts");
    }
  }
  free(embeddings);
  free(probabilities);
  free(text);
  clip_model_free(model);
  return status;
}
