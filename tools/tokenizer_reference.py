#!/usr/bin/env python3
"""Python reference for the CLIP tokenizer: OpenAI's `clip/simple_tokenizer.py`, line for line,
with the real `ftfy` (PyPI) and `regex` (Debian python3-regex). Run it with /usr/bin/python3.

Modes (all write to stdout unless -o is given):

  goldens    Expected ids/decoded text for the non-ASCII cases listed in NON_ASCII_CASES
             (plus invalid UTF-8 byte strings, read as Python does with errors="replace").
             The committed file was made with:
               /usr/bin/python3 tools/tokenizer_reference.py goldens \
                   -o tests/data/text/nonascii_goldens.jsonl
  encode     One JSON object per input line of FILE (ids + decoded), for ad-hoc comparison:
               /usr/bin/python3 tools/tokenizer_reference.py encode FILE
  time       Tokens per second over a captions CSV (`image,caption`, RFC 4180), cold cache
             (fresh tokenizer) and warm cache (second pass), for docs/benchmarks/tokenizer.md:
               /usr/bin/python3 tools/tokenizer_reference.py time \
                   ../shared/data/flickr8k_subset1000/flickr8k_all_captions.txt
  tables     The C++ tables for the cleaning step (ftfy's ligature, width, control-character,
             HTML-entity maps; Python's html.unescape tables) as src/text/clean_tables.inc:
               /usr/bin/python3 tools/tokenizer_reference.py tables -o src/text/clean_tables.inc
  captions   The ids of every caption of a captions CSV, one JSON list per line (the C++ test
             FlickrCaptionsSlow compares all 40,455 Flickr8k captions):
               /usr/bin/python3 tools/tokenizer_reference.py captions CSV -o OUT.jsonl
  random     COUNT random strings drawn from pools of tricky characters (entities, controls,
             combining marks, Greek sigma, ligatures, fullwidth, emoji, random BMP code points),
             with the reference's ids and cleaning done with fix_encoding=False (the documented
             difference) and a flag saying whether full ftfy would differ; for TokenizerSlow:
               /usr/bin/python3 tools/tokenizer_reference.py random 3000 -o OUT.jsonl
  clean      ftfy+html cleaning only (no lowercasing) of each line, as JSON strings.

The vocabulary defaults to ../shared/data/clip_vocab/bpe_simple_vocab_16e6.txt.gz beside the
repository; --bpe picks another .txt.gz in OpenAI's format.
"""
import argparse
import csv
import gzip
import html
import html.entities
import json
import os
import sys
import time
import unicodedata
from functools import lru_cache

import ftfy
import regex as re

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BPE = os.path.join(HERE, "..", "..", "shared", "data", "clip_vocab",
                           "bpe_simple_vocab_16e6.txt.gz")


# ---- openai/CLIP clip/simple_tokenizer.py (unmodified logic) ----
@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    cs = [chr(n) for n in cs]
    return dict(zip(bs, cs))


def get_pairs(word):
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def basic_clean(text):
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r'\s+', ' ', text)
    text = text.strip()
    return text


class SimpleTokenizer(object):
    def __init__(self, bpe_path: str = DEFAULT_BPE):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + '</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)

        if not pairs:
            return token + '</w>'

        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break

                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            new_word = tuple(new_word)
            word = new_word
            if len(word) == 1:
                break
            else:
                pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens

    def decode(self, tokens):
        text = ''.join([self.decoder[token] for token in tokens])
        text = bytearray([self.byte_decoder[c] for c in text]).decode('utf-8', errors="replace").replace('</w>', ' ')
        return text


