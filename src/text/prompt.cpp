#include "text/prompt.h"

#include "core/error.h"

namespace clip {

std::string format_prompt(const std::string& templ, const std::string& label) {
  std::string out;
  bool replaced = false;
  for (size_t i = 0; i < templ.size();) {
    if (templ.compare(i, 3, "{c}") == 0) {
      out += label;
      i += 3;
      replaced = true;
    } else if (templ.compare(i, 2, "{}") == 0) {
      out += label;
      i += 2;
      replaced = true;
    } else {
      out += templ[i++];
    }
  }
  if (!replaced)
    throw Error("prompt template \"" + templ + "\" has no {} or {c} for the label (e.g. \"a photo of a {}.\")");
  return out;
}

}  // namespace clip
