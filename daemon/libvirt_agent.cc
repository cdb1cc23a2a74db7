#include "daemon/libvirt_agent.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <set>
#include <thread>

#include "common/json.h"
#include "daemon/arm_request.h"
#include "daemon/nft_table.h"
#include "migration/handshake_io.h"
#include "migration/log.h"

namespace encmig {

namespace {
using Clock = std::chrono::steady_clock;

// vm.unprivileged_userfaultfd, which postcopy needs when QEMU runs
// unprivileged (-1 if the kernel has no such sysctl).
int unprivileged_userfaultfd() {
  FILE* f = std::fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
  int v = -1;
  if (f) {
    if (std::fscanf(f, "%d", &v) != 1) v = -1;
    std::fclose(f);
  }
  return v;
}

std::string uuid_of(virSecretPtr s) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  virSecretGetUUIDString(s, buf);
  return buf;
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
  std::ifstream conf(o.qemu_conf);
  std::stringstream text;
  text << conf.rdbuf();
  parse_qemu_conf_ports(text.str(), a->port_min_, a->port_max_);
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
  // Persistent ones too: a hand-off secret redefined as persistent must be
  // seen (and refused), not silently ignored.
  int n = virConnectListAllSecrets(c, &list, VIR_CONNECT_LIST_SECRETS_NO_PRIVATE);
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
    // Every parser is written not to throw; this is the last line of defence
    // against a secret's contents (anyone allowed to define secrets writes them).
    try {
      if (e.work) collect(c, e);
      else if (e.reply.is_null() && !e.done) handle_new(c, s.get(), e);
      else refresh(c, e);
    } catch (const std::exception& ex) {
      log_line("hand-off " + e.id + ": internal error: " + ex.what());
      e.done = true;
      e.ended = Clock::now();
    }
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

// A new secret: for a migration, the key leaves libvirt first; then the
// request is checked against it, and the slow part runs off this thread.
void LibvirtAgent::handle_new(virConnectPtr c, virSecretPtr s, Entry& e) {
  char* xml = virSecretGetXMLDesc(s, 0);
  if (!xml) return;
  std::string x(xml);
  free(xml);
  const bool ephemeral = xml_attribute(x, "secret", "ephemeral") == "yes";
  auto req = handoff::parse(x);
  if (e.probe) {
    if (req && req->contains("state")) return void((e.done = true, e.ended = Clock::now()));
    if (!req) return fail(c, e, req.error().text());
    e.request = req.value();
    return start_probe(e);
  }
  // A migration's key leaves libvirt before anything else happens.
  size_t size = 0;
  unsigned char* v = virSecretGetValue(s, &size, 0);
  if (!v) {
    virResetLastError();
    if (req && req->contains("state")) return void((e.done = true, e.ended = Clock::now()));
    if (Clock::now() - e.seen < kValueWait) return;  // not set yet: look again at the next poll
    return fail(c, e, "the secret has no value");
  }
  const bool already_taken = size == 1 && v[0] == 0;
  auto id = id_from_hex(e.id);
  auto sec = id ? secrets_from_value(v, size, id.value()) : Result<MigrationSecrets>(make_error(ErrorCode::kInvalidArgument, "bad migration id in the secret's name"));
  secure_wipe(v, size);
  free(v);
  if (!already_taken) {
    unsigned char zero = 0;  // the key now lives only here: leave libvirtd a single zero byte
    virSecretSetValue(s, &zero, 1, 0);
  }
  if (req && req->contains("state")) {  // answered already (by us before a restart, or by someone else)
    e.request = req.value();
    e.reply = req.value();
    e.done = true;
    e.ended = Clock::now();
    return;
  }
  if (!ephemeral) return fail(c, e, "a hand-off secret must be ephemeral (this one would keep the key on disk)");
  if (!sec) return fail(c, e, sec.error().text());
  auto keys = handoff::MacKeys::derive(sec.value());
  if (!keys) return fail(c, e, keys.error().text());
  e.answer_key = std::move(keys->answer);
  if (!req) return fail(c, e, req.error().text());
  e.request = req.value();
  if (auto st = handoff::verify(e.request, keys->request); !st) return fail(c, e, "hand-off request refused: " + st.error().text());
  json body = e.request;
  body.erase("mac");
  auto cfg = parse_arm_request(body, ArmChannel::kHandoff, d_.options().run_dir, e.id);
  if (!cfg) return fail(c, e, cfg.error().text());
  cfg->socket_gid = qemu_gid_;
  if (cfg->transparent && (cfg->qemu_tcp.port < port_min_ || cfg->qemu_tcp.port > port_max_))
    return fail(c, e, "qemu-address " + cfg->qemu_tcp.str() + " is outside libvirt's migration ports " +
                          std::to_string(port_min_) + "-" + std::to_string(port_max_));
  if (cfg->transparent) {  // the domain's name here: by its UUID (the source may not know a --dname)
    VirDomain dom(virDomainLookupByUUIDString(c, cfg->domain_uuid.c_str()));
    const char* name = dom ? virDomainGetName(dom.get()) : nullptr;
    if (!name) {
      virResetLastError();
      return fail(c, e, "no domain with UUID " + cfg->domain_uuid + " on this host");
    }
    cfg->local_peer.libvirt_domain = name;
  }
  start_arm(c, e, std::move(cfg.value()), std::move(sec.value()));
}

void LibvirtAgent::start_probe(Entry& e) {
  auto w = std::make_shared<Work>();
  e.work = w;
  json base{{"daemon", kSoftware}, {"data-port", d_.data_port()}, {"protocol", d_.protocol_versions()}, {"state", "ready"}};
  std::string peer = json_string(e.request, "peer");
  std::thread([w, base, peer] {
    json r = base;
    if (!peer.empty()) {
      auto hp = HostPort::parse(peer);
      auto pr = hp ? probe_daemon(hp.value(), 2000) : Result<wire::ProbeReply>(hp.error());
      if (pr) r["peer-daemon"] = pr->software;
      else r["peer-error"] = pr.error().text();
    }
    std::lock_guard<std::mutex> g(w->mu);
    w->reply = r;
    w->ready = true;
  }).detach();
}

// The source first checks that the destination daemon answers, so QEMU is
// told nothing it cannot do; then the socket directory and the migration.
void LibvirtAgent::start_arm(virConnectPtr, Entry& e, MigrationConfig cfg, MigrationSecrets sec) {
  auto w = std::make_shared<Work>();
  e.work = w;
  Daemon& d = d_;
  std::string id = e.id;
  int gid = qemu_gid_;
  auto held = std::make_shared<MigrationSecrets>(std::move(sec));
  std::thread([w, &d, id, gid, cfg, held]() mutable {
    json r{{"daemon", kSoftware}, {"data-port", d.data_port()}, {"protocol", d.protocol_versions()},
           {"unprivileged-userfaultfd", unprivileged_userfaultfd()}};
    Result<std::shared_ptr<Migration>> mig = make_error(ErrorCode::kInternal);
    const bool source = cfg.role == MigrationRole::kSource;
    auto pr = source ? probe_daemon(cfg.peer, 3000) : Result<wire::ProbeReply>(wire::ProbeReply{});
    if (!pr) {
      mig = make_error(pr.error().code, "destination encmigd at " + cfg.peer.str() + " does not answer: " + pr.error().text());
    } else if (auto st = cfg.transparent ? Status{} : make_private_dir(d.options().run_dir, id, source ? 0750 : 0770, gid); !st) {
      mig = st.error();
    } else {
      mig = d.arm_migration(cfg, std::move(*held));
      if (!mig) remove_private_dir(d.options().run_dir, id, {"migrate.sock", "nbd.sock"});
    }
    *held = MigrationSecrets{};
    if (mig) {
      r["state"] = "ready";
      if (!cfg.transparent) r["path"] = handoff::migrate_path(d.options().run_dir, id);
      if (!cfg.qemu_nbd_path.empty() || !cfg.nbd_listen_path.empty()) r["nbd-path"] = handoff::nbd_path(d.options().run_dir, id);
    } else {
      r["state"] = "failed";
      r["detail"] = mig.error().text();
      log_line("migration " + id + ": hand-off refused: " + mig.error().text());
    }
    std::lock_guard<std::mutex> g(w->mu);
    if (mig && w->abandoned) {  // the secret went away meanwhile
      (void)d.end_migration(id, true, "hand-off secret removed before the daemon was ready");
      remove_private_dir(d.options().run_dir, id, {"migrate.sock", "nbd.sock"});
      return;
    }
    w->reply = r;
    if (mig) w->mig = mig.value();
    w->ready = true;
  }).detach();
}

void LibvirtAgent::collect(virConnectPtr c, Entry& e) {
  std::unique_lock<std::mutex> g(e.work->mu);
  if (!e.work->ready) return;
  json r = std::move(e.work->reply);
  e.mig = e.work->mig;
  g.unlock();
  e.work.reset();
  if (e.probe || !e.mig) {
    e.done = true;
    e.ended = Clock::now();
  }
  answer(c, e, r);
}

void LibvirtAgent::answer(virConnectPtr c, Entry& e, json reply) {
  json d = e.request.is_object() ? e.request : json{{"encmig", handoff::kFormat}};
  d.erase("mac");
  for (auto& [k, v] : reply.items()) d[k] = v;
  if (e.answer_key) {
    d["seq"] = ++e.seq;
    (void)handoff::sign(d, *e.answer_key);
  }
  e.reply = d;
  std::string xml = handoff::secret_xml(e.usage, d, e.uuid);
  virSecretPtr s = virSecretDefineXML(c, xml.c_str(), 0);
  if (!s) log_line("migration " + e.id + ": cannot answer through libvirt: " + libvirt_error());
  else virSecretFree(s);
}

void LibvirtAgent::fail(virConnectPtr c, Entry& e, const std::string& detail) {
  log_line((e.probe ? "probe " : "migration ") + e.id + ": hand-off refused: " + detail);
  e.done = true;
  e.ended = Clock::now();
  answer(c, e, {{"state", "failed"}, {"detail", detail}, {"daemon", kSoftware}});
}

void LibvirtAgent::refresh(virConnectPtr c, Entry& e) {
  if (!e.mig || e.done) return;
  MigrationState st = e.mig->state();
  std::string name = state_name(st);
  std::string said = json_string(e.reply, "state");
  // An outage is news too: encmig shows the pause and the resume. So is a
  // real change in what may not have reached the peer yet (encmig lowers
  // QEMU's downtime limit by it); a small one is not worth a new answer.
  const auto links = e.mig->link_totals();
  const int64_t said_in_flight = json_int(e.reply, "in-flight");
  const int64_t in_flight_step = std::max<int64_t>(int64_t(1) << 20, said_in_flight / 8);
  const bool link_news = !terminal(st) && (int64_t(links.reconnecting) != json_int(e.reply, "reconnecting") ||
                                           int64_t(links.resumes) != json_int(e.reply, "resumes") ||
                                           std::llabs(int64_t(links.in_flight) - said_in_flight) >= in_flight_step);
  if (!link_news && (said == name || (st == MigrationState::kArmed && said == "ready"))) return;
  json r{{"state", st == MigrationState::kArmed && said == "ready" ? "ready" : name}};
  if (!terminal(st)) {
    r["reconnecting"] = links.reconnecting;
    r["resumes"] = links.resumes;
    r["in-flight"] = links.in_flight;
  }
  if (terminal(st)) {
    json s = json::parse(e.mig->status_json(), nullptr, false);
    r["status"] = s;
    if (s.is_object() && s.contains("error")) r["detail"] = s["error"];
    e.done = true;
    e.ended = Clock::now();
  }
  answer(c, e, r);
}

void LibvirtAgent::forget(Entry& e) {
  if (e.work) {
    std::lock_guard<std::mutex> g(e.work->mu);
    e.work->abandoned = true;
    if (e.work->mig) e.mig = e.work->mig;  // armed just now
  }
  if (e.mig) {
    MigrationState st = e.mig->state();
    if (e.mig->config().transparent && st == MigrationState::kActive)
      // The source's encmigd removes the secret when its streams have closed:
      // ours end as they finish (with their FIN), or fail after the grace.
      (void)d_.end_migration(e.id, false, "the source's encmigd ended it");
    else if (!terminal(st))
      (void)d_.end_migration(e.id, true, st == MigrationState::kArmed ? "hand-off secret removed before any stream opened"
                                                                      : "hand-off secret removed while streams were open");
    else
      (void)d_.end_migration(e.id, false);
    remove_private_dir(d_.options().run_dir, e.id, {"migrate.sock", "nbd.sock"});
    e.mig.reset();
  }
  e.answer_key.reset();
}

}  // namespace encmig