# ---- non-ASCII and edge cases for tests/data/text/nonascii_goldens.jsonl ----
NON_ASCII_CASES = [
    # accents, precomposed and combining
    "Café au lait", "naïve résumé", "Crème brûlée à la carte", "São Paulo", "Zürich Straße",
    "cafe\u0301 with a combining acute", "e\u0301 a\u0300 o\u0308 n\u0303", "A\u030a\u0301",
    "Ångström", "ﬁsh and ﬂowers", "the ﬃ ﬄ ﬀ ﬅ ﬆ ligatures", "Ĳssel ǄǅǆǇ",
    # CJK, emoji, other scripts
    "一只猫坐在沙发上", "東京タワーの写真", "고양이 사진", "ｶﾀｶﾅ halfwidth", "a photo of a 🐶",
    "👨‍👩‍👧 family emoji", "🇫🇷 flag and ❤️ heart", "Ελληνικά: ΟΔΟΣ και ΣΟΦΙΑ", "Σ ΑΣ. ΑΣΑ",
    "Русский текст: Кошка на диване", "עברית ומספרים 123", "العربية ١٢٣", "हिन्दी पाठ",
    "ไทย ภาษา", "İstanbul ı İ", "Ǆemal", "Kelvin \u212a and ohm \u2126",
    # numbers
    "2024 ⅻ ½ ² ٣ ५", "room 101b", "３０ fullwidth digits",
    # HTML entities (decoded by ftfy and twice by html.unescape)
    "Fish &amp; Chips", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;amp; nested", "caf&eacute; &copy; 2020",
    "&#39;quoted&#39; &#x27;hex&#x27;", "&NTILDE;and&ntilde;", "&notit; &amp &ampx &copy2",
    "<b>tag</b> &eacute;", "&#128512; &#x1F600; &#0; &#x80; &#xD800; &#1114112;", "&#65",
    "a &nbsp;b", "&#8220;quote&#8221;", "x&amp;lt;y", "&Aacute;&aacute;&AACUTE;",
    # Unicode spaces and control characters
    "no\u00a0break\u00a0space", "thin\u2009space\u202fnarrow", "ideographic\u3000space",
    "em\u2003space", "zero\u200bwidth", "line\u2028sep\u2029para", "tab\there\nnewline\r\ncrlf",
    "  leading and trailing  ", "nel\u0085char", "c1\u0080\u0093\u0094controls",
    "bom\ufeffmark", "ctrl\x01\x02\x7f chars", "\x1b[31mred\x1b[0m text", "vt\x0bff\x0cx",
    "\u206a\u206fbidi\ufff9", "soft\u00adhyphen",
    # quotes and punctuation
    "the dog’s ball", "‘single’ and “double” quotes", "it’s a dog‘s life", "„low‟ ‛rev",
    "modifier\u02bcapostrophe", "dog's dogs' it'll we've I'm you're he'd can't",
    "'S 'T 'RE 'VE 'M 'LL 'D", "it'ſ long s", "…ellipsis — em dash – en dash",
    # fullwidth
    "ＬＯＵＤ　ＮＯＩＳＥＳ", "ｆｕｌｌｗｉｄｔｈ！？", "ｈｅｌｌｏ，ｗｏｒｌｄ",
    # special tokens and mixed
    "<|startoftext|>hi<|endoftext|>", "<|STARTOFTEXT|> upper", "<|endoftext|",
    "MiXeD CaSe ÀÉÎÕÜ", "a" * 40, "ab" * 30 + "é", "...!!!???", "", "   ", "\u00a0\u3000",
    "a\u0301\u0302\u0303\u0304 stacked", "🙂🙃🙂🙃", "x²+y³=z⁴", "①②③", "Ⓐⓑ", "ǅ titlecase",
    "ß ẞ straße STRASSE", "ŉ afrikaans", "\U0001d400\U0001d41a math bold",
    "a\u0345b iota subscript", "<|ſtartoftext|>x", "ΣΑΣ'Σ ὈΔΥΣΣΕΎΣ Σ̈ Α.Σ", "ǈubljana ǉ",
    "\u212b angstrom sign", "line one\nline <two> &amp; three\n&amp;four",
]

# ftfy's mojibake repair (fix_encoding) is the one documented difference: for these the C++
# tokenizer gives what the reference gives with `ftfy.fix_text(text, fix_encoding=False)`,
# stored as ids_without_mojibake_fix next to the reference's own ids.
MOJIBAKE_CASES = ["cafÃ©", "voilÃ  le travail", "â€œquotedâ€\x9d", "SÃ£o Paulo", "Ã¼ber"]

# Invalid UTF-8: the text is read from bytes with errors="replace" (what a Python reader of a
# file with invalid bytes would see); the C++ tokenizer does the same replacement itself.
INVALID_UTF8_CASES = [
    b"caf\xe9 latin1", b"\xff\xfe\xfd", b"trunc\xe2\x82", b"\xc0\xaf overlong", b"\xed\xa0\x80 surrogate",
    b"\xf4\x90\x80\x80 too big", b"ok \xe2\x82\xac euro \x80 stray", b"\xf0\x9f\x98 half emoji",
    b"\xc3", b"a\xe1\x80b",
]


