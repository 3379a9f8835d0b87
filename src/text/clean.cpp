// Text cleaning as OpenAI's simple_tokenizer does it (see clean.h). The ftfy fixes follow
// ftfy 6.3.1's `fix_text` step by step (fixes.py, chardata.py); the HTML unescaping follows
// CPython 3.11's `html.unescape`. Their data tables are generated from those libraries into
// clean_tables.inc by tools/tokenizer_reference.py; Unicode properties come from utf8proc.
#include "text/clean.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "text/utf8.h"

namespace clip::text {
namespace {

struct CodepointMapping {
  char32_t cp;
  const char* text;
};
struct EntityMapping {
  const char* name;
  const char* text;
};
#include "text/clean_tables.inc"

template <size_t N>
const char* find_mapping(const CodepointMapping (&table)[N], char32_t cp) {
  const CodepointMapping* end = table + N;
  const CodepointMapping* it =
      std::lower_bound(table, end, cp, [](const CodepointMapping& m, char32_t c) { return m.cp < c; });
  return (it != end && it->cp == cp) ? it->text : nullptr;
}

template <size_t N>
bool contains(const char32_t (&table)[N], char32_t cp) {
  return std::binary_search(table, table + N, cp);
}

template <size_t N>
const char* find_entity(const EntityMapping (&table)[N], std::string_view name) {
  const EntityMapping* end = table + N;
  const EntityMapping* it = std::lower_bound(
      table, end, name, [](const EntityMapping& m, std::string_view n) { return std::string_view(m.name) < n; });
  return (it != end && std::string_view(it->name) == name) ? it->text : nullptr;
}

void append_u8(std::u32string& out, const char* utf8) { out += decode_utf8(utf8); }

bool is_ascii_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_ascii_hex(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string ascii_of(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// ---- CPython html.unescape ----

// html._replace_charref for a numeric reference.
void append_numeric_charref(std::u32string& out, char32_t num) {
  if (const char* r = find_mapping(kInvalidCharrefs, num)) {
    append_u8(out, r);
  } else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out.push_back(kReplacementChar);
  } else if (contains(kInvalidCodepoints, num)) {
    // dropped
  } else {
    out.push_back(num);
  }
}

// Parses digits [begin, end) in `base`, saturating just above U+10FFFF (Python's int is exact,
// but every value past U+10FFFF gives the same U+FFFD).
char32_t parse_saturated(std::u32string_view s, int base) {
  uint64_t v = 0;
  for (char32_t c : s) {
    const int d = is_ascii_digit(c) ? int(c - '0') : int((c | 0x20) - 'a' + 10);
    v = std::min<uint64_t>(v * base + d, 0x110000);
  }
  return static_cast<char32_t>(v);
}

// html.unescape: the regex `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`.
std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      size_t k = j + 1;
      int base = 10;
      if (k < n && is_ascii_digit(s[k])) {
        while (k < n && is_ascii_digit(s[k])) ++k;
      } else if (k + 1 < n && (s[k] == U'x' || s[k] == U'X') && is_ascii_hex(s[k + 1])) {
        base = 16;
        ++k;
        while (k < n && is_ascii_hex(s[k])) ++k;
      } else {
        out.push_back(s[i++]);  // "&#" not followed by a number: no reference here
        continue;
      }
      const size_t digits_begin = base == 16 ? j + 2 : j + 1;
      const char32_t num = parse_saturated(s.substr(digits_begin, k - digits_begin), base);
      if (k < n && s[k] == U';') ++k;
      append_numeric_charref(out, num);
      i = k;
      continue;
    }
    size_t k = j;
    while (k < n && k - j < 32) {
      const char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' ||
          c == U'#' || c == U';')
        break;
      ++k;
    }
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    if (k < n && s[k] == U';') ++k;
    const std::u32string_view name = s.substr(j, k - j);
    const std::string name8 = ascii_of(name);
    if (const char* r = find_entity(kHtml5Entities, name8)) {
      append_u8(out, r);
    } else {
      // The longest prefix (at least 2 characters) that is an entity, as the HTML5 spec says.
      bool found = false;
      for (size_t x = name.size() - 1; x >= 2 && x < name.size(); --x) {
        const std::string prefix8 = ascii_of(name.substr(0, x));
        if (const char* r = find_entity(kHtml5Entities, prefix8)) {
          append_u8(out, r);
          out.append(name.substr(x));
          found = true;
          break;
        }
      }
      if (!found) {
        out.push_back(U'&');
        out.append(name);
      }
    }
    i = k;
  }
  return out;
}

