#pragma once
// The text cleaning of OpenAI's simple_tokenizer: `ftfy.fix_text` (its deterministic fixes),
// `html.unescape` twice, strip, `\s+` -> " ", strip; then Python's `str.lower()` in encode.
// See docs/tokenizer.md for the one known difference (ftfy's mojibake repair).
#include <string>
#include <string_view>

namespace clip {

// The cleaning step without lowercasing: ftfy-like fixes, html unescape x2, whitespace runs
// collapsed to one space and trimmed. Input bytes that are not valid UTF-8 are first replaced
// by U+FFFD as Python's `bytes.decode("utf-8", errors="replace")` would. Output is UTF-8.
std::string clean_text(std::string_view text);

}  // namespace clip

namespace clip::text {

// Python's str.lower() on UTF-8 (full lowercase mapping: U+0130 -> "i\u0307"; Greek capital
// sigma becomes final sigma by the Final_Sigma rule). Input must be valid UTF-8.
std::string python_lower(std::string_view utf8);

// clean_text + python_lower into `out` (cleared first). Pure-ASCII text without '&', ESC or
// control characters takes a single-pass fast path.
void clean_and_lower(std::string_view text, std::string& out);

// Python's `regex` `\s` (the White_Space property) and str.isspace(), which agree on every
// character that survives the ftfy step.
bool is_python_space(char32_t c);

}  // namespace clip::text
