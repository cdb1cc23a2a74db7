#include "daemon/libvirt_agent.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "common/handoff.h"
#include "daemon/arm_request.h"
#include "migration/handshake_io.h"
#include "migration/log.h"

namespace encmig {

namespace {
using Clock = std::chrono::steady_clock;

std::string uuid_of(virSecretPtr s) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  virSecretGetUUIDString(s, buf);
  return buf;
}

bool terminal(MigrationState st) {
  return st == MigrationState::kCompleted || st == MigrationState::kFailed || st == MigrationState::kCancelled;
}
}  // namespace

Result<std::unique_ptr<LibvirtAgent>> LibvirtAgent::create(Daemon& daemon) {
  std::unique_ptr<LibvirtAgent> a(new LibvirtAgent(daemon));
  const auto& o = daemon.options();
  std::string gname = o.qemu_group.empty() ? "libvirt-qemu" : o.qemu_group;
  if (gname != "root") {
    if (const struct group* g = getgrnam(gname.c_str())) a->qemu_gid_ = int(g->gr_gid);
    else if (!o.qemu_group.empty()) return make_error(ErrorCode::kInvalidArgument, "no such group: " + gname);
  }
  if (mkdir(o.run_dir.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(ErrorCode::kIo, "mkdir " + o.run_dir + ": " + std::string(strerror(errno)));
  return a;
}

void LibvirtAgent::run() {
  libvirt_quiet();
  const std::string& uri = d_.options().libvirt_uri;
  bool said_down = false;
  while (!stop_) {
    auto c = libvirt_open(uri);
    if (!c) {
      if (!said_down) log_line("libvirt: " + c.error().text() + " (retrying every second)");
      said_down = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    log_line("libvirt: watching " + uri + " for encmig key hand-offs");
    said_down = false;
    while (!stop_ && poll(c->get())) std::this_thread::sleep_for(kPollInterval);
    if (!stop_) log_line("libvirt: lost connection to " + uri + ": " + libvirt_error());
  }
}

bool LibvirtAgent::poll(virConnectPtr c) {
  virSecretPtr* list = nullptr;
  int n = virConnectListAllSecrets(c, &list, VIR_CONNECT_LIST_SECRETS_EPHEMERAL | VIR_CONNECT_LIST_SECRETS_NO_PRIVATE);
  if (n < 0) return false;
  std::set<std::string> present;
  for (int i = 0; i < n; i++) {
    VirSecret s(list[i]);
    if (virSecretGetUsageType(s.get()) != VIR_SECRET_USAGE_TYPE_TLS) continue;
    const char* u = virSecretGetUsageID(s.get());
    std::string usage = u ? u : "";
    bool probe = usage.rfind(handoff::kProbePrefix, 0) == 0;
    if (!probe && usage.rfind(handoff::kUsagePrefix, 0) != 0) continue;
    std::string uuid = uuid_of(s.get());
    present.insert(uuid);
    auto [it, fresh] = entries_.try_emplace(uuid);
    Entry& e = it->second;
    if (fresh) {
      e.uuid = uuid;
      e.usage = usage;
      e.probe = probe;
      e.id = usage.substr(probe ? std::strlen(handoff::kProbePrefix) : std::strlen(handoff::kUsagePrefix));
    }
    if (e.reply.is_null()) handle_new(c, s.get(), e);
    else refresh(c, e);
    // A secret its owner never removed: ours to clean up.
    if (e.done && Clock::now() - e.ended > kStaleAfterEnd) {
      log_line((e.probe ? "probe " : "migration ") + e.id + ": removing the hand-off secret left behind");
      virSecretUndefine(s.get());
    }
  }
  free(list);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (present.count(it->first)) {
      ++it;
      continue;
    }
    forget(it->second);
    it = entries_.erase(it);
  }
  return true;
}

void LibvirtAgent::handle_new(virConnectPtr c, virSecretPtr s, Entry& e) {
  char* xml = virSecretGetXMLDesc(s, 0);
  if (!xml) return;
  auto req = handoff::parse(xml);
  free(xml);
  if (!req) return answer(c, e, {{"state", "failed"}, {"detail", req.error().text()}});
  if (req->contains("state")) {  // already answered (by us before a restart, or another daemon)
    e.request = req.value();
    e.reply = req.value();
    e.done = true;
    e.ended = Clock::now();
    return;
  }
  e.request = req.value();
  json base{{"daemon", kSoftware}, {"data-port", d_.data_port()}, {"protocol", {wire::kVersion}}};
  if (e.probe) return answer_probe(c, e, base);
  auto mig = arm(s, e);
  if (!mig) {
    if (mig.error().code == ErrorCode::kNotReady) {  // value not set yet: try again next poll
      if (Clock::now() - e.seen < kValueWait) return;
    }
    log_line("migration " + e.id + ": hand-off refused: " + mig.error().text());
    json r = base;
    r["state"] = "failed";
    r["detail"] = mig.error().text();
    answer(c, e, r);
    e.done = true;
    e.ended = Clock::now();
    return;
  }
  e.mig = mig.value();
  json r = base;
  r["state"] = "ready";
  r["path"] = handoff::migrate_path(d_.options().run_dir, e.id);
  if (!e.mig->config().qemu_nbd_path.empty() || !e.mig->config().nbd_listen_path.empty())
    r["nbd-path"] = handoff::nbd_path(d_.options().run_dir, e.id);
  answer(c, e, r);
}

void LibvirtAgent::answer_probe(virConnectPtr c, Entry& e, json r) {
  r["state"] = "ready";
  if (auto it = e.request.find("peer"); it != e.request.end() && it->is_string()) {
    auto hp = HostPort::parse(it->get<std::string>());
    auto pr = hp ? probe_daemon(hp.value(), 2000) : Result<wire::ProbeReply>(hp.error());
    if (pr) r["peer-daemon"] = pr->software;
    else r["peer-error"] = pr.error().text();
  }
  answer(c, e, r);
  e.done = true;
  e.ended = Clock::now();
}

// The hand-off's steps: parse the request, check the destination daemon
// answers (source), take the key out of libvirt, make the socket directory,
// arm, and let QEMU's group use the sockets.
Result<std::shared_ptr<Migration>> LibvirtAgent::arm(virSecretPtr s, Entry& e) {
  const std::string& run = d_.options().run_dir;
  auto cfg = parse_arm_request(e.request, ArmChannel::kHandoff, e.id, run);
  if (!cfg) return cfg.error();
  if (cfg->role == MigrationRole::kSource) {
    // The destination daemon must answer before QEMU is told anything.
    auto pr = probe_daemon(cfg->peer, 3000);
    if (!pr)
      return make_error(pr.error().code, "destination encmigd at " + cfg->peer.str() + " does not answer: " + pr.error().text());
  }

  size_t size = 0;
  unsigned char* v = virSecretGetValue(s, &size, 0);
  if (!v) return make_error(ErrorCode::kNotReady, "the secret has no value yet");
  auto sec = secrets_from_value(v, size, cfg->id);
  secure_wipe(v, size);
  free(v);
  // The key now lives only here: leave libvirtd a single zero byte.
  unsigned char zero = 0;
  virSecretSetValue(s, &zero, 1, 0);
  if (!sec) return sec.error();

  prepare_dir(e.id);
  auto mig = d_.arm_migration(cfg.value(), std::move(sec.value()));
  if (!mig) {
    remove_dir(e.id);
    return mig.error();
  }
  chown_sockets(cfg.value());
  return mig;
}

void LibvirtAgent::chown_sockets(const MigrationConfig& cfg) {
  if (qemu_gid_ < 0 || cfg.role != MigrationRole::kSource) return;
  for (const std::string& p : {cfg.listen_path, cfg.nbd_listen_path})
    if (!p.empty()) (void)chown(p.c_str(), 0, gid_t(qemu_gid_));
}

void LibvirtAgent::answer(virConnectPtr c, Entry& e, json reply) {
  json d = e.request.is_object() ? e.request : json{{"encmig", handoff::kFormat}};
  for (auto& [k, v] : reply.items()) d[k] = v;
  e.reply = d;
  std::string xml = handoff::secret_xml(e.usage, d, e.uuid);
  virSecretPtr s = virSecretDefineXML(c, xml.c_str(), 0);
  if (!s) log_line("migration " + e.id + ": cannot answer through libvirt: " + libvirt_error());
  else virSecretFree(s);
}

void LibvirtAgent::refresh(virConnectPtr c, Entry& e) {
  if (!e.mig || e.done) return;
  MigrationState st = e.mig->state();
  if (st == MigrationState::kArmed && Clock::now() - e.seen > kIdleArmed) {
    log_line("migration " + e.id + ": armed but unused for 10 minutes, cancelling");
    (void)d_.end_migration(e.id, true);
    st = e.mig->state();
  }
  std::string name = state_name(st);
  if (e.reply.value("state", "") == name || (st == MigrationState::kArmed && e.reply.value("state", "") == "ready"))
    return;
  json r{{"state", name}};
  if (terminal(st)) {
    json s = json::parse(e.mig->status_json());
    r["status"] = s;
    if (s.contains("error")) r["detail"] = s["error"];
    e.done = true;
    e.ended = Clock::now();
  }
  answer(c, e, r);
}

void LibvirtAgent::forget(Entry& e) {
  if (e.mig) {
    bool live = !terminal(e.mig->state());
    (void)d_.end_migration(e.id, live);
    log_line("migration " + e.id + (live ? ": hand-off secret removed while streams were open; cancelled"
                                       : ": hand-off secret removed; migration forgotten"));
    remove_dir(e.id);
    e.mig.reset();
  }
}

void LibvirtAgent::prepare_dir(const std::string& id) {
  std::string dir = d_.options().run_dir + "/" + id;
  mkdir(dir.c_str(), 0770);
  chmod(dir.c_str(), 0770);
  if (qemu_gid_ >= 0) (void)chown(dir.c_str(), 0, gid_t(qemu_gid_));
}

void LibvirtAgent::remove_dir(const std::string& id) {
  const std::string& run = d_.options().run_dir;
  unlink(handoff::migrate_path(run, id).c_str());
  unlink(handoff::nbd_path(run, id).c_str());
  rmdir((run + "/" + id).c_str());
}

}  // namespace encmig
