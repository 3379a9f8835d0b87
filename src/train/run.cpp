#include "train/run.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"

namespace clip::train {

using namespace clip::nn;

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

// "42s", "3m07s", "2h05m".
std::string duration_text(double seconds) {
  const int64_t s = int64_t(std::max(0.0, seconds) + 0.5);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Removes "model.tmp-*" directories and write_file_atomic's hidden ".<name>.tmp<n>" files.
void remove_output_leftovers(const std::string& output) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(output, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("model.tmp-", 0) == 0 || (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos))
      doomed.push_back(e.path());
  }
  for (const auto& p : doomed) fs::remove_all(p, ec);
}

// Atomically replaces <output>/<name> (a directory) by `tmp`.
void publish_directory(const fs::path& tmp, const fs::path& final_dir) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_dir, ec)) {
    old = final_dir;
    old += ".tmp-del-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    if (::rename(final_dir.c_str(), old.c_str()) != 0)
      throw Error(final_dir.string() + ": cannot replace: " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
    throw Error(final_dir.string() + ": rename failed: " + std::strerror(errno));
  fsync_path(final_dir.parent_path().string());
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace

struct TrainRun::Impl {
  ClipNetwork<float>& model;
  Trainer<float>& trainer;
  BatchSource& source;
  RunOptions o;
  int lock_fd = -1;
  std::string ckdir, metrics_path, curves_path;
  std::vector<std::string> lines;  // metrics.jsonl so far (for curves.svg)
  FILE* metrics = nullptr;
  TrainState state;
  int64_t last_saved_step = -1;
  std::string last_checkpoint;
  bool started = false;
  std::unique_ptr<Progress> progress;
  Clock::time_point t0;
  double elapsed_base = 0;

  Impl(ClipNetwork<float>& m, Trainer<float>& t, BatchSource& s, RunOptions opts)
      : model(m), trainer(t), source(s), o(std::move(opts)) {}

  // Rank 0 (or the only process) writes the folder and logs.
  bool writer() const { return !o.comm || o.comm->rank() == 0; }
  int world() const { return o.comm ? o.comm->size() : 1; }
  ~Impl() {
    if (metrics) std::fclose(metrics);
    if (lock_fd >= 0) ::close(lock_fd);
  }

  double elapsed() const {
    return elapsed_base + std::chrono::duration<double>(Clock::now() - t0).count();
  }

  void log(const std::string& line) {
    if (!writer()) return;
    if (o.log) {
      o.log(line);
      return;
    }
    const bool tty = progress && progress->enabled();
    std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", line.c_str());
    std::fflush(stderr);
  }

  void append_metrics(const nlohmann::ordered_json& j) {
    if (!writer()) return;
    std::string line = j.dump();
    lines.push_back(line);
    line += '\n';
    if (std::fwrite(line.data(), 1, line.size(), metrics) != line.size() || std::fflush(metrics) != 0)
      throw Error(metrics_path + ": write failed: " + std::strerror(errno));
  }

  void sync_metrics() {
    if (std::fflush(metrics) != 0 || ::fsync(::fileno(metrics)) != 0)
      throw Error(metrics_path + ": write failed: " + std::strerror(errno));
  }

  void write_curves() {
    if (writer()) write_file_atomic(curves_path, render_curves_svg(lines));
  }

  void save() {
    if (last_saved_step == state.step) return;
    if (!writer()) {
      last_saved_step = state.step;
      return;
    }
    sync_metrics();
    state.optimizer_steps = trainer.optimizer().steps();
    state.elapsed_seconds = elapsed();
    last_checkpoint = save_checkpoint(ckdir, model, trainer.optimizer(), state, o.model_extras);
    last_saved_step = state.step;
    prune_checkpoints(ckdir, o.keep);
  }

  // Keeps metrics.jsonl up to the resumed checkpoint's step: what a killed run logged after it
  // is redone (a half-written last line is dropped too).
  void keep_metrics_up_to_checkpoint() {
    std::string kept;
    std::error_code ec;
    if (fs::exists(metrics_path, ec)) {
      const std::string text = read_text_file(metrics_path);
      size_t pos = 0;
      while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) break;  // a partial last line (killed while writing it)
        const std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        try {
          const json j = json::parse(line);
          if (j.is_object() && j.contains("step") && j["step"].get<int64_t>() <= state.step) {
            kept += line + "\n";
            lines.push_back(line);
          }
        } catch (const std::exception&) {
          // not a record: dropped
        }
      }
    }
    write_file_atomic(metrics_path, kept);
  }

  // Every rank starts from rank 0's parameters (the same seed gives the same ones; this makes
  // it so whatever the initialisation's path).
  void agree_on_parameters() {
    if (o.comm && o.comm->distributed()) o.comm->broadcast(model.params(), int64_t(model.num_params()));
  }

  std::string write_final_model() {
    const fs::path out(o.output);
    fs::path tmp = out / ("model.tmp-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove_all(tmp, ec);
    try {
      write_trained_model_directory(tmp.string(), model, o.model_extras);
      fsync_path(tmp.string());
      publish_directory(tmp, out / "model");
    } catch (const std::exception& e) {
      fs::remove_all(tmp, ec);
      throw Error(std::string("the final model was not written: ") + e.what());
    }
    return (out / "model").string();
  }
};

TrainRun::TrainRun(ClipNetwork<float>& model, Trainer<float>& trainer, BatchSource& source, RunOptions options)
    : impl_(std::make_unique<Impl>(model, trainer, source, std::move(options))) {
  Impl& m = *impl_;
  if (m.o.output.empty()) throw Error("training: no output folder");
  if (m.o.total_steps <= 0) throw Error("training: the number of steps must be positive");
  if (m.trainer.config().total_steps != m.o.total_steps)
    throw Error("training: the run's total steps (" + std::to_string(m.o.total_steps) +
                ") differ from the schedule's (" + std::to_string(m.trainer.config().total_steps) + ")");
  const fs::path out(m.o.output);
  m.ckdir = (out / "checkpoints").string();
  m.metrics_path = (out / "metrics.jsonl").string();
  m.curves_path = (out / "curves.svg").string();
}

TrainRun::~TrainRun() = default;

int64_t TrainRun::step() const { return impl_->state.step; }
const std::string& TrainRun::checkpoints_dir() const { return impl_->ckdir; }

void TrainRun::start(const std::string& resume_from) {
  Impl& m = *impl_;
  if (m.started) throw Error("training: start() called twice");
  // Ranks other than 0 take the same state and write nothing.
  const bool writer = m.writer();
  if (writer) {
    std::error_code ec;
    fs::create_directories(m.o.output, ec);
    if (ec) throw Error(m.o.output + ": cannot create the output folder: " + ec.message());
    const std::string lock_path = (fs::path(m.o.output) / ".lock").string();
    m.lock_fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (m.lock_fd < 0) throw Error(lock_path + ": cannot open: " + std::strerror(errno));
    if (::flock(m.lock_fd, LOCK_EX | LOCK_NB) != 0)
      throw Error(m.o.output + ": another `clip train` is writing to this folder (" + lock_path + " is locked)");
    // Nobody else writes here: leftovers of interrupted runs can go.
    remove_temporary_checkpoints(m.ckdir);
    remove_output_leftovers(m.o.output);
  }

  if (resume_from.empty()) {
    if (writer && !list_checkpoints(m.ckdir).empty())
      throw Error(m.o.output + ": this folder already holds checkpoints of a run; continue it with "
                  "--resume latest, or choose another --output");
    m.state = TrainState{};
    if (writer) write_file_atomic(m.metrics_path, std::string());
  } else {
    m.state = load_checkpoint_into(resume_from, m.model, m.trainer.optimizer());
    if (m.state.step > m.o.total_steps)
      throw Error(resume_from + ": the checkpoint is at step " + std::to_string(m.state.step) +
                  ", beyond this run's " + std::to_string(m.o.total_steps) + " steps");
    m.trainer.set_steps_done(m.state.step);
    m.source.seek(m.state.loader);
    m.last_saved_step = m.state.step;
    m.last_checkpoint = resume_from;
    if (writer) m.keep_metrics_up_to_checkpoint();
    m.log("resuming from " + resume_from + " at step " + std::to_string(m.state.step) + " (epoch " +
          std::to_string(m.state.loader.epoch) + ", sample " + std::to_string(m.state.loader.samples) + ")");
  }
  m.state.seed = m.o.seed;
  m.state.config_json = m.o.config_json.empty() ? std::string("{}") : m.o.config_json;
  if (writer) {
    write_file_atomic((fs::path(m.o.output) / "config.json").string(),
                      json::parse(m.state.config_json).dump(2) + "\n");
    m.metrics = std::fopen(m.metrics_path.c_str(), "ab");
    if (!m.metrics) throw Error(m.metrics_path + ": cannot open: " + std::strerror(errno));
  }
  m.elapsed_base = m.state.elapsed_seconds;
  m.started = true;
  m.agree_on_parameters();
}

RunResult TrainRun::run(const std::atomic<int>* stop, const Validator& validate) {
  Impl& m = *impl_;
  if (!m.started) start();
  const int64_t total = m.o.total_steps;
  m.t0 = Clock::now();
  if (m.o.progress && m.writer() && m.state.step < total)
    m.progress = std::make_unique<Progress>("train", total - m.state.step, "steps");
  auto interval_start = Clock::now();
  const int64_t run_start_step = m.state.step;
  int64_t interval_samples = 0;
  double last_rate = 0;
  RunResult result;

  auto validate_now = [&]() {
    auto values = validate(m.model);
    nlohmann::ordered_json j = {{"type", "val"},
              {"step", m.state.step},
              {"epoch", m.state.loader.epoch},
              {"samples", m.state.samples_seen},
              {"elapsed", m.elapsed()}};
    std::string text = "step " + std::to_string(m.state.step) + " validation:";
    for (const auto& [name, value] : values) {
      j[name] = value;
      text += " " + name + " " + fmt("%.4f", value);
    }
    m.append_metrics(j);
    m.log(text);
    m.write_curves();
  };

  const int64_t W = m.world();
  while (m.state.step < total) {
    data::Batch b = m.source.next();
    if (b.size <= 0) throw Error("training: the data source returned an empty batch");
    if (b.size % W != 0)
      throw Error("training: a batch of " + std::to_string(b.size) + " samples does not split evenly over " +
                  std::to_string(W) + " processes (choose a --batch-size divisible by their number)");
    // This rank's slice of the global batch (all of it in one process).
    const int64_t local = b.size / W, first = (m.o.comm ? m.o.comm->rank() : 0) * local;
    const int64_t pixel_row = int64_t(b.pixels.size()) / b.size, id_row = int64_t(b.ids.size()) / b.size;
    const StepStats s = m.trainer.step(b.pixels.data() + first * pixel_row, b.ids.data() + first * id_row, local);
    if (!std::isfinite(s.loss))
      throw Error("training: the loss is not finite at step " + std::to_string(s.step + 1) +
                  " (lower the learning rate?)");
    m.state.step = m.trainer.steps_done();
    m.state.loader = b.end;
    m.state.samples_seen += b.size;
    interval_samples += b.size;
    const int64_t step = m.state.step;
    const bool last = step == total;
    // A stop asked of any rank (Ctrl-C reaches all under mpirun; SIGTERM may reach one) stops all.
    bool stopping = stop && stop->load() != 0;
    if (m.o.comm && m.o.comm->distributed()) stopping = m.o.comm->allreduce_max(stopping ? 1.0 : 0.0) > 0;
    const double temperature = std::exp(-s.logit_scale);
    if (m.o.log_every <= 0 || step % m.o.log_every == 0 || last || stopping) {
      const double secs = std::chrono::duration<double>(Clock::now() - interval_start).count();
      last_rate = secs > 0 ? double(interval_samples) / secs : 0.0;
      interval_start = Clock::now();
      interval_samples = 0;
      nlohmann::ordered_json record = {{"type", "train"},
                                       {"step", step},
                                       {"epoch", b.end.epoch},
                                       {"samples", m.state.samples_seen},
                                       {"loss", s.loss},
                                       {"lr", s.lr},
                                       {"logit_scale", s.logit_scale},
                                       {"temperature", temperature},
                                       {"grad_norm", s.grad_norm},
                                       {"samples_per_s", last_rate},
                                       {"elapsed", m.elapsed()}};
      if (W > 1) record["comm_s"] = s.comm_seconds;  // rank 0's time in collectives this step
      m.append_metrics(record);
      // Piped or redirected (no live progress line): one plain line per logged step, for logs.
      if (!(m.progress && m.progress->enabled())) {
        const double run_s = std::chrono::duration<double>(Clock::now() - m.t0).count();
        const int64_t done = step - run_start_step;
        const double eta = done > 0 ? run_s / double(done) * double(total - step) : 0.0;
        m.log("step " + std::to_string(step) + "/" + std::to_string(total) + "  epoch " +
              std::to_string(b.end.epoch) + "  loss " + fmt("%.4f", s.loss) + "  lr " + fmt("%.2e", s.lr) +
              "  T " + fmt("%.4f", temperature) + "  " + fmt("%.1f", last_rate) + " samples/s  elapsed " +
              duration_text(m.elapsed()) + "  ETA " + duration_text(eta));
      }
    }
    if (m.progress) {
      m.progress->set_suffix("step " + std::to_string(step) + "/" + std::to_string(total) + "  loss " +
                             fmt("%.4f", s.loss) + "  lr " + fmt("%.2e", s.lr) + "  T " +
                             fmt("%.4f", temperature) + "  " + fmt("%.1f", last_rate) + " samples/s");
      m.progress->add(1);
    }
    if (validate && m.writer() && ((m.o.val_every > 0 && step % m.o.val_every == 0) || last)) validate_now();
    if ((m.o.save_every > 0 && step % m.o.save_every == 0) || last || stopping) {
      m.save();
      m.write_curves();
    }
    if (stopping && !last) {
      if (m.progress) m.progress->finish();
      m.log("stopped at step " + std::to_string(step) + "; checkpoint " + m.last_checkpoint +
            " (continue with --resume latest)");
      result.finished = false;
      result.step = step;
      result.checkpoint = m.last_checkpoint;
      return result;
    }
  }
  if (m.progress) m.progress->finish();
  // Finished (possibly already by the checkpoint resumed from).
  m.save();
  m.write_curves();
  if (m.writer()) result.model_dir = m.write_final_model();
  result.finished = true;
  result.step = m.state.step;
  result.checkpoint = m.last_checkpoint;
  return result;
}

// ---- curves.svg ----

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, value)
};