def make_goldens(tok):
    out = []
    for text in NON_ASCII_CASES:
        ids = tok.encode(text)
        out.append({"text": text, "ids": ids, "decoded": tok.decode(ids),
                    "clean": whitespace_clean(basic_clean(text))})
    for raw in INVALID_UTF8_CASES:
        text = raw.decode("utf-8", errors="replace")
        ids = tok.encode(text)
        out.append({"bytes_hex": raw.hex(), "ids": ids, "decoded": tok.decode(ids),
                    "clean": whitespace_clean(basic_clean(text))})
    for text in MOJIBAKE_CASES:
        ids = tok.encode(text)
        plain = whitespace_clean(html.unescape(html.unescape(
            ftfy.fix_text(text, fix_encoding=False))).strip())
        ids_plain = []
        for token in re.findall(tok.pat, plain.lower()):
            token = ''.join(tok.byte_encoder[b] for b in token.encode('utf-8'))
            ids_plain.extend(tok.encoder[t] for t in tok.bpe(token).split(' '))
        out.append({"text": text, "known_difference": "mojibake", "ids": ids, "decoded": tok.decode(ids),
                    "ids_without_mojibake_fix": ids_plain, "clean_without_mojibake_fix": plain})
    # decode of id sequences that split multi-byte characters (errors="replace")
    for ids in ([3306, 1002], [128, 129], [173], [187, 256], [163, 300, 110]):
        out.append({"decode_only": True, "ids": ids, "decoded": tok.decode(ids)})
    return out


RANDOM_POOLS = [
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    list(" \t\n\r\x0b\x0c.,!?;:'\"-_()[]{}<>/\\|@#$%^*+=~`"),
    ["&amp;", "&lt;", "&gt", "&#39;", "&#x27;", "&#", "&#x", "&NTILDE;", "&eacute", "&eacute;",
     "&notin;", "&copy", "&#128512;", "&#0;", "&#x80;", "&amp;amp;", "&nbsp;", "&", ";", "#"],
    list("àéîõüçñßøåæœÀÉÎÕÜÇÑØÅÆŒ") + ["e\u0301", "a\u0300", "\u0345", "\u0308", "\u0327"],
    list("ΑΒΓΔΣσςαβγδΟΔΟΣ") + list("АБВГДабвгдЖж") + list("一只猫東京タワー고양이"),
    ["\U0001F436", "\U0001F468\u200D\U0001F469", "\U0001F1EB\U0001F1F7", "\u2764\uFE0F", "\u200b"],
    list("ＬＯＵＤ０１２！？，") + ["\u3000", "ｶ", "ﾀ"] + list("ﬁﬂﬃﬄﬅﬆĲĳǄǅǆŉ"),
    list("\x80\x85\x93\x94\x9d\x00\x01\x1b\x7f\ufeff\u206a\ufff9\u00ad"),
    list("‘’‚‛“”„‟ʼ\u00a0\u2009\u202f\u2003\u2028\u2029\u1680") + ["\x1b[31m", "\x1b[0m"],
    list("ſİıK\u212aΩ½²٣५ⅻ①Ⓐ") + ["'s", "'S", "'ll", "'ſ", "<|endoftext|>", "<|startoftext|>"],
]


def random_cases(tok, count, seed=1234):
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 24)):
            r = rng.random()
            if r < 0.08:
                cp = rng.randint(0x80, 0xFFFF)
                if 0xD800 <= cp <= 0xDFFF:
                    cp = 0x20
                parts.append(chr(cp))
            else:
                parts.append(rng.choice(rng.choice(RANDOM_POOLS)))
        text = "".join(parts)
        full_clean = whitespace_clean(basic_clean(text))
        plain = whitespace_clean(html.unescape(html.unescape(ftfy.fix_text(text, fix_encoding=False))).strip())
        ids = []
        for token in re.findall(tok.pat, plain.lower()):
            token = ''.join(tok.byte_encoder[b] for b in token.encode('utf-8'))
            ids.extend(tok.encoder[t] for t in tok.bpe(token).split(' '))
        out.append({"text": text, "ids_without_mojibake_fix": ids, "clean_without_mojibake_fix": plain,
                    "mojibake_fix_differs": plain != full_clean})
    return out


