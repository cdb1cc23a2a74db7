#include "cli/qmp_direct.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>

#include "common/switchover.h"
#include "common/json.h"
#include "common/qmp.h"
#include "crypto/encoding.h"
#include "migration/key_schedule.h"
#include "migration/session.h"

namespace encmig {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

json fail_summary(const std::string& msg) { return json{{"result", "failed"}, {"error", msg}}; }

Status set_multifd(QmpClient& q, int channels) {
  if (channels <= 0) return {};
  auto r = q.execute("migrate-set-capabilities",
                     {{"capabilities", json::array({{{"capability", "multifd"}, {"state", true}}})}});
  if (!r) return r.error();
  auto p = q.execute("migrate-set-parameters", {{"multifd-channels", channels}});
  if (!p) return p.error();
  return {};
}

// QEMU's name for the postcopy preempt channel: "postcopy-preempt" since
// QEMU 8.0, "x-postcopy-preempt" (experimental) in 7.x.
Result<std::string> preempt_capability(QmpClient& q) {
  auto caps = q.execute("query-migrate-capabilities");
  if (!caps) return caps.error();
  std::string found;
  if (caps->is_array())
    for (auto& c : *caps) {
      auto n = json_string(c, "capability");
      if (n == "postcopy-preempt") return n;
      if (n == "x-postcopy-preempt") found = n;
    }
  if (!found.empty()) return found;
  return make_error(ErrorCode::kInvalidArgument, "this QEMU has no postcopy-preempt capability");
}

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, i++;
  char s[32];
  std::snprintf(s, sizeof s, "%.1f %s", b, u[i]);
  return s;
}

// A daemon's account of the migration: "" while it goes on, else why it failed.
// *slow: it did not answer in time (busy, not dead: no verdict), and a late
// reply may still come on this connection.
std::string daemon_failure(QmpClient* d, const std::string& id, bool* slow = nullptr) {
  if (!d) return "";
  auto m = d->execute("query-migrations", {{"id", id}});
  if (!m && m.error().code == ErrorCode::kTimeout) {
    if (slow) *slow = true;
    return "";
  }
  // A daemon whose socket closed has died (or was killed): its streams are
  // gone, and no outage budget brings them back.
  if (!m && m.error().code != ErrorCode::kPeerError) return "encmigd stopped answering (" + m.error().message() + ")";
  if (!m || !m->is_array() || m->empty()) return "";
  const json& st = (*m)[0];
  std::string state = json_string(st, "state");
  if (state != "failed" && state != "cancelled") return "";
  return json_string(st, "error", "stream " + state);
}

// Watches both daemons from a thread of its own, on control connections of
// its own, while the main loop waits on QEMU's monitor. QEMU 7.2 holds its
// big lock through the switch-over's writes: if the destination daemon dies
// there, the source QEMU blocks on its socket (the source daemon stops
// reading while it tries to reconnect) and answers its monitor only when
// that socket goes. The watch sees the dead (or failed) daemon at once and
// cancels the migration on the source daemon, which closes QEMU's socket and
// frees QEMU: a pause of a fraction of a second, not the monitor's timeout
// and then the end's grace.
class DaemonWatch {
 public:
  DaemonWatch(std::string src_ctl, std::string dst_ctl, std::string id)
      : src_(std::move(src_ctl)), dst_(std::move(dst_ctl)), id_(std::move(id)), t_([this] { loop(); }) {}
  ~DaemonWatch() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  std::string failure() const {
    std::lock_guard<std::mutex> g(mu_);
    return why_;
  }