struct Panel {
  std::string title;
  std::vector<Series> series;
  bool legend = false;
};

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

void draw_panel(std::string& svg, const Panel& p, double x0, double y0, double w, double h) {
  const double left = 64, right = 12, top = 28, bottom = 36;
  const double pw = w - left - right, ph = h - top - bottom;
  svg += "<g transform=\"translate(" + num(x0) + "," + num(y0) + ")\">\n";
  svg += "<rect x=\"0\" y=\"0\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"white\" stroke=\"#cccccc\"/>\n";
  svg += "<text x=\"" + num(w / 2) + "\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">" + xml_escape(p.title) +
         "</text>\n";
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& s : p.series)
    for (auto [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  if (xmin > xmax) {
    svg += "<text x=\"" + num(w / 2) + "\" y=\"" + num(h / 2) +
           "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#888888\">no data yet</text>\n</g>\n";
    return;
  }
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax == ymin) {
    const double d = std::abs(ymin) > 0 ? std::abs(ymin) * 0.05 : 1.0;
    ymin -= d, ymax += d;
  } else {
    const double pad = (ymax - ymin) * 0.05;
    ymin -= pad, ymax += pad;
  }
  auto X = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double y) { return top + (1.0 - (y - ymin) / (ymax - ymin)) * ph; };
  // axes and ticks
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) +
         "\" fill=\"none\" stroke=\"#444444\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double yv = ymin + (ymax - ymin) * i / 4.0, yp = Y(yv);
    svg += "<line x1=\"" + num(left) + "\" y1=\"" + num(yp) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(yp) +
           "\" stroke=\"#eeeeee\"/>\n";
    svg += "<text x=\"" + num(left - 4) + "\" y=\"" + num(yp + 4) + "\" text-anchor=\"end\" font-size=\"10\">" +
           tick_label(yv) + "</text>\n";
    const double xv = xmin + (xmax - xmin) * i / 4.0, xp = X(xv);
    svg += "<text x=\"" + num(xp) + "\" y=\"" + num(top + ph + 14) + "\" text-anchor=\"middle\" font-size=\"10\">" +
           tick_label(std::round(xv)) + "</text>\n";
  }
  svg += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(h - 6) +
         "\" text-anchor=\"middle\" font-size=\"11\">step</text>\n";
  for (size_t k = 0; k < p.series.size(); ++k) {
    const Series& s = p.series[k];
    const char* color = kColors[k % (sizeof kColors / sizeof kColors[0])];
    // At most ~2000 vertices per line (long runs log many thousand steps); the last is kept.
    const size_t stride = std::max<size_t>(1, s.points.size() / 2000);
    std::string pts;
    for (size_t i = 0; i < s.points.size(); ++i) {
      const auto [x, y] = s.points[i];
      if (std::isfinite(y) && (i % stride == 0 || i + 1 == s.points.size()))
        pts += num(X(x)) + "," + num(Y(y)) + " ";
    }
    if (s.points.size() == 1 || pts.find(' ') == pts.size() - 1) {
      for (auto [x, y] : s.points)
        if (std::isfinite(y))
          svg += "<circle cx=\"" + num(X(x)) + "\" cy=\"" + num(Y(y)) + "\" r=\"2.5\" fill=\"" + color + "\"/>\n";
    } else {
      svg += "<polyline fill=\"none\" stroke=\"" + std::string(color) + "\" stroke-width=\"1.5\" points=\"" + pts +
             "\"/>\n";
    }
    if (p.legend || p.series.size() > 1)
      svg += "<text x=\"" + num(left + 8) + "\" y=\"" + num(top + 14 + 13 * double(k)) + "\" font-size=\"11\" fill=\"" +
             color + "\">" + xml_escape(s.name) + "</text>\n";
  }
  svg += "</g>\n";
}

}  // namespace

