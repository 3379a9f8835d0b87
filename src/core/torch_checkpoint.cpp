#include "core/torch_checkpoint.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/io.h"

namespace clip {
namespace {

// ---- the archive's members ----

// Every regular member of the zip archive by name (bytes copied out).
std::map<std::string, std::string> read_zip_members(const uint8_t* data, size_t size, const std::string& label) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) throw Error(label + ": cannot allocate a zip reader");
  archive_read_support_format_zip(a.get());
  if (archive_read_open_memory(a.get(), data, size) != ARCHIVE_OK)
    throw Error(label + ": not a readable zip archive: " + std::string(archive_error_string(a.get()) ? archive_error_string(a.get()) : "unknown"));
  // Checkpoints store their members uncompressed; an archive inflating far beyond its own size
  // is a zip bomb, not a checkpoint.
  const size_t limit = size * 16 + (size_t(1) << 20);
  std::map<std::string, std::string> members;
  size_t total = 0;
  archive_entry* e = nullptr;
  for (;;) {
    const int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      const char* m = archive_error_string(a.get());
      throw Error(label + ": corrupt zip archive: " + (m ? m : "unknown error"));
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    const char* name = archive_entry_pathname(e);
    const la_int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
    if (declared > la_int64_t(limit))
      throw Error(label + ": zip member " + (name ? name : "?") + " declares an impossible size");
    std::string bytes;
    if (declared >= 0) bytes.reserve(size_t(declared));
    char buf[1 << 16];
    for (;;) {
      const la_ssize_t r = archive_read_data(a.get(), buf, sizeof buf);
      if (r < 0) {
        const char* m = archive_error_string(a.get());
        throw Error(label + ": reading zip member " + (name ? name : "?") + ": " + (m ? m : "unknown error"));
      }
      if (r == 0) break;
      bytes.append(buf, size_t(r));
      if (bytes.size() > limit) throw Error(label + ": zip member " + (name ? name : "?") + " inflates beyond reason");
    }
    total += bytes.size();
    if (total > limit) throw Error(label + ": the zip archive inflates beyond reason");
    members[name ? name : ""] = std::move(bytes);
  }
  return members;
}

// ---- a restricted unpickler ----

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum Kind { None, Bool, Int, Float, String, List, Tuple, Dict, Global, Object, Storage, TensorRef } kind = None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                    // String; Global: "module.name"; Object: class
  std::vector<ValuePtr> items;                      // List, Tuple
  std::vector<std::pair<ValuePtr, ValuePtr>> dict;  // Dict, in insertion order
  ValuePtr state;                                   // Object: what BUILD gave it
  // Storage: the member key and element type; TensorRef: its storage and view.
  DType dtype = DType::F32;
  ValuePtr storage;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;

  Value() = default;
  Value(const Value&) = delete;
  Value& operator=(const Value&) = delete;
  // Iterative: a hostile pickle can nest values a million deep ("(((...ttt"), and a recursive
  // destruction would overflow the stack.
  ~Value() {
    std::vector<ValuePtr> pending;
    auto take_children = [&pending](Value& v) {
      for (auto& x : v.items) pending.push_back(std::move(x));
      for (auto& [k, x] : v.dict) {
        pending.push_back(std::move(k));
        pending.push_back(std::move(x));
      }
      pending.push_back(std::move(v.state));
      pending.push_back(std::move(v.storage));
      v.items.clear();
      v.dict.clear();
    };
    take_children(*this);
    while (!pending.empty()) {
      ValuePtr v = std::move(pending.back());
      pending.pop_back();
      if (v && v.use_count() == 1) take_children(*v);
    }
  }
};

ValuePtr make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

const std::map<std::string, DType>& storage_types() {
  static const std::map<std::string, DType> m = {
      {"torch.FloatStorage", DType::F32}, {"torch.HalfStorage", DType::F16},  {"torch.BFloat16Storage", DType::BF16},
      {"torch.DoubleStorage", DType::F64}, {"torch.LongStorage", DType::I64}, {"torch.IntStorage", DType::I32},
      {"torch.ShortStorage", DType::I16},  {"torch.CharStorage", DType::I8},  {"torch.ByteStorage", DType::U8},
      {"torch.BoolStorage", DType::BOOL}};
  return m;
}

