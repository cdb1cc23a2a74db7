#include "control/libvirt_agent.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "control/handoff.h"
#include "control/qmp_client.h"

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
      if (!said_down) d_.log("libvirt: " + c.error().text() + " (retrying every second)");
      said_down = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    d_.log("libvirt: watching " + uri + " for encmig key hand-offs");
    said_down = false;
    while (!stop_ && poll(c->get())) std::this_thread::sleep_for(kPollInterval);
    if (!stop_) d_.log("libvirt: lost connection to " + uri + ": " + libvirt_error());
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
      d_.log((e.probe ? "probe " : "migration ") + e.id + ": removing the hand-off secret left behind");
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
  if (e.probe) {
    json r = base;
    r["state"] = "ready";
    if (e.request.contains("peer") && e.request["peer"].is_string()) {
      auto hp = HostPort::parse(e.request["peer"].get<std::string>());
      auto pr = hp ? probe_daemon(hp.value(), 2000) : Result<wire::ProbeReply>(hp.error());
      if (pr) r["peer-daemon"] = pr->software;
      else r["peer-error"] = pr.error().text();
    }
    answer(c, e, r);
    e.done = true;
    e.ended = Clock::now();
    return;
  }
  auto mig = arm(s, e);
  if (!mig) {
    if (mig.error().code == ErrorCode::kNotReady) {  // value not set yet: try again next poll
      if (Clock::now() - e.seen < kValueWait) return;
    }
    d_.log("migration " + e.id + ": hand-off refused: " + mig.error().text());
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
  if (e.request.value("nbd", false)) r["nbd-path"] = handoff::nbd_path(d_.options().run_dir, e.id);
  answer(c, e, r);
}

Result<std::shared_ptr<Migration>> LibvirtAgent::arm(virSecretPtr s, Entry& e) {
  const json& q = e.request;
  auto id = id_from_hex(e.id);
  if (!id) return id.error();
  std::string role = q.value("role", "");
  if (role != "source" && role != "destination")
    return make_error(ErrorCode::kInvalidArgument, "role must be 'source' or 'destination'");
  MigrationConfig cfg;
  cfg.id = id.value();
  cfg.role = role == "source" ? MigrationRole::kSource : MigrationRole::kDestination;
  cfg.expected_streams = q.value("streams", 0);
  bool nbd = q.value("nbd", false);
  const std::string& run = d_.options().run_dir;
  if (cfg.role == MigrationRole::kSource) {
    auto peer = HostPort::parse(q.value("peer", ""));
    if (!peer) return peer.error();
    cfg.peer = peer.value();
    // The destination daemon must answer before QEMU is told anything.
    auto pr = probe_daemon(cfg.peer, 3000);
    if (!pr) return make_error(pr.error().code, "destination encmigd at " + q.value("peer", "") + " does not answer: " +
                                                    pr.error().text());
    cfg.listen_path = handoff::migrate_path(run, e.id);
    if (nbd) cfg.nbd_listen_path = handoff::nbd_path(run, e.id);
  } else {
    cfg.qemu_path = handoff::migrate_path(run, e.id);
    if (nbd) cfg.qemu_nbd_path = handoff::nbd_path(run, e.id);
  }

  size_t size = 0;
  unsigned char* v = virSecretGetValue(s, &size, 0);
  if (!v) return make_error(ErrorCode::kNotReady, "the secret has no value yet");
  MigrationSecrets sec;
  sec.id = cfg.id;
  if (size == handoff::kValueSize) {
    auto k = Secret::from_bytes({v, wire::kKeySize});
    if (k) sec.key = std::move(k.value());
    std::memcpy(sec.nonce.data(), v + wire::kKeySize, sec.nonce.size());
  }
  secure_wipe(v, size);
  free(v);
  // The key now lives only here: leave libvirtd a single zero byte.
  unsigned char zero = 0;
  virSecretSetValue(s, &zero, 1, 0);
  if (size != handoff::kValueSize) return make_error(ErrorCode::kInvalidArgument, "the secret's value has the wrong size");
  if (sec.key.empty()) return make_error(ErrorCode::kInternal, "cannot hold the key");

  prepare_dir(e.id);
  auto mig = d_.arm_migration(std::move(cfg), std::move(sec));
  if (!mig) {
    remove_dir(e.id);
    return mig.error();
  }
  if (qemu_gid_ >= 0 && role == "source") {
    (void)chown(handoff::migrate_path(run, e.id).c_str(), 0, gid_t(qemu_gid_));
    if (nbd) (void)chown(handoff::nbd_path(run, e.id).c_str(), 0, gid_t(qemu_gid_));
  }
  return mig;
}

void LibvirtAgent::answer(virConnectPtr c, Entry& e, json reply) {
  json d = e.request.is_object() ? e.request : json{{"encmig", handoff::kFormat}};
  for (auto& [k, v] : reply.items()) d[k] = v;
  e.reply = d;
  std::string xml = handoff::secret_xml(e.usage, d, e.uuid);
  virSecretPtr s = virSecretDefineXML(c, xml.c_str(), 0);
  if (!s) d_.log("migration " + e.id + ": cannot answer through libvirt: " + libvirt_error());
  else virSecretFree(s);
}

void LibvirtAgent::refresh(virConnectPtr c, Entry& e) {
  if (!e.mig || e.done) return;
  MigrationState st = e.mig->state();
  if (st == MigrationState::kArmed && Clock::now() - e.seen > kIdleArmed) {
    d_.log("migration " + e.id + ": armed but unused for 10 minutes, cancelling");
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
    d_.log("migration " + e.id + (live ? ": hand-off secret removed while streams were open; cancelled"
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