std::string render_curves_svg(const std::vector<std::string>& metrics_lines) {
  Panel loss{"training loss", {{"loss", {}}}}, lr{"learning rate", {{"lr", {}}}},
      temp{"temperature (1 / exp(logit_scale))", {{"temperature", {}}}}, val{"validation", {}, true};
  std::map<std::string, size_t> val_index;
  for (const std::string& line : metrics_lines) {
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception&) {
      continue;
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
    const double step = j["step"].get<double>();
    const std::string type = j.value("type", "train");
    if (type == "train") {
      if (j.contains("loss") && j["loss"].is_number()) loss.series[0].points.emplace_back(step, j["loss"].get<double>());
      if (j.contains("lr") && j["lr"].is_number()) lr.series[0].points.emplace_back(step, j["lr"].get<double>());
      if (j.contains("temperature") && j["temperature"].is_number())
        temp.series[0].points.emplace_back(step, j["temperature"].get<double>());
    } else if (type == "val") {
      for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& k = it.key();
        if (k == "type" || k == "step" || k == "epoch" || k == "samples" || k == "elapsed" || !it->is_number())
          continue;
        auto [pos, fresh] = val_index.emplace(k, val.series.size());
        if (fresh) val.series.push_back({k, {}});
        val.series[pos->second].points.emplace_back(step, it->get<double>());
      }
    }
  }
  std::vector<const Panel*> panels = {&loss, &lr, &temp};
  if (!val.series.empty()) panels.push_back(&val);
  const double W = 480, H = 260;
  const int cols = 2;
  const int rows = int((panels.size() + cols - 1) / cols);
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(W * cols) + "\" height=\"" +
         num(H * rows) + "\" viewBox=\"0 0 " + num(W * cols) + " " + num(H * rows) +
         "\" font-family=\"sans-serif\">\n";
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(svg, *panels[i], W * double(i % cols), H * double(i / cols), W, H);
  svg += "</svg>\n";
  return svg;
}

}  // namespace clip::train
