#include "serve/page.h"

namespace clip::serve {

// A query box, a grid of thumbnails with scores, search by dropping an image anywhere on the
// page, and permalinks (/?q=dog). Talks to POST /v1/search; thumbnails from GET /thumb.
const std::string& search_page_html() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clip search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #fafafa; color: #222; }
  header { position: sticky; top: 0; background: #fff; padding: 12px 16px; box-shadow: 0 1px 4px #0002; display: flex; gap: 8px; align-items: center; }
  header input[type=text] { flex: 1; font-size: 18px; padding: 8px 10px; }
  header button { font-size: 16px; padding: 8px 14px; }
  #status { padding: 8px 16px; color: #555; min-height: 1.2em; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; padding: 0 16px 16px; }
  figure { margin: 0; background: #fff; border-radius: 6px; overflow: hidden; box-shadow: 0 1px 3px #0002; }
  figure img { width: 100%; height: 160px; object-fit: cover; display: block; background: #eee; }
  figcaption { font-size: 12px; padding: 4px 6px; display: flex; justify-content: space-between; gap: 6px; }
  figcaption .path { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #666; }
  body.dragging { outline: 4px dashed #48f; outline-offset: -8px; }
</style>
</head>
<body>
<header>
  <input id="q" type="text" placeholder="Search your images, or drop an image here" autofocus>
  <label>top <input id="k" type="number" value="40" min="1" max="1000" style="width:4em"></label>
  <button id="go">Search</button>
</header>
<div id="status"></div>
<div id="grid"></div>
<script>
const q = document.getElementById('q'), k = document.getElementById('k');
const grid = document.getElementById('grid'), status = document.getElementById('status');
function show(results, took) {
  grid.innerHTML = '';
  for (const r of results) {
    const f = document.createElement('figure');
    f.className = 'result';
    const img = document.createElement('img');
    img.loading = 'lazy';
    img.src = '/thumb?path=' + encodeURIComponent(r.path);
    img.alt = r.path;
    const c = document.createElement('figcaption');
    const p = document.createElement('span'); p.className = 'path'; p.textContent = r.path.split('/').pop(); p.title = r.path;
    const s = document.createElement('span'); s.className = 'score'; s.textContent = r.score.toFixed(3);
    c.append(p, s); f.append(img, c); grid.append(f);
  }
  status.textContent = results.length + ' results in ' + took + ' ms';
}
async function search(body) {
  status.textContent = 'searching...';
  const t0 = performance.now();
  body.k = parseInt(k.value) || 40;
  const res = await fetch('/v1/search', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await res.json();
  if (!res.ok) { status.textContent = 'error: ' + j.error; grid.innerHTML = ''; return; }
  show(j.results, Math.round(performance.now() - t0));
}
function searchText() {
  const text = q.value.trim();
  if (!text) return;
  history.replaceState(null, '', '/?q=' + encodeURIComponent(text));
  search({text});
}
document.getElementById('go').onclick = searchText;
q.addEventListener('keydown', e => { if (e.key === 'Enter') searchText(); });
document.addEventListener('dragover', e => { e.preventDefault(); document.body.classList.add('dragging'); });
document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
document.addEventListener('drop', e => {
  e.preventDefault(); document.body.classList.remove('dragging');
  const file = e.dataTransfer.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { q.value = ''; search({image: reader.result.split(',')[1]}); };
  reader.readAsDataURL(file);
});
const initial = new URLSearchParams(location.search).get('q');
if (initial) { q.value = initial; search({text: initial}); }
</script>
</body>
</html>
)HTML";
  return page;
}

}  // namespace clip::serve
