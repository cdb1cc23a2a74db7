#include "daemon/daemon.h"

#include "daemon/arm_request.h"
#include "migration/log.h"

namespace encmig {

namespace {
const json kVersionJson{{"qemu", {{"major", 0}, {"minor", 1}, {"micro", 0}}}, {"package", kSoftware}};
const char* const kCommands[] = {"qmp_capabilities", "query-version", "query-commands", "query-command-arguments",
                                 "query-encmig-capabilities", "migration-arm", "query-migrations", "migration-end",
                                 "migration-cancel", "query-stats"};

std::string str_arg(const json& a, const char* k) {
  auto it = a.find(k);
  return it != a.end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::create(DaemonOptions opts) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->opts_ = std::move(opts);
  DataPlaneOptions dp;
  dp.listen = d->opts_.data_listen;
  dp.socket = {d->opts_.socket_buffer, true, d->opts_.notsent_lowat};
  dp.handshake_timeout_ms = d->opts_.handshake_timeout_ms;
  dp.order_timeout_ms = d->opts_.order_timeout_ms;
  dp.software = kSoftware;
  auto data = DataPlane::create(std::move(dp));
  if (!data) return data.error();
  d->data_ = std::move(data.value());
  Daemon* self = d.get();
  auto q = QmpServer::create(d->opts_.control_path, kVersionJson,
                             [self](const std::string& c, json& a) { return self->command(c, a); });
  if (!q) return q.error();
  d->qmp_ = std::move(q.value());
  return d;
}

void Daemon::run() {
  data_->start();
  log_line(std::string(kSoftware) + " listening on " + HostPort{opts_.data_listen.host, data_->port()}.str() +
           ", control " + opts_.control_path);
  qmp_->run();
}

void Daemon::stop() {
  data_->stop();
  qmp_->stop();
}

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

Result<json> Daemon::end_migration(const std::string& id, bool cancel) {
  auto mig = data_->take(id);
  if (!mig) return make_error(ErrorCode::kUnknownMigration, id);
  mig->end(cancel);
  return json::parse(mig->status_json());
}

Result<json> Daemon::arm(json& args) {
  auto sec = parse_arm_secrets(args);  // first: it wipes the key's text
  auto cfg = parse_arm_request(args, ArmChannel::kQmp);
  if (!cfg) return cfg.error();
  if (!sec) return sec.error();
  sec->id = cfg->id;
  std::string idh = id_hex(cfg->id);
  auto mig = arm_migration(std::move(cfg.value()), std::move(sec.value()));
  if (!mig) return mig.error();
  return json{{"id", idh}, {"state", "armed"}};
}

json Daemon::capabilities_json() const {
  return json{{"protocol-versions", {wire::kVersion}},
              {"ciphers", {"aes-256-gcm"}},
              {"data-port", data_->port()},
              {"max-record", wire::kMaxRecordPayload},
              {"socket-buffer", opts_.socket_buffer}};
}

json Daemon::stats_json() {
  DataPlane::Stats s = data_->stats();
  return json{{"migrations-armed", armed_total_.load()},
              {"migrations-open", s.open},
              {"connections-rejected", s.rejected_connections},
              {"probes", s.probes},
              {"failures", s.failures}};
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
  if (cmd == "query-migrations") {
    // Ask each migration without holding the table's lock: a failing
    // migration holds its own lock while it counts the failure.
    json out = json::array();
    for (auto& m : data_->list(str_arg(args, "id"))) out.push_back(json::parse(m->status_json()));
    return out;
  }
  return make_error(ErrorCode::kCommandNotFound, cmd);
}

}  // namespace encmig
