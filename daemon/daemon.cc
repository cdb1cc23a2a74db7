#include "daemon/daemon.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <thread>

#include "daemon/arm_request.h"
#include "daemon/metrics.h"
#include "migration/log.h"

namespace encmig {

namespace {
const json kVersionJson{{"qemu", {{"major", 0}, {"minor", 1}, {"micro", 0}}}, {"package", kSoftware}};
const char* const kCommands[] = {"qmp_capabilities", "query-version", "query-commands", "query-command-arguments",
                                 "query-encmig-capabilities", "migration-arm", "query-migrations", "migration-end",
                                 "migration-cancel", "query-stats", "query-transparent"};

std::string str_arg(const json& a, const char* k) {
  auto it = a.find(k);
  return it != a.end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::create(DaemonOptions opts) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->opts_ = std::move(opts);
  // The run directory: root's; others may pass through but not list it, so
  // the per-migration directories' names (the migration ids) stay private.
  if (mkdir(d->opts_.run_dir.c_str(), 0711) != 0 && errno != EEXIST)
    return make_error(ErrorCode::kIo, "mkdir " + d->opts_.run_dir + ": " + errno_text(errno));
  {
    Fd dir(::open(d->opts_.run_dir.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (!dir.valid() || fstat(dir.get(), &st) != 0)
      return make_error(ErrorCode::kIo, "open " + d->opts_.run_dir + ": " + errno_text(errno));
    if (st.st_uid != geteuid())
      return make_error(ErrorCode::kPolicy, "the run directory " + d->opts_.run_dir + " must belong to encmigd's user");
    fchmod(dir.get(), 0711);
  }
  // The AES-GCM engine: proven by known answers, then the fastest (or the pinned one).
  auto aead = select_aead_engine(d->opts_.aead_engine);
  if (!aead) return aead.error();
  d->aead_ = std::move(aead.value());
  // Socket buffers: decided once, and any limit that costs throughput is said once.
  d->sizing_ = size_socket_buffers(d->opts_.data.socket.buffer_bytes);
  // A black-holed connection breaks as soon as the keepalive would notice.
  d->opts_.data.socket.user_timeout_ms = d->opts_.data.link.silence_ms;
  if (!d->sizing_.forced) d->opts_.data.socket.buffer_bytes = 0;
  auto data = DataPlane::create(d->opts_.data);
  if (!data) return data.error();
  d->data_ = std::move(data.value());
  // Before the control socket: a daemon that cannot intercept never looks ready.
  if (d->opts_.intercept) {
    auto i = Interceptor::create(*d, *d->opts_.intercept);
    if (!i) return i.error();
    d->intercept_ = std::move(i.value());
  }
  Daemon* self = d.get();
  auto q = QmpServer::create(d->opts_.control_path, kVersionJson,
                             [self](const std::string& c, json& a) { return self->command(c, a); });
  if (!q) return q.error();
  d->qmp_ = std::move(q.value());
  return d;
}

Daemon::~Daemon() {
  // The interceptor's detached threads (a connection being identified, a
  // plain relay) may outlive run(): it is stopped, its table removed, and left
  // to the process's exit rather than freed under them.
  if (intercept_) {
    intercept_->stop();
    (void)intercept_.release();
  }
}

void Daemon::run() {
  data_->start();
  log_line(std::string(kSoftware) + " listening on " + HostPort{opts_.data.listen.host, data_->port()}.str() +
           ", control " + opts_.control_path + ", socket buffers " +
           (sizing_.forced ? std::to_string(sizing_.want >> 20) + " MiB (forced)"
                           : "autotuned up to " + std::to_string(sizing_.autotune_rcv_max >> 10) + " KiB"));
  if (!sizing_.note.empty()) log_line("warning: " + sizing_.note);
  log_line(aead_.describe());
  for (auto& e : aead_.engines)
    if (!e.kat_passed) log_line("warning: AES-256-GCM engine " + std::string(aead_engine_name(e.id)) + " not used: " + e.detail);
  if (intercept_) {
    if (auto st = intercept_->start(); !st) {
      // Fail closed: without the table, migrations would leave in plain text
      // while the operator believes they are intercepted.
      log_line("transparent mode: cannot start: " + st.error().text() + "; encmigd stops");
      data_->stop();
      return;
    }
  }
  std::atomic<bool> done{false};
  std::thread metrics;
  if (!opts_.metrics_file.empty()) {
    metrics = std::thread([this, &done] {
      while (!done) {
        write_metrics();
        for (int i = 0; i < 100 && !done; i++) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  qmp_->run();
  done = true;
  if (metrics.joinable()) metrics.join();
  if (intercept_) intercept_->stop();
  if (!opts_.metrics_file.empty()) write_metrics();
  data_->stop();
}

void Daemon::request_stop() { qmp_->stop(); }

Result<std::shared_ptr<Migration>> Daemon::arm_migration(MigrationConfig cfg, MigrationSecrets sec) {
  std::string idh = id_hex(cfg.id);
  auto events = [this](const std::string& ev, const std::string& data) { qmp_->emit(ev, json::parse(data, nullptr, false)); };
  DataPlane* dp = data_.get();
  auto mig = std::make_shared<Migration>(cfg, std::move(sec), events, [dp](ErrorCode c) { dp->count_failure(c); });
  if (auto st = data_->add(mig); !st) return st.error();
  if (cfg.role == MigrationRole::kSource) {
    if (auto st = data_->listen_local(mig); !st) {
      mig->end(true);
      data_->take(idh);
      return st.error();
    }
  }
  armed_total_++;
  log_line("migration " + idh + " armed as " + (cfg.role == MigrationRole::kSource ? "source" : "destination"));
  return mig;
}

Result<json> Daemon::end_migration(const std::string& id, bool cancel, const std::string& reason) {
  auto mig = data_->take(id);
  if (!mig) return make_error(ErrorCode::kUnknownMigration, id);
  mig->end(cancel, reason);
  data_->retire(mig);
  json st = status_of(*mig);
  {
    std::lock_guard<std::mutex> g(ended_mu_);
    for (const char* k : {"bytes-out", "bytes-in", "resumes"})
      ended_totals_[k] = ended_totals_[k].get<double>() + (st.contains(k) && st[k].is_number() ? st[k].get<double>() : 0);
  }
  return st;
}

json Daemon::status_of(const Migration& m) {
  json j = json::parse(m.status_json());
  if (m.config().role == MigrationRole::kSource) {
    auto c = data_->preconnected(m.id());
    j["connections-made-at-arm"] = {{"ready", c.ready}, {"pending", c.pending}, {"failed", c.failed}, {"used", c.used}};
  }
  return j;
}

Result<json> Daemon::arm(json& args) {
  auto sec = parse_arm_secrets(args);  // first: it wipes the key's text
  auto cfg = parse_arm_request(args, ArmChannel::kQmp, opts_.run_dir);
  if (!cfg) return cfg.error();
  if (!sec) return sec.error();
  sec->id = cfg->id;
  std::string idh = id_hex(cfg->id);
  auto mig = arm_migration(std::move(cfg.value()), std::move(sec.value()));
  if (!mig) return mig.error();
  return json{{"id", idh}, {"state", "armed"}};
}

void Daemon::write_metrics() {
  json migrations = json::array();
  for (auto& m : data_->list()) migrations.push_back(status_of(*m));
  json ended;
  {
    std::lock_guard<std::mutex> g(ended_mu_);
    ended = ended_totals_;
  }
  if (!write_file_atomically(opts_.metrics_file, prometheus_text(stats_json(), migrations, ended)))
    log_.log("metrics", "cannot write " + opts_.metrics_file + ": " + errno_text(errno));
}

json Daemon::protocol_versions() const {
  json versions = json::array();
  for (uint16_t v = wire::kMinVersion; v <= wire::kVersion; v++) versions.push_back(v);
  return versions;
}

json Daemon::aead_engines_json() const {
  json a = json::array();
  for (auto& e : aead_.engines) {
    json j{{"name", aead_engine_name(e.id)}, {"known-answers", e.kat_passed ? "passed" : "failed"}};
    if (!e.kat_passed) j["error"] = e.detail;
    if (e.seal_open_mb_s > 0) j["seal-open-mbytes-per-s"] = std::round(e.seal_open_mb_s);
    a.push_back(j);
  }
  return a;
}

json Daemon::capabilities_json() const {
  return json{{"protocol-versions", protocol_versions()},
              {"resume", true},
              {"resend-budget", data_->pool().budget()},
              {"outage-budget-ms", opts_.data.link.outage_budget.count()},
              {"ciphers", {"aes-256-gcm"}},
              {"aead-engine", aead_engine_name(aead_.chosen)},
              {"aead-engine-pinned", aead_.pinned},
              {"aead-engines", aead_engines_json()},
              {"data-port", data_->port()},
              {"max-record", wire::kMaxRecordPayload},
              {"socket-buffer", opts_.data.socket.buffer_bytes},
              {"socket-buffer-mode", sizing_.forced ? "forced" : "autotuning"},
              {"autotuning-max", {{"receive", sizing_.autotune_rcv_max}, {"send", sizing_.autotune_snd_max}}},
              {"limits", sizing_.note.empty() ? json::array() : json::array({sizing_.note})}};
}

json Daemon::stats_json() {
  DataPlane::Stats s = data_->stats();
  return json{{"migrations-armed", armed_total_.load()},
              {"migrations-open", s.open},
              {"keys-held", s.keys_held},
              {"connections-rejected", s.rejected_connections},
              {"connections-pending", s.pending},
              {"pre-auth-refused", s.refused},
              {"local-peers-refused", s.local_refused},
              {"streams-preconnected", s.preconnect_used},
              {"streams-connected-late", s.preconnect_unused},
              {"probes", s.probes},
              {"resend-budget-bytes", data_->pool().budget()},
              {"resend-budget-used-bytes", data_->pool().used()},
              {"migrations-refused-budget", s.refused_budget},
              {"windows-capped-by-budget", s.windows_capped},
              {"buffers-not-locked", s.buffers_unlocked},
              {"failures", s.failures},
              {"transparent", intercept_ ? intercept_->stats() : json(nullptr)}};
}

Result<json> Daemon::command(const std::string& cmd, json& args) {
  if (cmd == "query-version") return kVersionJson;
  if (cmd == "query-encmig-capabilities") return capabilities_json();
  if (cmd == "query-commands") {
    json l = json::array();
    for (const char* c : kCommands) l.push_back({{"name", c}});
    return l;
  }
  if (cmd == "query-command-arguments") return json{{"migration-arm", arm_arguments_json()}};
  if (cmd == "migration-arm") return arm(args);
  if (cmd == "migration-end" || cmd == "migration-cancel") return end_migration(str_arg(args, "id"), cmd == "migration-cancel");
  if (cmd == "query-stats") return stats_json();
  if (cmd == "query-transparent")
    return intercept_ ? intercept_->query() : json{{"rule", nullptr}, {"recent", json::array()}};
  if (cmd == "query-migrations") {
    // Ask each migration without holding the table's lock: a failing
    // migration holds its own lock while it counts the failure.
    json out = json::array();
    for (auto& m : data_->list(str_arg(args, "id"))) out.push_back(status_of(*m));
    return out;
  }
  return make_error(ErrorCode::kCommandNotFound, cmd);
}

}  // namespace encmig