 private:
  void loop() {
    std::optional<QmpClient> sd, dd;
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_ && why_.empty()) {
      l.unlock();
      // A daemon too busy to answer within 2 s is not dead (ten migrations
      // on two cores): ask again on a fresh connection, so that its late
      // reply is not taken for the next one. One whose socket is gone is.
      std::string why = check(dst_, dd);
      if (why.empty()) why = check(src_, sd);
      if (!why.empty()) {
        if (!sd) reconnect(src_, sd);
        if (sd) (void)sd->execute("migration-cancel", {{"id", id_}});
      }
      l.lock();
      if (!why.empty()) why_ = why;
      cv_.wait_for(l, std::chrono::milliseconds(250), [&] { return stop_; });
    }
  }
  // Connects c if it is not; "" unless the daemon's socket is gone (refused, closed).
  static std::string reconnect(const std::string& path, std::optional<QmpClient>& c) {
    auto r = QmpClient::connect(path, 2000);
    if (r) {
      c.emplace(std::move(r.value()));
      return "";
    }
    c.reset();
    return r.error().code == ErrorCode::kTimeout ? "" : "encmigd stopped answering (" + r.error().message() + ")";
  }
  std::string check(const std::string& path, std::optional<QmpClient>& c) {
    if (!c) {
      if (std::string why = reconnect(path, c); !why.empty() || !c) return why;
    }
    bool slow = false;
    std::string why = daemon_failure(&c.value(), id_, &slow);
    if (slow) c.reset();
    return why;
  }
  const std::string src_, dst_, id_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string why_;
  std::thread t_;  // last: starts once the rest is built
};

// Polls the source until the migration ends; draws the progress line. A
// daemon that failed the migration cancels it at once.
// Streams of the migration that are reconnecting after a broken connection,
// and the resumes so far, as the source daemon sees them.
struct LinkView {
  int64_t reconnecting = 0, resumes = 0;
};
LinkView link_view(QmpClient* d, const std::string& id) {
  LinkView v;
  if (!d) return v;
  auto m = d->execute("query-migrations", {{"id", id}});
  if (!m || !m->is_array() || m->empty()) return v;
  v.reconnecting = json_int((*m)[0], "reconnecting");
  v.resumes = json_int((*m)[0], "resumes");
  return v;
}

// QEMU's downtime limit lowered by the source daemon's in-flight bytes
// (common/switchover.h), set with migrate-set-parameters and given back at the end.
class SwitchoverBudget {
 public:
  SwitchoverBudget(QmpClient& src, QmpClient* sd, std::string id)
      : src_(src), sd_(sd), id_(std::move(id)), limit_(asked(src, sd)) {}
  ~SwitchoverBudget() {
    if (limit_.changed()) (void)src_.execute("migrate-set-parameters", {{"downtime-limit", limit_.asked()}});
  }
  // With QEMU's latest query-migrate, while it copies (precopy).
  void update(const json& q) {
    if (limit_.asked() <= 0 || json_string(q, "status") != "active") return;
    const double mbps = json_number(json_object(q, "ram"), "mbps");
    auto m = sd_->execute("query-migrations", {{"id", id_}});
    if (mbps <= 0 || !m || !m->is_array() || m->empty()) return;
    const int64_t in_flight = std::max<int64_t>(0, json_int((*m)[0], "in-flight"));
    if (int want = limit_.next(uint64_t(in_flight), mbps * 1e6 / 8); want > 0)
      if (src_.execute("migrate-set-parameters", {{"downtime-limit", want}})) limit_.applied(want);
  }
  int lowest() const { return limit_.lowest(); }

 private:
  static int asked(QmpClient& src, QmpClient* sd) {
    if (!sd) return 0;
    auto p = src.execute("query-migrate-parameters");
    return p ? int(json_int(p.value(), "downtime-limit")) : 0;
  }
  QmpClient& src_;
  QmpClient* sd_;
  const std::string id_;
  SwitchoverLimit limit_;
};