// ---- ftfy 6.3.1 fixes ----

// fixes.unescape_html: HTML_ENTITY_RE = `&#?[0-9A-Za-z]{1,24};` with _unescape_fixup.
std::u32string ftfy_unescape_html(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') ++j;
    size_t k = j;
    while (k < n && k - j <= 24 && is_ascii_alnum(s[k])) ++k;
    const size_t run = k - j;
    if (run < 1 || run > 24 || k >= n || s[k] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    const std::u32string_view entity = s.substr(i, k + 1 - i);
    const std::string entity8 = ascii_of(entity);
    if (const char* r = find_entity(kFtfyEntities, entity8)) {
      append_u8(out, r);
    } else if (entity.size() > 1 && entity[1] == U'#') {
      const std::u32string un = html_unescape(entity);
      if (un.find(U';') != std::u32string::npos) {
        out.append(entity);  // only partly decoded: ftfy keeps the original
      } else {
        out += un;
      }
    } else {
      out.append(entity);
    }
    i = k + 1;
  }
  return out;
}

bool is_decimal_digit(char32_t c) {
  return c < 0x80 ? is_ascii_digit(c) : utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}

std::u32string nfc(const std::u32string& s) {
  const std::string utf8 = encode_utf8(s);
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()), static_cast<utf8proc_ssize_t>(utf8.size()),
                   &result, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0 || result == nullptr) {
    std::free(result);
    return s;  // cannot happen for valid, surrogate-free UTF-8; keep the text rather than fail
  }
  std::u32string out = decode_utf8(std::string_view(reinterpret_cast<const char*>(result), static_cast<size_t>(len)));
  std::free(result);
  return out;
}

// One pass of ftfy.fix_and_explain's loop body (fix_encoding excepted: see docs/tokenizer.md).
std::u32string ftfy_fix_pass(const std::u32string& in, bool unescape) {
  std::u32string s = unescape ? ftfy_unescape_html(in) : in;
  std::u32string t;
  t.reserve(s.size() + 8);
  // fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes: each maps one
  // character to a string and the later maps never undo the earlier, so run them as a chain
  // per character (the order ftfy applies them).
  for (char32_t c : s) {
    if (c >= 0x80 && c <= 0x9F) c = kC1ToWindows1252[c - 0x80];
    std::u32string piece;
    if (const char* lig = find_mapping(kLigatures, c)) {
      piece = decode_utf8(lig);
    } else {
      piece.push_back(c);
    }
    for (char32_t p : piece) {
      std::u32string widened;
      if (const char* w = find_mapping(kWidthMap, p)) {
        widened = decode_utf8(w);
      } else {
        widened.push_back(p);
      }
      for (char32_t q : widened) {
        if (q == 0x02BC || (q >= 0x2018 && q <= 0x201B)) q = U'\'';
        else if (q >= 0x201C && q <= 0x201F) q = U'"';
        t.push_back(q);
      }
    }
  }
  // fix_line_breaks
  s.clear();
  for (size_t i = 0; i < t.size(); ++i) {
    const char32_t c = t[i];
    if (c == U'\r') {
      if (i + 1 < t.size() && t[i + 1] == U'\n') continue;  // "\r\n" -> "\n"
      s.push_back(U'\n');
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      s.push_back(U'\n');
    } else {
      s.push_back(c);
    }
  }
  // fix_surrogates: nothing to do, decoded UTF-8 never holds surrogates.
  // remove_terminal_escapes: `\033\[((?:\d|;)*)([a-zA-Z])`
  t.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == U'[') {
      size_t k = i + 2;
      while (k < s.size() && (s[k] == U';' || is_decimal_digit(s[k]))) ++k;
      if (k < s.size() && s[k] < 0x80 && std::isalpha(static_cast<int>(s[k]))) {
        i = k;
        continue;
      }
    }
    t.push_back(s[i]);
  }
  // remove_control_chars
  s.clear();
  bool needs_nfc = false;
  for (char32_t c : t) {
    if (contains(kControlChars, c)) continue;
    if (c >= 0x300) needs_nfc = true;  // below U+0300 every character is NFC-stable
    s.push_back(c);
  }
  if (needs_nfc) s = nfc(s);
  return s;
}

