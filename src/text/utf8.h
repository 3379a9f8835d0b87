#pragma once
// UTF-8 decoding with CPython's `errors="replace"` semantics: every maximal ill-formed subpart
// (Unicode 15, §3.9 "U+FFFD Substitution of Maximal Subparts") becomes one U+FFFD, so
// "\xe2\x82" is one replacement character and "\xc0\xaf" is two -- exactly what
// `bytes.decode("utf-8", errors="replace")` gives. Text that reaches the tokenizer and bytes
// that come out of `decode` both go through this, so invalid input never crashes anything.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace clip::text {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Decodes one code point at s[i]; advances i past it (or past the maximal ill-formed subpart,
// returning U+FFFD). Requires i < s.size().
inline char32_t next_codepoint(std::string_view s, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int need;
  char32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    ++i;  // 0x80..0xC1, 0xF5..0xFF never start a sequence
    return kReplacementChar;
  }
  size_t k = i + 1;
  for (int n = 0; n < need; ++n, ++k) {
    if (k >= s.size()) {
      i = k;
      return kReplacementChar;
    }
    const unsigned char b = byte(k);
    const unsigned char l = n == 0 ? lo : 0x80, h = n == 0 ? hi : 0xBF;
    if (b < l || b > h) {
      i = k;  // the valid prefix is one replacement; b starts the next decode
      return kReplacementChar;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i = k;
  return cp;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(next_codepoint(s, i));
  return out;
}

inline std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// Valid UTF-8 with every ill-formed subpart replaced by U+FFFD (as Python's errors="replace").
inline std::string sanitize_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
  if (i == s.size()) return std::string(s);
  std::string out(s.substr(0, i));
  out.reserve(s.size() + 8);
  while (i < s.size()) append_utf8(out, next_codepoint(s, i));
  return out;
}

}  // namespace clip::text
