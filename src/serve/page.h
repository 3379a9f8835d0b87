#pragma once
// The search page of `clip serve` (GET /): plain HTML and JavaScript, no build step.
#include <string>

namespace clip::serve {

const std::string& search_page_html();

}  // namespace clip::serve