def read_captions(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows and rows[0] == ["image", "caption"]:
        rows = rows[1:]
    return [r[1] for r in rows]


# ---- C++ tables for src/text/clean.cpp ----
def cpp_str(s):
    """A C++ string literal of s's UTF-8 bytes; a hex escape never runs into a following hex digit."""
    out = []
    escaped = False
    for c in s.encode("utf-8"):
        if c < 0x20 or c >= 0x7f or chr(c) in '"\\?':
            out.append(f"\\x{c:02x}")
            escaped = True
        else:
            if escaped and chr(c) in "0123456789abcdefABCDEF":
                out.append('" "')
            out.append(chr(c))
            escaped = False
    return '"' + "".join(out) + '"'


def emit_tables():
    from ftfy import chardata
    lines = ["// Generated by: /usr/bin/python3 tools/tokenizer_reference.py tables "
             "-o src/text/clean_tables.inc",
             f"// from ftfy {ftfy.__version__} (chardata.py) and Python {sys.version.split()[0]}'s html module"
             f" (Unicode {unicodedata.unidata_version}). Do not edit by hand.",
             "// clang-format off"]
    lines.append("// ftfy.chardata.LIGATURES")
    lines.append("static const CodepointMapping kLigatures[] = {")
    for cp, s in sorted(chardata.LIGATURES.items()):
        lines.append(f"  {{0x{cp:x}, {cpp_str(s)}}},")
    lines.append("};")
    lines.append("// ftfy.chardata.WIDTH_MAP (fullwidth/halfwidth forms -> NFKC; U+3000 -> space)")
    lines.append("static const CodepointMapping kWidthMap[] = {")
    for cp, s in sorted(chardata.WIDTH_MAP.items()):
        lines.append(f"  {{0x{cp:x}, {cpp_str(s)}}},")
    lines.append("};")
    lines.append("// ftfy.chardata.CONTROL_CHARS (removed by remove_control_chars)")
    lines.append("static const char32_t kControlChars[] = {")
    lines.append("  " + ", ".join(f"0x{cp:x}" for cp in sorted(chardata.CONTROL_CHARS)) + ",")
    lines.append("};")
    lines.append("// 'sloppy-windows-1252' decoding of bytes 0x80..0x9F (ftfy fix_c1_controls)")
    lines.append("static const char32_t kC1ToWindows1252[32] = {")
    lines.append("  " + ", ".join(
        f"0x{ord(bytes([b]).decode('sloppy-windows-1252')):x}" for b in range(0x80, 0xA0)) + ",")
    lines.append("};")
    lines.append("// ftfy.chardata.HTML_ENTITIES: '&name;' -> text (sorted by name for binary search)")
    lines.append("static const EntityMapping kFtfyEntities[] = {")
    for name, s in sorted(chardata.HTML_ENTITIES.items(), key=lambda kv: kv[0].encode()):
        lines.append(f"  {{{cpp_str(name)}, {cpp_str(s)}}},")
    lines.append("};")
    lines.append("// html.entities.html5: 'name' or 'name;' -> text (sorted by name)")
    lines.append("static const EntityMapping kHtml5Entities[] = {")
    for name, s in sorted(html.entities.html5.items(), key=lambda kv: kv[0].encode()):
        lines.append(f"  {{{cpp_str(name)}, {cpp_str(s)}}},")
    lines.append("};")
    lines.append("// html._invalid_charrefs: numeric references replaced by another character")
    lines.append("static const CodepointMapping kInvalidCharrefs[] = {")
    for cp, s in sorted(html._invalid_charrefs.items()):
        lines.append(f"  {{0x{cp:x}, {cpp_str(s)}}},")
    lines.append("};")
    lines.append("// html._invalid_codepoints: numeric references that decode to nothing")
    lines.append("static const char32_t kInvalidCodepoints[] = {")
    cps = sorted(html._invalid_codepoints)
    for i in range(0, len(cps), 12):
        lines.append("  " + ", ".join(f"0x{cp:x}" for cp in cps[i:i + 12]) + ",")
    lines.append("};")
    lines.append("// clang-format on")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["goldens", "encode", "time", "tables", "clean", "captions", "random"])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--bpe", default=DEFAULT_BPE)
    ap.add_argument("-o", "--output")
    args = ap.parse_args()

    def emit(text):
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)

    if args.mode == "tables":
        emit(emit_tables())
        return
    if args.mode == "clean":
        with open(args.file, encoding="utf-8", errors="replace", newline="") as f:
            emit("".join(json.dumps(whitespace_clean(basic_clean(line.rstrip("\n")))) + "\n" for line in f))
        return
    if args.mode == "time":
        captions = read_captions(args.file)
        results = {}
        tok = SimpleTokenizer(args.bpe)
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            c0 = time.process_time()
            n = 0
            for c in captions:
                n += len(tok.encode(c))
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            # CPU seconds are what the C++ benchmark's rates use too (robust on a busy machine).
            results[label] = {"captions": len(captions), "tokens": n, "wall_seconds": round(dt, 4),
                              "cpu_seconds": round(dc, 4), "tokens_per_cpu_second": round(n / dc),
                              "tokens_per_wall_second": round(n / dt)}
        emit(json.dumps(results, indent=1) + "\n")
        return
    tok = SimpleTokenizer(args.bpe)
    if args.mode == "random":
        emit("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in random_cases(tok, int(args.file))))
        return
    if args.mode == "captions":
        emit("".join(json.dumps(tok.encode(c)) + "\n" for c in read_captions(args.file)))
        return
    if args.mode == "goldens":
        emit("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in make_goldens(tok)))
    elif args.mode == "encode":
        with open(args.file, encoding="utf-8", errors="replace", newline="") as f:
            out = []
            for line in f:
                line = line.rstrip("\n")
                ids = tok.encode(line)
                out.append(json.dumps({"text": line, "ids": ids, "decoded": tok.decode(ids)},
                                      ensure_ascii=False) + "\n")
        emit("".join(out))


if __name__ == "__main__":
    main()