// ftfy.fix_text: independent segments ending at each "\n" (or 1,000,000 characters), each
// fixed until nothing changes. HTML unescaping stops for good at the first segment with '<'.
std::u32string ftfy_fix_text(const std::u32string& text) {
  constexpr size_t kMaxDecodeLength = 1000000;
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t brk = text.find(U'\n', pos);
    brk = brk == std::u32string::npos ? text.size() : brk + 1;
    if (brk - pos > kMaxDecodeLength) brk = pos + kMaxDecodeLength;
    std::u32string segment = text.substr(pos, brk - pos);
    if (unescape && segment.find(U'<') != std::u32string::npos) unescape = false;
    for (;;) {
      std::u32string fixed = ftfy_fix_pass(segment, unescape);
      if (fixed == segment) break;
      segment = std::move(fixed);
    }
    out += segment;
    pos = brk;
  }
  return out;
}

// strip, `\s+` -> " ", strip (Python's str.strip and regex's \s agree on what remains here).
std::u32string collapse_whitespace(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  bool pending_space = false;
  for (char32_t c : s) {
    if (is_python_space(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out.push_back(U' ');
      pending_space = false;
      out.push_back(c);
    }
  }
  return out;
}

std::u32string clean_u32(std::string_view text) {
  std::u32string s = ftfy_fix_text(decode_utf8(text));
  s = html_unescape(html_unescape(s));
  return collapse_whitespace(s);
}

// ---- Python str.lower() ----
bool is_cased(char32_t c) {
  const auto cp = static_cast<utf8proc_int32_t>(c);
  const utf8proc_category_t cat = utf8proc_category(cp);
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return true;
  return utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp;
}

bool is_case_ignorable(char32_t c) {
  switch (c) {  // Word_Break MidLetter, MidNumLet and Single_Quote
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4:
    case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52:
    case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      break;
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      return false;
  }
}

// CPython's handle_capital_sigma: \p{cased}\p{case-ignorable}* U+03A3 !(\p{case-ignorable}*\p{cased})
bool is_final_sigma(const std::u32string& s, size_t i) {
  size_t j = i;
  char32_t c = 0;
  bool found = false;
  while (j > 0) {
    c = s[--j];
    if (!is_case_ignorable(c)) {
      found = true;
      break;
    }
  }
  if (!found || !is_cased(c)) return false;
  for (size_t k = i + 1; k < s.size(); ++k) {
    if (!is_case_ignorable(s[k])) return !is_cased(s[k]);
  }
  return true;
}

std::u32string lower_u32(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back((c >= 'A' && c <= 'Z') ? c + 32 : c);
    } else if (c == 0x130) {  // SpecialCasing: LATIN CAPITAL LETTER I WITH DOT ABOVE
      out.push_back(U'i');
      out.push_back(0x307);
    } else if (c == 0x3A3) {
      out.push_back(is_final_sigma(s, i) ? 0x3C2 : 0x3C3);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

}  // namespace

bool is_python_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  if (c == 0x85 || c == 0x2028 || c == 0x2029) return true;
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ZS;
}

std::string python_lower(std::string_view utf8) { return encode_utf8(lower_u32(decode_utf8(utf8))); }

void clean_and_lower(std::string_view text, std::string& out) {
  out.clear();
  // Fast path: printable ASCII plus \t \n \f \r and no '&': every ftfy fix and html.unescape is
  // the identity, so cleaning is whitespace collapsing and lowercasing, in one pass.
  bool fast = true;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x7F || c == '&' || (c < 0x20 && c != '\t' && c != '\n' && c != '\f' && c != '\r')) {
      fast = false;
      break;
    }
  }
  if (fast) {
    out.reserve(text.size());
    bool pending_space = false;
    for (char ch : text) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == ' ' || (c >= '\t' && c <= '\r')) {
        pending_space = !out.empty();
      } else {
        if (pending_space) out.push_back(' ');
        pending_space = false;
        out.push_back(static_cast<char>((c >= 'A' && c <= 'Z') ? c + 32 : c));
      }
    }
    return;
  }
  out = encode_utf8(lower_u32(clean_u32(text)));
}

}  // namespace clip::text

namespace clip {
std::string clean_text(std::string_view text) { return text::encode_utf8(text::clean_u32(text)); }
}  // namespace clip