json wait_for_migration(QmpClient& src, const DirectOptions& o, const std::atomic<bool>& interrupted, QmpClient* sd,
                        QmpClient* dd, const std::string& id, bool* postcopy_asked, bool* postcopy_seen) {
  auto start = Clock::now();
  auto next_daemon_check = start;
  bool cancelled = false;
  std::string why_cancel;
  LinkView link;
  Clock::time_point paused_at{};
  std::optional<DaemonWatch> watch;
  if (sd && dd) watch.emplace(sd->path(), dd->path(), id);
  SwitchoverBudget budget(src, sd, id);
  for (;;) {
    if (std::string why = watch ? watch->failure() : ""; !why.empty() && !cancelled) {
      why_cancel = "encmigd: " + why;  // the watch cancelled it on the source daemon
      (void)src.execute("migrate_cancel");
      cancelled = true;
    }
    auto r = src.execute("query-migrate");
    if (!r) return fail_summary("source monitor: " + r.error().message());
    std::string status = json_string(r.value(), "status", "none");
    // Whoever switched (us, or an operator): the destination has run the VM.
    if (status.rfind("postcopy", 0) == 0) *postcopy_seen = true;
    if (status == "completed" || status == "failed" || status == "cancelled") {
      if (o.progress && !o.json) std::fprintf(stderr, "\n");
      json out = r->is_object() ? r.value() : json::object();
      if (cancelled && status != "completed") out["error-desc"] = why_cancel;
      if (budget.lowest() > 0) out["encmig-downtime-limit-lowest"] = budget.lowest();
      return out;
    }
    if (!cancelled) budget.update(r.value());
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (!cancelled && Clock::now() >= next_daemon_check) {
      next_daemon_check = Clock::now() + std::chrono::milliseconds(500);
      for (QmpClient* d : {sd, dd})
        if (std::string why = daemon_failure(d, id); !why.empty() && !cancelled) {
          why_cancel = "encmigd: " + why;
          (void)src.execute("migrate_cancel");
          cancelled = true;
        }
      // A pause for an outage, and the resume, on the progress line.
      LinkView now_link = link_view(sd, id);
      if (o.progress && !o.json) {
        if (now_link.reconnecting && !link.reconnecting) {
          paused_at = Clock::now();
          std::fprintf(stderr, "\nencmig: connection to the destination lost on %lld stream%s: paused, encmigd reconnecting\n",
                       (long long)now_link.reconnecting, now_link.reconnecting == 1 ? "" : "s");
        } else if (!now_link.reconnecting && link.reconnecting) {
          std::fprintf(stderr, "\nencmig: resumed after %.1f s (%lld resume%s so far)\n",
                       std::chrono::duration<double>(Clock::now() - paused_at).count(), (long long)now_link.resumes,
                       now_link.resumes == 1 ? "" : "s");
        }
      }
      link = now_link;
    }
    // Postcopy after the first pass: QEMU syncs the dirty bitmap once at the
    // start and once at the end of each pass.
    if (o.postcopy_after_precopy && !*postcopy_asked && status == "active" &&
        json_int(json_object(r.value(), "ram"), "dirty-sync-count") >= 2) {
      *postcopy_asked = true;
      if (o.progress && !o.json) std::fprintf(stderr, "\nencmig: switching to postcopy\n");
      (void)src.execute("migrate-start-postcopy");
    }
    if (!cancelled && (interrupted || (o.timeout_s > 0 && elapsed > o.timeout_s))) {
      why_cancel = interrupted ? "interrupted" : "timed out after " + std::to_string(o.timeout_s) + " s";
      (void)src.execute("migrate_cancel");
      cancelled = true;
    }
    if (o.progress && !o.json && r->contains("ram")) {
      const json& ram = json_object(r.value(), "ram");
      double total = json_number(ram, "total"), remaining = json_number(ram, "remaining");
      double mbps = json_number(ram, "mbps"), dirty = json_number(ram, "dirty-pages-rate") * json_number(ram, "page-size", 4096);
      double pct = total > 0 ? 100.0 * (total - remaining) / total : 0;
      double eta = mbps > 0 ? remaining * 8 / (mbps * 1e6) : 0;
      if (link.reconnecting)
        std::fprintf(stderr, "\rMigration: [%5.1f %%]  PAUSED: reconnecting for %.0f s, %lld resume%s so far          ", pct,
                     std::chrono::duration<double>(Clock::now() - paused_at).count(), (long long)link.resumes,
                     link.resumes == 1 ? "" : "s");
      else
        std::fprintf(stderr, "\rMigration: [%5.1f %%]  %8.1f MB/s  remaining %s  ETA %.1f s  dirty %s/s   ", pct,
                     mbps / 8, human_bytes(remaining).c_str(), eta, human_bytes(dirty).c_str());
      std::fflush(stderr);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Waits until the destination QEMU has loaded everything: its runstate
// leaves "inmigrate" (to paused, running, or prelaunch when the source had
// never been started), and its incoming migration did not fail. With
// encryption it also watches both daemons: a failed stream means the
// destination will never finish, however long we wait. Returns the
// destination's runstate, or "failed"/"gone" with `why` set.
std::string wait_destination(QmpClient& dst, QmpClient* sd, QmpClient* dd, const std::string& id, int seconds,
                             std::string* why) {
  auto until = Clock::now() + std::chrono::seconds(seconds);
  std::string s = "unknown";
  while (Clock::now() < until) {
    auto r = dst.execute("query-status");
    if (!r) return *why = "the destination QEMU is gone", "gone";
    s = json_string(r.value(), "status", "unknown");
    if (s != "inmigrate") {
      auto m = dst.execute("query-migrate");
      if (m && json_string(m.value(), "status") == "failed")
        return *why = "the destination's incoming migration failed: " + json_string(m.value(), "error-desc", "no reason given"), "failed";
      return s;
    }
    for (QmpClient* d : {sd, dd})
      if (std::string w = daemon_failure(d, id); !w.empty()) return *why = w, "failed";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *why = "the destination did not finish loading within " + std::to_string(seconds) + " s";
  return s;
}

// One QMP-direct migration, in the order of its steps: the encryption
// decision, QEMU's parameters, the start (arming both daemons, or plain
// TCP), the wait, the destination's verdict, the daemons' reports, the
// summary.
class DirectMigration {
 public:
  DirectMigration(const DirectOptions& o, const std::atomic<bool>& interrupted, QmpClient src, QmpClient dst)
      : o_(o), interrupted_(interrupted), src_(std::move(src)), dst_(std::move(dst)) {}

  json run() {
    decide();
    switch (decide_encryption(o_.mode, hosts_)) {
      case EncryptOutcome::kEncrypt:
        encrypt_ = true;
        break;
      case EncryptOutcome::kRefuse:
        return refused("encryption required but not possible: " + reason_ + "; nothing was migrated");
      case EncryptOutcome::kFail:
        return fail_summary("cannot encrypt: " + reason_ + "; only a host without a running encmigd may fall back to "
                            "plain text, so nothing was migrated");
      case EncryptOutcome::kPlain:
        if (o_.mode != EncryptMode::kDisabled)
          std::fprintf(stderr, "encmig: warning: migrating WITHOUT encryption: %s\n", reason_.c_str());
        break;
    }
    if (auto st = set_parameters(); !st) return fail_summary(st.error().detail);
    // Only a source that ran before may be resumed if the migration fails;
    // one that was paused is brought back to paused.
    auto before = src_.execute("query-status");
    source_was_running_ = before && json_bool(before.value(), "running");
    source_was_paused_ = before && json_string(before.value(), "status") == "paused";
    summary_ = json{{"encrypted", encrypt_}, {"reason", reason_}, {"multifd-channels", o_.multifd}};
    if (auto st = encrypt_ ? start_encrypted() : start_plain(); !st) return fail_summary(st.error().detail);
    json q = wait_completed();
    std::string status = json_string(q, "status", "failed");
    std::string dst_state = status == "completed" ? destination_verdict(q, status) : "n/a";
    if (encrypt_) end_daemons();
    if (status != "completed") restore_paused_source();
    auto src_status = src_.execute("query-status");
    summary_["source-state"] = src_status ? json_string(src_status.value(), "status", "unknown") : "gone";
    summary_["destination-state"] = dst_state;
    summary_["result"] = status;
    return status == "completed" ? summarize_success(q) : summarize_failure(q, status);
  }

 private:
  // Both daemons must answer for the migration to be encrypted.
  void decide() {
    if (o_.mode == EncryptMode::kDisabled) {
      reason_ = "encryption disabled by policy";
      return;
    }
    // A control socket nobody listens on is a host without encmigd; one that
    // answers but cannot serve is something else, and never a reason for plain text.
    auto a = QmpClient::connect(o_.src_encmigd);
    auto b = QmpClient::connect(o_.dst_encmigd);
    if (!a) return void(reason_ = "source encmigd unavailable (" + a.error().message() + ")");
    if (!b) return void(reason_ = "destination encmigd unavailable (" + b.error().message() + ")");
    hosts_ = Capability::kBroken;
    auto caps = b->execute("query-encmig-capabilities");
    if (!caps) return void(reason_ = "destination encmigd: " + caps.error().message());
    dst_caps_ = caps.value();
    auto src_caps = a->execute("query-encmig-capabilities");
    if (!src_caps) return void(reason_ = "source encmigd: " + src_caps.error().message());
    // One protocol version is spoken: both daemons must speak it. Hosts with
    // different ones cannot migrate encrypted; that is a failure, not a
    // reason to go plain.
    const unsigned sv = json_newest_version(src_caps.value(), "protocol-versions");
    dst_protocol_ = json_newest_version(dst_caps_, "protocol-versions");
    if (sv != wire::kVersion || dst_protocol_ != wire::kVersion)
      return void(reason_ = "the source encmigd speaks protocol " + std::to_string(sv) + " and the destination's " +
                            std::to_string(dst_protocol_) + "; both must speak " + std::to_string(wire::kVersion) +
                            " (upgrade both hosts)");
    reason_ = "both hosts run encmigd (protocol " + std::to_string(wire::kVersion) + ", aes-256-gcm)";
    hosts_ = Capability::kBothCan;
    sd_.emplace(std::move(a.value()));
    dd_.emplace(std::move(b.value()));
  }

  Status set_parameters() {
    if (o_.downtime_limit_ms > 0)
      (void)src_.execute("migrate-set-parameters", {{"downtime-limit", o_.downtime_limit_ms}});
    // QEMU's default max-bandwidth (128 MiB/s) would hide every transport
    // difference; virsh likewise passes its own --bandwidth or none.
    uint64_t bw = o_.bandwidth_mib > 0 ? uint64_t(o_.bandwidth_mib) << 20 : (uint64_t(1) << 40);
    (void)src_.execute("migrate-set-parameters", {{"max-bandwidth", bw}});
    if (auto st = set_multifd(dst_, o_.multifd); !st) return make_error(st.error().code, "destination: " + st.error().message());
    if (auto st = set_multifd(src_, o_.multifd); !st) return make_error(st.error().code, "source: " + st.error().message());
    if (o_.postcopy) {
      json caps{{"capabilities", json::array({{{"capability", "postcopy-ram"}, {"state", true}}})}};
      for (auto [q, side] : {std::pair{&dst_, "destination"}, std::pair{&src_, "source"}})
        if (auto r = q->execute("migrate-set-capabilities", caps); !r)
          return make_error(r.error().code, std::string(side) + ": " + r.error().message() +
                                                " (postcopy needs userfaultfd: an unprivileged QEMU needs vm.unprivileged_userfaultfd=1)");
      if (o_.postcopy_bandwidth_mib > 0)
        (void)src_.execute("migrate-set-parameters", {{"max-postcopy-bandwidth", uint64_t(o_.postcopy_bandwidth_mib) << 20}});
    }
    if (o_.postcopy_preempt)
      for (auto [q, side] : {std::pair{&dst_, "destination"}, std::pair{&src_, "source"}}) {
        auto name = preempt_capability(*q);
        if (!name) return make_error(name.error().code, std::string(side) + ": " + name.error().message());
        json caps{{"capabilities", json::array({{{"capability", *name}, {"state", true}}})}};
        if (auto r = q->execute("migrate-set-capabilities", caps); !r)
          return make_error(r.error().code, std::string(side) + ": " + *name + ": " + r.error().message());
      }
    return {};
  }

  // A fresh key, nonce and id; both daemons armed; then both QEMUs pointed at
  // their daemon's UNIX socket.
  // The source daemon connects to the destination as soon as it is armed
  // (a version 2 peer): let it finish before QEMU starts, so the TCP and
  // hello round trips are not part of QEMU's migration (its dirty logging,
  // its throttling, its bandwidth estimate). libvirt's Prepare phase gives the
  // same time. Bounded: a daemon still connecting then is waited for by the
  // stream itself.
  void await_connections() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < until && !interrupted_.load()) {
      auto m = sd_->execute("query-migrations", {{"id", id_}});
      if (!m || !m->is_array() || m->empty()) return;
      if (json_int(json_object((*m)[0], "connections-made-at-arm"), "pending") == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  Status start_encrypted() {
    auto secrets = MigrationSecrets::generate();
    if (!secrets) return make_error(secrets.error().code, secrets.error().message());
    id_ = id_hex(secrets->id);
    std::string dst_sock = o_.run_dir + "/" + id_.substr(0, 12) + "-dst.sock";
    std::string src_sock = o_.run_dir + "/" + id_.substr(0, 12) + "-src.sock";
    std::string dst_addr = o_.dst_addr;
    if (dst_addr.empty()) dst_addr = HostPort{"127.0.0.1", uint16_t(json_int(dst_caps_, "data-port", wire::kDefaultPort))}.str();
    std::string nonce = hex_encode(secrets->nonce);
    std::string key = base64_encode(secrets->key.data(), secrets->key.size());
    // QEMU's postcopy preempt channel is one more connection to the
    // migration socket, after the main one (and only when postcopy starts,
    // since QEMU 8.0): the last stream, named for what it is.
    int streams = 1 + o_.multifd + (o_.postcopy_preempt ? 1 : 0);

    auto inc = dst_.execute("migrate-incoming", {{"uri", "unix:" + dst_sock}});
    if (!inc) {
      secure_wipe(key.data(), key.size());
      return make_error(inc.error().code, "destination migrate-incoming: " + inc.error().message());
    }
    // Each daemon learns which QEMU may use its sockets: the pid at the other
    // end of that QEMU's monitor socket.
    json dargs{{"id", id_}, {"role", "destination"}, {"key", key}, {"nonce", nonce}, {"qemu-path", dst_sock}, {"streams", streams}};
    if (o_.postcopy_preempt) dargs["postcopy-preempt"] = true;
    json sargs{{"id", id_}, {"role", "source"}, {"key", key}, {"nonce", nonce}, {"peer", dst_addr}, {"listen-path", src_sock},
               {"streams", streams}, {"peer-protocol", dst_protocol_}};
    if (o_.postcopy_preempt) sargs["postcopy-preempt"] = true;
    if (pid_t p = dst_.peer_pid(); p > 0) dargs["qemu-pid"] = p;
    if (pid_t p = src_.peer_pid(); p > 0) sargs["qemu-pid"] = p;
    auto ad = dd_->execute("migration-arm", dargs);
    auto as = ad ? sd_->execute("migration-arm", sargs) : Result<json>(ad.error());
    secure_wipe(dargs["key"].get_ref<std::string&>().data(), key.size());
    secure_wipe(sargs["key"].get_ref<std::string&>().data(), key.size());
    secure_wipe(key.data(), key.size());
    secrets.value() = MigrationSecrets{};  // the daemons hold the only copies now
    if (!ad || !as) {
      cancel_daemons();
      return make_error((ad ? as.error() : ad.error()).code, "arming encmigd: " + (ad ? as.error() : ad.error()).message());
    }
    await_connections();
    auto m = src_.execute("migrate", {{"uri", "unix:" + src_sock}});
    if (!m) {
      cancel_daemons();
      return make_error(m.error().code, "source migrate: " + m.error().message());
    }
    return {};
  }

  Status start_plain() {
    if (o_.plain_listen.empty()) return make_error(ErrorCode::kInvalidArgument, "plain migration needs --plain-listen HOST:PORT");
    std::string conn = o_.plain_connect.empty() ? o_.plain_listen : o_.plain_connect;
    auto inc = dst_.execute("migrate-incoming", {{"uri", "tcp:" + o_.plain_listen}});
    if (!inc) return make_error(inc.error().code, "destination migrate-incoming: " + inc.error().message());
    auto m = src_.execute("migrate", {{"uri", "tcp:" + conn}});
    if (!m) return make_error(m.error().code, "source migrate: " + m.error().message());
    return {};
  }

  void cancel_daemons() {
    (void)sd_->execute("migration-cancel", {{"id", id_}});
    (void)dd_->execute("migration-cancel", {{"id", id_}});
  }

  json wait_completed() {
    json q = wait_for_migration(src_, o_, interrupted_, encrypt_ ? &sd_.value() : nullptr, encrypt_ ? &dd_.value() : nullptr, id_,
                                &postcopy_asked_, &postcopy_seen_);
    // QEMU 7.2 reports "completed" a moment before it has filled in the times.
    for (int i = 0; i < 100 && json_string(q, "status") == "completed" && json_int(q, "total-time") == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (auto r = src_.execute("query-migrate"); r) q = r.value();
    }
    return q;
  }

  // The source finished writing; the destination decides whether it got it
  // all. If not, the migration failed and, like libvirt's confirm step, the
  // source VM is resumed. A destination that has its complete state (in
  // whatever runstate the source had: running, paused, or prelaunch) is never
  // second-guessed: resuming the source then would run the VM twice.
  std::string destination_verdict(json& q, std::string& status) {
    std::string why;
    std::string state = wait_destination(dst_, encrypt_ ? &sd_.value() : nullptr, encrypt_ ? &dd_.value() : nullptr,
                                         id_, 60, &why);
    if (state == "inmigrate" || state == "failed" || state == "gone" || state == "unknown") {
      status = "failed";
      q["error-desc"] = "the destination did not complete: " + (why.empty() ? "state " + state : why);
      auto st = src_.execute("query-status");
      if (st && json_string(st.value(), "status") == "postmigrate" && source_was_running_) (void)src_.execute("cont");
    }
    return state;
  }

  // A paused source whose migration failed once QEMU had stopped it for the
  // switch-over (or after the source finished but the destination did not) is
  // left by QEMU 7.2 in "postmigrate": from there it refuses to migrate again
  // ("Can't migrate the vm that was paused due to previous migration"), `stop`
  // does nothing, and only `cont` leaves it. So `cont` and `stop`, written
  // together so that QEMU runs them back to back (the guest runs 1 to 6 ms
  // under TCG here), bring it back to "paused", as migratable as before. Only
  // when the destination cannot hold the VM: its QEMU is gone, or still
  // loading and so has never activated its disks; never once postcopy began
  // (the destination has run the VM). QEMU 10.0 restores "paused" by itself:
  // query-status then says so and nothing is done.
  void restore_paused_source() {
    if (!source_was_paused_ || postcopy_asked_ || postcopy_seen_) return;
    auto st = src_.execute("query-status");
    if (!st || json_string(st.value(), "status") != "postmigrate") return;
    if (auto d = dst_.execute("query-status"); d && json_string(d.value(), "status") != "inmigrate") {
      std::string where = json_string(d.value(), "status", "unknown");
      std::fprintf(stderr, "encmig: warning: source was paused before the migration and is left in postmigrate: the "
                   "destination QEMU is %s and may hold the VM\n", where.c_str());
      summary_["source-restored"] = "no: the destination QEMU is " + where;
      return;
    }
    (void)src_.take_events();
    auto replies = src_.execute_all({{"cont", json::object()}, {"stop", json::object()}});
    auto after = src_.execute("query-status");
    std::string now = after ? json_string(after.value(), "status", "unknown") : "gone";
    if (now != "paused") {
      std::string why = !replies[0] ? replies[0].error().text() : !replies[1] ? replies[1].error().text() : "it is " + now;
      std::fprintf(stderr, "encmig: warning: source was paused before the migration and is left in %s: cannot restore "
                   "it to paused (%s)\n", now.c_str(), why.c_str());
      summary_["source-restored"] = "failed: " + why;
      return;
    }
    std::fprintf(stderr, "encmig: source was paused before the migration: restored to paused (QEMU 7.2 leaves it in "
                 "postmigrate)\n");
    summary_["source-restored"] = "paused";
    // How long its vCPUs could run: from QEMU's RESUME to its STOP.
    int64_t resumed = -1;
    for (const json& e : src_.take_events()) {
      const json& ts = json_object(e, "timestamp");
      int64_t us = json_int(ts, "seconds") * 1000000 + json_int(ts, "microseconds");
      if (json_string(e, "event") == "RESUME") resumed = us;
      if (json_string(e, "event") == "STOP" && resumed >= 0) summary_["source-restore-ran-us"] = us - resumed;
    }
  }

  void end_daemons() {
    auto es = sd_->execute("migration-end", {{"id", id_}});
    auto ed = dd_->execute("migration-end", {{"id", id_}});
    if (es) summary_["source-encmigd"] = es.value();
    if (ed) summary_["destination-encmigd"] = ed.value();
    summary_["migration-id"] = id_;
  }

  json refused(const std::string& msg) { return json{{"result", "refused"}, {"error", msg}}; }

  json summarize_failure(const json& q, const std::string& status) {
    std::string err = json_string(q, "error-desc", "migration " + status);
    for (const char* k : {"source-encmigd", "destination-encmigd"}) {
      auto it = summary_.find(k);
      if (it != summary_.end() && it->is_object() && it->contains("error") && (*it)["error"].is_string()) {
        err += " (encmigd: " + (*it)["error"].get<std::string>() + ")";
        break;
      }
    }
    summary_["error"] = err;
    return summary_;
  }

  json summarize_success(const json& q) {
    summary_["total-time-ms"] = json_int(q, "total-time");
    summary_["downtime-ms"] = json_int(q, "downtime");
    if (q.contains("encmig-downtime-limit-lowest"))
      summary_["downtime-limit-lowest-ms"] = json_int(q, "encmig-downtime-limit-lowest");
    summary_["setup-time-ms"] = json_int(q, "setup-time");
    const int64_t requests = json_int(json_object(q, "ram"), "postcopy-requests");
    summary_["phase"] = postcopy_asked_ || requests > 0 ? "postcopy" : "precopy";
    if (postcopy_asked_ || requests > 0) summary_["postcopy-requests"] = requests;
    if (auto ram = q.find("ram"); ram != q.end() && ram->is_object()) {
      summary_["bytes"] = json_int(*ram, "transferred");
      summary_["ram-total"] = json_int(*ram, "total");
      double t = summary_["total-time-ms"].get<double>() / 1000.0;
      summary_["throughput-mbytes-per-s"] = t > 0 ? summary_["bytes"].get<double>() / t / 1e6 : 0.0;
    }
    return summary_;
  }

  const DirectOptions& o_;
  const std::atomic<bool>& interrupted_;
  QmpClient src_, dst_;
  std::optional<QmpClient> sd_, dd_;
  unsigned dst_protocol_ = 0;  // the newest protocol the destination daemon speaks
  json dst_caps_, summary_;
  bool encrypt_ = false, source_was_running_ = false, source_was_paused_ = false, postcopy_asked_ = false;
  bool postcopy_seen_ = false;  // QEMU reported a postcopy state
  Capability hosts_ = Capability::kNoDaemon;
  std::string reason_, id_;
};

}  // namespace

json migrate_direct(const DirectOptions& o, const std::atomic<bool>& interrupted) {
  auto src = QmpClient::connect(o.src_qmp);
  if (!src) return fail_summary("source QEMU monitor " + o.src_qmp + ": " + src.error().message());
  auto dst = QmpClient::connect(o.dst_qmp);
  if (!dst) return fail_summary("destination QEMU monitor " + o.dst_qmp + ": " + dst.error().message());
  return DirectMigration(o, interrupted, std::move(src.value()), std::move(dst.value())).run();
}

}  // namespace encmig
