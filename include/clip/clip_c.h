/* clip: CLIP (Radford et al., 2021) in C++ -- the C API (C99).
 *
 *   clip_model* m = NULL;
 *   if (clip_model_load("models/cifar10-vit-tiny", NULL, &m) != CLIP_OK) {
 *     fprintf(stderr, "%s\n", clip_last_error());
 *     return 1;
 *   }
 *   float* e = malloc(sizeof(float) * clip_model_embed_dim(m));
 *   const char* paths[] = {"cat.jpg"};
 *   clip_encode_image_files(m, paths, 1, e);            // one L2-normalized row per image
 *   clip_model_free(m);
 *
 * Every function that can fail returns a clip_status; the message of the last failure on the
 * calling thread is clip_last_error(). No C++ exception crosses this API. Output buffers are the
 * caller's: rows of clip_model_embed_dim() floats, row-major, in input order. A clip_model may
 * be used from several threads at once: decoding and tokenizing run in parallel, the network
 * itself runs one encode call at a time per model (it keeps one set of buffers); for parallel
 * encoding, load a model per thread.
 */
#ifndef CLIP_CLIP_C_H
#define CLIP_CLIP_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clip_status {
  CLIP_OK = 0,
  CLIP_ERROR_INVALID_ARGUMENT = 1, /* a NULL pointer, a zero count, a bad size */
  CLIP_ERROR_FAILED = 2,           /* the library's error: a missing or bad file, a text too long... */
  CLIP_ERROR_OUT_OF_MEMORY = 3,
  CLIP_ERROR_INTERNAL = 4
} clip_status;

typedef struct clip_model clip_model;

typedef struct clip_model_options {
  const char* vocab_path;  /* NULL: the model's own tokenizer files, else OpenAI's installed one */
  const char* config_path; /* NULL: the model's config */
  int num_threads;         /* 0: all cores */
  int fast_jpeg;           /* nonzero: large JPEGs decoded at reduced scale (not bit-exact) */
  int exif_orient;         /* nonzero: apply EXIF orientation */
  int64_t max_pixels;      /* decompression-bomb guard; <= 0: none */
  const char* precision;   /* NULL or "fp32": the reference numbers; "bf16": bf16 products
                              (f32 accumulation) where the CPU has AVX512-BF16 or AMX; "int8":
                              int8 products where it has AVX512-VNNI or AMX; else the load
                              fails with a message saying so; "int4": 4-bit (q4_0) weights,
                              any CPU */
} clip_model_options;

/* The defaults (those of the C++ API and the command line). */
void clip_model_options_init(clip_model_options* options);

/* `path`: a .safetensors file or a model directory. `options` may be NULL. */
clip_status clip_model_load(const char* path, const clip_model_options* options, clip_model** out);
void clip_model_free(clip_model* model); /* NULL is allowed */

int clip_model_embed_dim(const clip_model* model);
int clip_model_image_size(const clip_model* model);
int clip_model_context_length(const clip_model* model);
float clip_model_logit_scale(const clip_model* model);

/* out: count x embed_dim floats. The first unreadable file fails the call (message names it). */
clip_status clip_encode_image_files(const clip_model* model, const char* const* paths, size_t count, float* out);
/* Interleaved 8-bit RGB, width x height. out: embed_dim floats. */
clip_status clip_encode_image_rgb(const clip_model* model, const unsigned char* rgb, int width, int height, float* out);
/* UTF-8 texts. A text longer than the context fails unless `truncate`. out: count x embed_dim. */
clip_status clip_encode_texts(const clip_model* model, const char* const* texts, size_t count, int truncate, float* out);
/* Token ids as OpenAI's clip.tokenize: out: count x context_length int32 (zero padded). */
clip_status clip_tokenize(const clip_model* model, const char* const* texts, size_t count, int truncate, int32_t* out);
/* Zero-shot: softmax over labels of logit_scale * cosine(image, class embedding), the class
 * embedding being the normalized mean of the label in every template ("{}" or "{c}" stands for
 * it; templates NULL: "a photo of a {}."). probabilities: label_count floats, in label order. */
clip_status clip_zeroshot(const clip_model* model, const float* image_embedding, const char* const* labels,
                          size_t label_count, const char* const* templates, size_t template_count,
                          float* probabilities);

/* The last failure's message on this thread ("" if none); valid until the next call here. */
const char* clip_last_error(void);
const char* clip_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CLIP_CLIP_C_H */
