#pragma once
// Prompt templates, one rule for every command and the API: "{}" and "{c}" (open_clip's
// `lambda c: f"... {c} ..."`) both stand for the class name, every occurrence is replaced, and
// a template with neither is an error (it would give every class the same prompt).
#include <string>

namespace clip {

std::string format_prompt(const std::string& templ, const std::string& label);

}  // namespace clip