// The globals a checkpoint may name. Everything else is refused: a pickle can call any
// importable function through GLOBAL + REDUCE, which is how a malicious file runs code.
bool allowed_global(const std::string& g) {
  static const std::set<std::string> ok = {
      "collections.OrderedDict",        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
      "torch.jit._pickle.restore_type_tag", "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_tensorlist",
      "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist", "torch.device", "torch.Size"};
  return ok.count(g) || storage_types().count(g) || g.rfind("__torch__.", 0) == 0;
}

class Unpickler {
 public:
  Unpickler(const std::string& bytes, std::string label) : p_(reinterpret_cast<const uint8_t*>(bytes.data())), end_(p_ + bytes.size()), label_(std::move(label)) {}

  ValuePtr run() {
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                  // PROTO
        case 0x95: take(8); break;               // FRAME
        case '.':                                // STOP
          if (stack_.empty()) fail("STOP with an empty stack");
          return stack_.back();
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '}': push(make(Value::Dict)); break;
        case ']': push(make(Value::List)); break;
        case ')': push(make(Value::Tuple)); break;
        case 'N': push(make(Value::None)); break;
        case 0x88: case 0x89: {                  // NEWTRUE, NEWFALSE
          auto v = make(Value::Bool);
          v->b = op == 0x88;
          push(v);
          break;
        }
        case 'J': push_int(int32_t(le(4))); break;       // BININT
        case 'K': push_int(int64_t(le(1))); break;       // BININT1
        case 'M': push_int(int64_t(le(2))); break;       // BININT2
        case 0x8a: {                                     // LONG1
          const size_t n = u8();
          if (n > 8) fail("integer wider than 64 bits");
          uint64_t v = le(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push_int(int64_t(v));
          break;
        }
        case 'G': {                                      // BINFLOAT (big-endian double)
          const uint8_t* b = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | b[k];
          auto v = make(Value::Float);
          std::memcpy(&v->f, &bits, 8);
          push(v);
          break;
        }
        case 'X': push_string(le(4)); break;             // BINUNICODE
        case 0x8c: push_string(le(1)); break;            // SHORT_BINUNICODE
        case 0x8d: push_string(le(8)); break;            // BINUNICODE8
        case 'T': push_string(le(4)); break;             // BINSTRING
        case 'U': push_string(le(1)); break;             // SHORT_BINSTRING
        case 'B': push_string(le(4)); break;             // BINBYTES
        case 'C': push_string(le(1)); break;             // SHORT_BINBYTES
        case 'q': memo_put(le(1)); break;                // BINPUT
        case 'r': memo_put(le(4)); break;                // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;        // MEMOIZE
        case 'h': memo_get(le(1)); break;                // BINGET
        case 'j': memo_get(le(4)); break;                // LONG_BINGET
        case '0': pop(); break;                          // POP
        case '1': pop_mark(); break;                     // POP_MARK
        case '2': push(top()); break;                    // DUP
        case 't': {                                      // TUPLE
          auto v = make(Value::Tuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {               // TUPLE1..3
          const size_t n = size_t(op - 0x84);
          auto v = make(Value::Tuple);
          if (stack_.size() < n + floor()) fail("tuple of missing items");
          v->items.assign(stack_.end() - long(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(v);
          break;
        }
        case 'l': {                                      // LIST
          auto v = make(Value::List);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {                                      // DICT
          auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items");
          auto v = make(Value::Dict);
          for (size_t k = 0; k < items.size(); k += 2) v->dict.emplace_back(items[k], items[k + 1]);
          push(v);
          break;
        }
        case 'a': {                                      // APPEND
          ValuePtr x = pop();
          list_of(top())->items.push_back(x);
          break;
        }
        case 'e': {                                      // APPENDS
          auto items = pop_mark();
          auto& l = list_of(top())->items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 's': {                                      // SETITEM
          ValuePtr v = pop(), k = pop();
          dict_of(top())->dict.emplace_back(k, v);
          break;
        }
        case 'u': {                                      // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          auto d = dict_of(top());
          for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'c': {                                      // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {                                     // STACK_GLOBAL
          ValuePtr name = pop(), module = pop();
          if (module->kind != Value::String || name->kind != Value::String) fail("STACK_GLOBAL of non-strings");
          push_global(module->s + "." + name->s);
          break;
        }
        case 'R': {                                      // REDUCE
          ValuePtr args = pop(), fn = pop();
          push(call(fn, args));
          break;
        }
        case 0x81: {                                     // NEWOBJ
          ValuePtr args = pop(), cls = pop();
          push(call(cls, args));
          break;
        }
        case 'b': {                                      // BUILD
          ValuePtr state = pop();
          ValuePtr obj = top();
          if (obj->kind == Value::Object) obj->state = state;
          else if (obj->kind == Value::Dict && state->kind == Value::Dict)
            obj->dict.insert(obj->dict.end(), state->dict.begin(), state->dict.end());
          // Tensors (_rebuild_parameter_with_state) and others: the state carries nothing we use.
          break;
        }
        case 'Q': {                                      // BINPERSID
          ValuePtr pid = pop();
          push(persistent(pid));
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + hex + " (refused: only plain data and tensors are read)");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(label_ + ": " + why + " at byte " + std::to_string(pos_) + " of the pickle");
  }
  uint8_t u8() { return *take(1); }
  const uint8_t* take(uint64_t n) {
    if (n > uint64_t(end_ - p_)) fail("truncated pickle");
    const uint8_t* at = p_;
    p_ += n;
    pos_ += n;
    return at;
  }
  uint64_t le(size_t n) {
    const uint8_t* b = take(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(b[k]) << (8 * k);
    return v;
  }
  std::string line() {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl) fail("truncated GLOBAL");
    std::string s(reinterpret_cast<const char*>(p_), size_t(nl - p_));
    take(uint64_t(nl - p_) + 1);
    return s;
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(ValuePtr v) {
    if (stack_.size() > 10'000'000) fail("pickle stack too deep");
    stack_.push_back(std::move(v));
  }
  void push_int(int64_t i) {
    auto v = make(Value::Int);
    v->i = i;
    push(v);
  }
  void push_string(uint64_t n) {
    const uint8_t* b = take(n);
    auto v = make(Value::String);
    v->s.assign(reinterpret_cast<const char*>(b), size_t(n));
    push(v);
  }
  void push_global(const std::string& g) {
    if (!allowed_global(g))
      throw Error(label_ + ": refuses the pickle global " + g +
                  " (a checkpoint holds only tensors and plain data; this one would run code)");
    auto v = make(Value::Global);
    v->s = g;
    push(v);
  }
  ValuePtr pop() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  ValuePtr& top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(stack_.begin() + long(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  void memo_put(uint64_t k) {
    if (k > 100'000'000) fail("memo index out of range");
    memo_[k] = top();
  }
  void memo_get(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo entry " + std::to_string(k) + " never stored");
    push(it->second);
  }
  ValuePtr list_of(const ValuePtr& v) {
    if (v->kind != Value::List) fail("APPEND to a non-list");
    return v;
  }
  ValuePtr dict_of(const ValuePtr& v) {
    if (v->kind != Value::Dict) fail("SETITEM on a non-dict");
    return v;
  }
  static int64_t as_int(const ValuePtr& v, const Unpickler& u, const char* what) {
    if (v->kind != Value::Int) u.fail(std::string(what) + " is not an integer");
    return v->i;
  }
  std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what) const {
    if (v->kind != Value::Tuple && v->kind != Value::List) fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v->items) out.push_back(as_int(x, *this, what));
    return out;
  }

  ValuePtr call(const ValuePtr& fn, const ValuePtr& args) {
    if (fn->kind != Value::Global) fail("call of a non-global");
    if (args->kind != Value::Tuple) fail("call arguments are not a tuple");
    const std::string& g = fn->s;
    const auto& a = args->items;
    if (g == "collections.OrderedDict") return make(Value::Dict);
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) fail(g + " with too few arguments");
      if (a[0]->kind != Value::Storage) fail(g + " without a storage");
      auto t = make(Value::TensorRef);
      t->storage = a[0];
      t->dtype = a[0]->dtype;
      t->offset = as_int(a[1], *this, "tensor offset");
      t->sizes = int_tuple(a[2], "tensor size");
      t->strides = int_tuple(a[3], "tensor stride");
      if (t->sizes.size() != t->strides.size()) fail("tensor size and stride differ in length");
      return t;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Value::TensorRef) fail(g + " without a tensor");
      return a[0];
    }
    if (g == "torch.jit._pickle.restore_type_tag" || g.rfind("torch.jit._pickle.build_", 0) == 0) {
      if (a.empty()) fail(g + " without arguments");
      return a[0];
    }
    if (g == "torch.device" || g == "torch.Size") return a.empty() ? make(Value::None) : a[0];
    if (g.rfind("__torch__.", 0) == 0) {  // a TorchScript object: its attributes come by BUILD
      auto o = make(Value::Object);
      o->s = g;
      return o;
    }
    fail("the global " + g + " cannot be called");
  }

  ValuePtr persistent(const ValuePtr& pid) {
    // ('storage', torch.FloatStorage, key, location, numel)
    if (pid->kind != Value::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Value::String ||
        pid->items[0]->s != "storage")
      fail("unsupported persistent id (expected a tensor storage)");
    const ValuePtr& type = pid->items[1];
    const ValuePtr& key = pid->items[2];
    if (type->kind != Value::Global || !storage_types().count(type->s)) fail("unsupported storage type");
    if (key->kind != Value::String) fail("storage key is not a string");
    auto it = storages_.find(key->s);
    if (it != storages_.end()) return it->second;
    auto s = make(Value::Storage);
    s->dtype = storage_types().at(type->s);
    s->s = key->s;
    s->i = as_int(pid->items[4], *this, "storage size");
    storages_[key->s] = s;
    return s;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  uint64_t pos_ = 0;
  std::string label_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::unordered_map<std::string, ValuePtr> storages_;
};

// ---- from the unpickled tree to named tensors ----

struct Collector {
  const std::map<std::string, std::string>& members;
  std::string data_dir;  // "<prefix>/data/"
  std::string label;
  int64_t max_elements;  // per tensor: 64x the input's bytes
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<const Value*> visiting;

  Tensor materialise(const Value& t, const std::string& name) {
    const Value& st = *t.storage;
    auto m = members.find(data_dir + st.s);
    if (m == members.end()) throw Error(label + ": tensor " + name + ": storage " + st.s + " missing from the archive");
    const size_t es = dtype_size(st.dtype);
    const int64_t stored = int64_t(m->second.size() / es);
    // Checked before anything is allocated: the element count is bounded (a view larger than
    // the whole input many times over is not a checkpoint), and the highest element the view
    // reaches lies inside the storage (no overflow on the way).
    int64_t n = 1;
    bool empty = false;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) throw Error(label + ": tensor " + name + " has a negative size or stride");
      if (t.sizes[d] == 0) empty = true;
      else if (!empty && n > max_elements / t.sizes[d]) throw Error(label + ": tensor " + name + " is implausibly large");
      else if (!empty) n *= t.sizes[d];
    }
    if (empty) return Tensor::empty(t.sizes, st.dtype);
    if (t.offset < 0) throw Error(label + ": tensor " + name + " has a negative offset");
    int64_t last = t.offset;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      const int64_t span = t.sizes[d] - 1;
      if (span > 0 && t.strides[d] > (stored - last) / span)
        throw Error(label + ": tensor " + name + " reaches beyond its storage (" + std::to_string(stored) + " elements)");
      last += span * t.strides[d];
    }
    if (last >= stored)
      throw Error(label + ": tensor " + name + " reaches beyond its storage (" + std::to_string(stored) + " elements)");
    Tensor out = Tensor::empty(t.sizes, st.dtype);
    const char* src = m->second.data();
    char* dst = static_cast<char*>(out.data);
    // Walk the view's index space in row-major order (a contiguous view is one copy).
    bool contiguous = true;
    int64_t expect = 1;
    for (size_t d = t.sizes.size(); d-- > 0;) {
      if (t.sizes[d] != 1 && t.strides[d] != expect) contiguous = false;
      expect *= t.sizes[d];
    }
    if (contiguous) {
      std::memcpy(dst, src + size_t(t.offset) * es, size_t(n) * es);
      return out;
    }
    std::vector<int64_t> idx(t.sizes.size(), 0);
    for (int64_t k = 0; k < n; ++k) {
      int64_t at = t.offset;
      for (size_t d = 0; d < idx.size(); ++d) at += idx[d] * t.strides[d];
      std::memcpy(dst + size_t(k) * es, src + size_t(at) * es, es);
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < t.sizes[d]) break;
        idx[d] = 0;
      }
    }
    return out;
  }

  void walk(const ValuePtr& v, const std::string& path, int depth) {
    if (depth > 64) throw Error(label + ": the module tree nests too deeply at " + path);
    if (v->kind == Value::TensorRef) {
      out.emplace_back(path, materialise(*v, path));
      return;
    }
    if (v->kind == Value::Object) {
      if (!visiting.insert(v.get()).second) return;  // a cycle
      if (v->state) walk(v->state, path, depth + 1);
      visiting.erase(v.get());
      return;
    }
    if (v->kind == Value::Dict) {
      for (const auto& [k, x] : v->dict) {
        if (k->kind != Value::String) continue;
        if (x->kind == Value::TensorRef || x->kind == Value::Object || (depth > 0 && x->kind == Value::Dict))
          walk(x, path.empty() ? k->s : path + "." + k->s, depth + 1);
      }
    }
  }
};

}  // namespace

std::vector<std::pair<std::string, Tensor>> read_torch_checkpoint(const uint8_t* data, size_t size,
                                                                 const std::string& label) {
  if (size >= 2 && data[0] == 0x80 && data[1] >= 2 && data[1] <= 5)
    throw Error(label + ": a legacy (pre-1.6, not zip) PyTorch pickle: re-save it with torch.save from a current "
                        "PyTorch, or convert it to .safetensors");
  if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0) throw Error(label + ": not a PyTorch checkpoint (no zip signature)");
  const auto members = read_zip_members(data, size, label);
  // data.pkl of the archive (TorchScript archives also hold constants.pkl and code/).
  std::string pkl;
  for (const auto& [name, bytes] : members) {
    const bool top = name == "data.pkl" || (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0 &&
                                            name.find('/') == name.size() - 9);
    if (top) {
      if (!pkl.empty()) throw Error(label + ": several data.pkl in the archive");
      pkl = name;
    }
  }
  if (pkl.empty()) throw Error(label + ": a zip archive without data.pkl: not a PyTorch checkpoint");
  const std::string prefix = pkl.substr(0, pkl.size() - 8);  // "<dir>/" or ""
  if (members.at(pkl).size() > (size_t(64) << 20)) throw Error(label + ": " + pkl + " is implausibly large for a checkpoint");
  ValuePtr root = Unpickler(members.at(pkl), label + " (" + pkl + ")").run();
  // A training checkpoint wraps the weights: {"state_dict": {...}, "epoch": ..., "optimizer": ...}.
  if (root->kind == Value::Dict)
    for (const auto& [k, v] : root->dict)
      if (k->kind == Value::String && k->s == "state_dict" && v->kind == Value::Dict) {
        root = v;
        break;
      }
  if (root->kind != Value::Dict && root->kind != Value::Object)
    throw Error(label + ": data.pkl holds neither a state dict nor a TorchScript module");
  Collector c{members, prefix + "data/", label, int64_t(size) * 64 + 1024, {}, {}};
  c.walk(root, "", 0);
  if (c.out.empty()) throw Error(label + ": holds no tensors");
  return std::move(c.out);
}

std::vector<std::pair<std::string, Tensor>> read_torch_checkpoint_file(const std::string& path) {
  const auto map = MappedFile::open(path);
  return read_torch_checkpoint(map->data(), map->size(), path);
}

bool is_torch_checkpoint_name(const std::string& path) {
  for (const char* ext : {".pt", ".pth", ".bin", ".ckpt"})
    if (ends_with_ci(path, ext)) return true;
  return false;
}

}  // namespace clip
