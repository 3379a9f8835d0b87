#pragma once
// Public API: CLIP's BPE tokenizer (clip::Tokenizer, clip::clean_text). See docs/tokenizer.md.
#include "text/tokenizer.h"
