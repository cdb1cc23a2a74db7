#include "cli/libvirt_migrate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <thread>

#include "common/host_secret.h"
#include "common/switchover.h"
#include "common/json.h"
#include "common/libvirt.h"
#include "migration/session.h"

namespace encmig {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string data_address(const std::string& data_addr, const std::string& desturi) {
  if (!data_addr.empty()) {
    if (HostPort::parse(data_addr)) return data_addr;
    return HostPort{data_addr, wire::kDefaultPort}.str();
  }
  std::string h = libvirt_uri_host(desturi);
  return h.empty() ? "" : HostPort{h, wire::kDefaultPort}.str();
}

std::string libvirt_host_name(virConnectPtr c, const std::string& fallback) {
  char* h = virConnectGetHostname(c);
  if (!h) return fallback;
  std::string s(h);
  free(h);
  return s;
}

namespace {

long long ms_since(Clock::time_point t) {
  return std::llround(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
}

// Typed parameters, freed on scope exit.
struct Params {
  virTypedParameterPtr p = nullptr;
  int n = 0, max = 0;
  ~Params() { virTypedParamsFree(p, n); }
  void str(const char* k, const std::string& v) { virTypedParamsAddString(&p, &n, &max, k, v.c_str()); }
  void i(const char* k, int v) { virTypedParamsAddInt(&p, &n, &max, k, v); }
  void ull(const char* k, unsigned long long v) { virTypedParamsAddULLong(&p, &n, &max, k, v); }
};

struct JobNumbers {
  bool ok = false;
  unsigned long long elapsed_ms = 0, downtime_ms = 0, setup_ms = 0, data_total = 0, data_processed = 0,
                     data_remaining = 0, memory_bps = 0, disk_processed = 0, memory_processed = 0,
                     memory_iteration = 0, postcopy_requests = 0;
};

JobNumbers job_stats(virDomainPtr d, unsigned flags) {
  JobNumbers j;
  int type = 0, n = 0;
  virTypedParameterPtr p = nullptr;
  if (virDomainGetJobStats(d, &type, &p, &n, flags) != 0) {
    virResetLastError();
    return j;
  }
  j.ok = type != VIR_DOMAIN_JOB_NONE;
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED, &j.elapsed_ms);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_DOWNTIME, &j.downtime_ms);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_SETUP_TIME, &j.setup_ms);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_DATA_TOTAL, &j.data_total);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_DATA_PROCESSED, &j.data_processed);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_DATA_REMAINING, &j.data_remaining);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_MEMORY_BPS, &j.memory_bps);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_DISK_PROCESSED, &j.disk_processed);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED, &j.memory_processed);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_MEMORY_ITERATION, &j.memory_iteration);
  virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS, &j.postcopy_requests);
  virTypedParamsFree(p, n);
  return j;
}

void progress_line(const JobNumbers& j, bool encrypted) {
  if (!j.ok || j.data_total == 0) return;
  int pct = int(100.0 * double(j.data_total - std::min(j.data_remaining, j.data_total)) / double(j.data_total));
  int bars = pct / 5;
  std::string bar(bars, '#');
  bar += std::string(20 - bars, ' ');
  double mbps = j.memory_bps / 1e6;
  std::string eta = j.memory_bps ? std::to_string(j.data_remaining / j.memory_bps) + "s" : "--";
  std::fprintf(stderr, "\rMigration: [%s] %3d %%  %7.1f MB/s  ETA %-5s %s", bar.c_str(), pct, mbps, eta.c_str(),
               encrypted ? "encrypted" : "UNENCRYPTED");
  std::fflush(stderr);
}

std::string domain_state(virDomainPtr d) {
  int st = 0, reason = 0;
  if (virDomainGetState(d, &st, &reason, 0) != 0) return "unknown";
  switch (st) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_PAUSED: return "paused";
    case VIR_DOMAIN_SHUTOFF: return "shut off";
    default: return "state " + std::to_string(st);
  }
}

// The host's QEMU (8.1 or later) takes userfaultfd from /dev/userfaultfd, and
// its libvirt (10.0 or later) gives QEMU that device.
bool uses_dev_userfaultfd(virConnectPtr c) {
  unsigned long qemu = 0, lib = 0;
  if (!c || virConnectGetVersion(c, &qemu) != 0 || virConnectGetLibVersion(c, &lib) != 0) return false;
  return qemu >= 8001000 && lib >= 10000000;
}

// One run of `encmig migrate` over libvirt, in the order of its steps:
// policy, key hand-off and the encryption decision, libvirt's parameters,
// the migration job watched to its end, the daemons' reports, the summary.
class LibvirtMigration {
 public:
  LibvirtMigration(const LibvirtMigrateOptions& o, const std::atomic<bool>& interrupted)
      : o_(o), interrupted_(interrupted) {}

  json run() {
    libvirt_quiet();
    out_ = json{{"domain", o_.domain}, {"destination", o_.desturi}, {"result", "failed"}, {"encrypted", false}};
    if (auto st = open_source(); !st) return fail(st.error().text());
    if (auto st = choose_mode(); !st) return fail(st.error().text());
    if (auto st = open_destination(); !st) return out_;
    if (auto st = decide(); !st) return out_;
    Params params;
    fill_params(params);
    drive(params);
    collect_daemon_reports();
    src_secret_.undefine();
    dst_secret_.undefine();
    out_["libvirt-ms"] = std::llround(wall_ms_);
    out_["wall-ms"] = ms_since(t0_);
    return rc_ == 0 ? summarize_success() : summarize_failure();
  }

 private:
  json fail(const std::string& msg) {
    out_["error"] = msg;
    return out_;
  }
  bool p2p() const { return o_.flags & VIR_MIGRATE_PEER2PEER; }
  bool storage() const { return o_.flags & (VIR_MIGRATE_NON_SHARED_DISK | VIR_MIGRATE_NON_SHARED_INC); }
  bool parallel() const { return o_.flags & VIR_MIGRATE_PARALLEL; }
  int channels() const { return parallel() ? (o_.parallel_connections > 0 ? o_.parallel_connections : 2) : 0; }

  Status open_source() {
    auto sc = libvirt_open(o_.connect_uri);
    if (!sc) return sc.error();
    src_ = std::move(sc.value());
    auto dom = libvirt_domain(src_.get(), o_.domain);
    if (!dom) return dom.error();
    dom_ = std::move(dom.value());
    return {};
  }

  // --encrypted=MODE overrides the domain's policy.
  Status choose_mode() {
    auto pol = get_policy(dom_.get());
    if (!pol) return pol.error();
    mode_ = o_.mode.value_or(pol->mode);
    why_mode_ = o_.mode ? std::string("--encrypted=") + encrypt_mode_name(mode_)
                        : std::string("policy ") + encrypt_mode_name(mode_) + (pol->explicit_set ? "" : " (default)");
    out_["mode"] = encrypt_mode_name(mode_);
    out_["policy"] = encrypt_mode_name(pol->mode);
    return {};
  }

  // The destination connection: for the hand-off, for non-p2p migration, and
  // for the final numbers. Fails (with the summary filled in) only when the
  // run cannot go on without it.
  Status open_destination() {
    auto dc = libvirt_open(o_.desturi);
    if (dc) {
      dst_ = std::move(dc.value());
    } else {
      dst_error_ = dc.error().text();
      if (mode_ != EncryptMode::kDisabled || !p2p()) {
        if (mode_ == EncryptMode::kRequired) {
          out_["result"] = "refused";
          fail("refusing to migrate (" + why_mode_ + "): " + dst_error_ + "; the VM stays where it is");
          return dc.error();
        }
        if (!p2p()) {
          fail(dst_error_);
          return dc.error();
        }
      }
    }
    src_host_ = libvirt_host_name(src_.get(), "source");
    dst_host_ = dst_ ? libvirt_host_name(dst_.get(), libvirt_uri_host(o_.desturi)) : libvirt_uri_host(o_.desturi);
    return {};
  }

  // A fresh key, nonce and id for this migration only, handed to both hosts.
  Status hand_off_keys() {
    std::string peer = data_address(o_.data_addr, o_.desturi);
    if (peer.empty())
      return make_error(ErrorCode::kInvalidArgument, "cannot tell the destination's address from " + o_.desturi + "; use --data-addr");
    auto sec = MigrationSecrets::generate();
    if (!sec) return sec.error();
    id_ = id_hex(sec->id);
    std::string usage = std::string(handoff::kUsagePrefix) + id_;
    // Each daemon learns the domain's name on its own host (the destination's
    // is --dname when given), to tell that domain's QEMU from any other.
    const char* name = virDomainGetName(dom_.get());
    std::string src_name = name ? name : o_.domain;
    // With postcopy, libvirt 11.3 (not 9.0) turns QEMU's postcopy-preempt
    // on by itself whenever both QEMUs have it (QEMU 10.0): one more
    // connection, opened only if postcopy starts. Arm for it always; a
    // preempt stream that never opens costs nothing.
    const bool preempt = (o_.flags & VIR_MIGRATE_POSTCOPY) != 0;
    json common{{"encmig", handoff::kFormat}, {"streams", 1 + channels() + (preempt ? 1 : 0)}, {"nbd", storage()}};
    if (preempt) common["postcopy-preempt"] = true;
    json dreq = common, sreq = common;
    dreq["role"] = "destination";
    dreq["domain"] = o_.dname.empty() ? src_name : o_.dname;
    sreq["role"] = "source";
    sreq["domain"] = src_name;
    sreq["peer"] = peer;
    // Destination first, so its daemon is ready before the source's probes it.
    auto da = hand_off_to(dst_.get(), dst_host_, usage, dreq, sec.value(), "destination", dst_secret_);
    if (!da) return da.error();
    // What the destination speaks, from its MACed answer: a source daemon
    // that speaks another version refuses to arm, naming both.
    if (unsigned v = json_newest_version(da.value(), "protocol")) sreq["peer-protocol"] = v;
    auto sa = hand_off_to(src_.get(), src_host_, usage, sreq, sec.value(), "source", src_secret_);
    if (!sa) return sa.error();
    path_ = json_string(sa.value(), "path");
    nbd_path_ = json_string(sa.value(), "nbd-path");
    if (path_.empty() || path_ != json_string(da.value(), "path") || nbd_path_ != json_string(da.value(), "nbd-path"))
      return make_error(ErrorCode::kInvalidArgument, "the hosts' encmigd use different --run-dir; libvirt needs one path on both");
    out_["source-daemon"] = json_string(sa.value(), "daemon");
    out_["destination-daemon"] = json_string(da.value(), "daemon");
    // Postcopy's pre-flight: an unprivileged QEMU 7.2 needs userfaultfd from
    // the sysctl. QEMU 8.1 and later open /dev/userfaultfd instead, which
    // libvirt (10.0 and later here: Debian 13's 11.3) lets its QEMU use: no
    // sysctl needed there.
    if (o_.flags & VIR_MIGRATE_POSTCOPY) {
      for (auto [a, host, conn] : {std::tuple{&sa.value(), src_host_, src_.get()}, std::tuple{&da.value(), dst_host_, dst_.get()}})
        if (json_int(*a, "unprivileged-userfaultfd", -1) == 0 && !uses_dev_userfaultfd(conn))
          userfaultfd_note_ += (userfaultfd_note_.empty() ? "" : ", ") + host;
      if (!userfaultfd_note_.empty()) {
        userfaultfd_note_ = "vm.unprivileged_userfaultfd is 0 on " + userfaultfd_note_ + ". " + kUserfaultfdHelp;
        std::fprintf(stderr, "encmig: warning: postcopy may be blocked: %s\n", userfaultfd_note_.c_str());
      }
    }
    return {};
  }

  Result<json> hand_off_to(virConnectPtr c, const std::string& host, const std::string& usage, const json& req,
                           const MigrationSecrets& sec, const char* side, handoff::HostSecret& slot) {
    auto h = handoff::HostSecret::define(c, host, usage, req, &sec, o_.allow_insecure_handoff);
    if (!h) return h.error();
    slot = std::move(h.value());
    auto a = slot.wait_answer(std::chrono::milliseconds(o_.handoff_timeout_ms), [this] { return interrupted_.load(); });
    if (!a) return make_error(a.error().code, a.error().text() + " (" + side + ")");
    if (json_string(a.value(), "state") != "ready")
      return make_error(ErrorCode::kNotReady, "encmigd on " + host + ": " + json_string(a.value(), "detail", "not ready"));
    return a;
  }

  // The mode and what the hand-off found decide: encrypt, fall back, refuse or fail.
  Status decide() {
    Status handed = make_error(ErrorCode::kIo, dst_error_);
    if (mode_ != EncryptMode::kDisabled && dst_) handed = hand_off_keys();
    if (!handed.ok()) {
      src_secret_.undefine();
      dst_secret_.undefine();
    }
    if (mode_ != EncryptMode::kDisabled && !handed.ok() && interrupted_) {
      fail("interrupted before the migration started; the VM was not touched");
      return make_error(ErrorCode::kCancelled);
    }
    // Only silence (no encmigd answered at all) means a host without encmigd.
    Capability hosts = handed.ok() ? Capability::kBothCan
                       : handed.error().code == ErrorCode::kTimeout ? Capability::kNoDaemon
                                                                    : Capability::kBroken;
    const std::string why_not = handed.ok() ? "" : handed.error().text();
    switch (decide_encryption(mode_, hosts)) {
      case EncryptOutcome::kEncrypt:
        encrypted_ = true;
        why_ = why_mode_ + "; encmigd on both hosts (" + src_host_ + ", " + dst_host_ + ") armed with a fresh key";
        break;
      case EncryptOutcome::kRefuse:
        out_["result"] = "refused";
        out_["reason"] = why_not;
        fail("refusing to migrate " + o_.domain + " unencrypted (" + why_mode_ + "): " + why_not + "; the VM keeps running on " +
             src_host_);
        return make_error(ErrorCode::kPolicy);
      case EncryptOutcome::kFail:
        out_["reason"] = why_not;
        fail("cannot encrypt the migration of " + o_.domain + " (" + why_mode_ + "): " + why_not +
             "; only a host without a running encmigd may fall back to plain text, and this is not that case; the VM "
             "keeps running on " + src_host_);
        return make_error(ErrorCode::kPolicy);
      case EncryptOutcome::kPlain:
        if (mode_ == EncryptMode::kDisabled) {
          why_ = why_mode_;
        } else {
          why_ = why_mode_ + ": " + why_not + "; migrated UNENCRYPTED";
          std::fprintf(stderr, "encmig: warning: %s cannot be encrypted: %s; falling back to an unencrypted migration (%s)\n",
                       o_.domain.c_str(), why_not.c_str(), why_mode_.c_str());
        }
        break;
    }
    out_["encrypted"] = encrypted_;
    out_["reason"] = why_;
    out_["handoff-ms"] = ms_since(t0_);
    if (!id_.empty()) out_["migration-id"] = id_;
    return {};
  }

  void fill_params(Params& params) const {
    if (encrypted_) {
      params.str(VIR_MIGRATE_PARAM_URI, "unix://" + path_);
      if (storage()) params.str(VIR_MIGRATE_PARAM_DISKS_URI, "unix://" + nbd_path_);
    } else if (!o_.migrateuri.empty()) {
      params.str(VIR_MIGRATE_PARAM_URI, o_.migrateuri);
    }
    if (parallel()) params.i(VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS, channels());
    if (!o_.dname.empty()) params.str(VIR_MIGRATE_PARAM_DEST_NAME, o_.dname);
    if (o_.bandwidth_mib) params.ull(VIR_MIGRATE_PARAM_BANDWIDTH, o_.bandwidth_mib);
    if (o_.postcopy_bandwidth_mib) params.ull(VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY, o_.postcopy_bandwidth_mib);
  }

  // libvirt drives the migration on its own thread; this one watches it.
  void drive(const Params& params) {
    std::atomic<bool> done{false};
    virDomainPtr d = dom_.get();
    virConnectPtr dconn = dst_.get();
    // Encrypted: QEMU's downtime limit is lowered while it copies by the
    // source daemon's in-flight bytes (common/switchover.h).
    unsigned long long asked_ms = 0;
    if (encrypted_ && virDomainMigrateGetMaxDowntime(d, &asked_ms, 0) == 0) limit_.emplace(int(asked_ms));
    virResetLastError();
    std::thread worker([&] {
      if (p2p()) {
        rc_ = virDomainMigrateToURI3(d, o_.desturi.c_str(), params.p, params.n, o_.flags);
      } else {
        virDomainPtr nd = virDomainMigrate3(d, dconn, params.p, params.n, o_.flags);
        rc_ = nd ? 0 : -1;
        if (nd) virDomainFree(nd);
      }
      if (rc_ != 0) mig_error_ = libvirt_error("migration failed");
      done = true;
    });
    auto start = Clock::now();
    // Every 200 ms the whole watch; with postcopy also, every 50 ms, the
    // domain's state: a short postcopy phase (the source paused for it)
    // must not go unseen in the summary.
    for (int tick = 0; !done; tick++) {
      std::this_thread::sleep_for(std::chrono::milliseconds((o_.flags & VIR_MIGRATE_POSTCOPY) ? 50 : 200));
      if (done) break;
      if (!(o_.flags & VIR_MIGRATE_POSTCOPY) || tick % 4 == 3) watch_once(start);
      else notice_postcopy();
    }
    worker.join();
    if (limit_ && limit_->changed()) {  // given back (a failed migration leaves the VM here)
      (void)virDomainMigrateSetMaxDowntime(d, (unsigned long long)limit_->asked(), 0);
      virResetLastError();
    }
    if (limit_ && limit_->lowest() > 0) out_["downtime-limit-lowest-ms"] = limit_->lowest();
    if (o_.progress) std::fprintf(stderr, "\n");
    wall_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }

  void abort_job() {
    if (!aborted_) virDomainAbortJob(dom_.get());
    aborted_ = true;
  }

  void watch_once(Clock::time_point start) {
    if (interrupted_) abort_job();
    if (o_.timeout_s > 0 && !suspended_ && Clock::now() - start > std::chrono::seconds(o_.timeout_s)) {
      suspended_ = true;  // virsh's --timeout: pause the guest so the migration can finish
      virDomainSuspend(dom_.get());
      if (o_.progress) std::fprintf(stderr, "\nencmig: timeout reached, suspending the guest\n");
    }
    if (encrypted_) {  // a daemon that saw tampering or a dead peer ends the job at once
      for (auto* s : {&src_secret_, &dst_secret_}) {
        auto a = s->read();
        if (!a && a.error().code == ErrorCode::kAuthFailed && encmig_failure_.empty()) {
          encmig_failure_ = a.error().text();  // someone else wrote the answer: stop
          abort_job();
        } else if (a && json_string(a.value(), "state") == "failed" && encmig_failure_.empty()) {
          encmig_failure_ = "encmigd on " + s->host() + ": " + json_string(a.value(), "detail", "stream failed");
          abort_job();
        } else if (a && s == &src_secret_) {
          note_outage(json_int(a.value(), "reconnecting"), json_int(a.value(), "resumes"));
          in_flight_ = uint64_t(std::max<int64_t>(0, json_int(a.value(), "in-flight")));
        }
      }
    }
    JobNumbers now = job_stats(dom_.get(), 0);
    if (now.ok) last_ = now;
    if (limit_ && now.ok && !postcopy_switched_)
      if (int want = limit_->next(in_flight_, double(now.memory_bps)); want > 0) {
        if (virDomainMigrateSetMaxDowntime(dom_.get(), (unsigned long long)want, 0) == 0) limit_->applied(want);
        virResetLastError();
      }
    // Postcopy: --postcopy-after-precopy asks as soon as the first pass runs
    // (QEMU then switches at its next iteration); either way, notice when the
    // source pauses for postcopy. libvirt 9.0 does not always report the
    // iteration while the job runs: memory sent also says the pass began. It
    // may refuse while its job is between phases: ask again on the next polls
    // (each poll for the first 40, then once a second while the job runs: a
    // migration that cannot converge must not be left to run in precopy).
    const bool first_pass = now.memory_iteration >= 1 || now.memory_processed > 0;
    if (o_.postcopy_after_precopy && !postcopy_switched_ && now.ok && first_pass &&
        (postcopy_tries_ < 40 || ++postcopy_polls_ % 5 == 0)) {
      postcopy_tries_++;
      if (virDomainMigrateStartPostCopy(dom_.get(), 0) == 0) {
        postcopy_switched_ = true;
      } else {
        if (o_.progress && postcopy_tries_ == 40)
          std::fprintf(stderr, "\nencmig: cannot switch to postcopy yet (asking once a second): %s\n",
                       libvirt_error().c_str());
        virResetLastError();
      }
    }
    notice_postcopy();
    if (o_.progress) {
      progress_line(now, encrypted_);
      if (reconnecting_)
        std::fprintf(stderr, "  PAUSED: reconnecting for %.0f s ",
                     std::chrono::duration<double>(Clock::now() - paused_at_).count());
    }
  }

  // The source pauses for postcopy (whoever switched: encmig, or an operator
  // with migrate-postcopy).
  void notice_postcopy() {
    int st = 0, reason = 0;
    if (postcopy_since_ == Clock::time_point{} && virDomainGetState(dom_.get(), &st, &reason, 0) == 0 &&
        st == VIR_DOMAIN_PAUSED && (reason == VIR_DOMAIN_PAUSED_POSTCOPY || reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)) {
      postcopy_since_ = Clock::now();
      if (o_.progress) std::fprintf(stderr, "\nencmig: switched to postcopy\n");
    }
    // After the switch, when the guest runs again on the destination: the
    // downtime where libvirt reports none after postcopy (11.3).
    if (postcopy_since_ != Clock::time_point{} && dst_running_at_ == Clock::time_point{} && dst_) {
      if (!dst_dom_) {
        auto nd = libvirt_domain(dst_.get(), o_.dname.empty() ? o_.domain : o_.dname);
        if (nd) dst_dom_ = std::move(nd.value());
      }
      if (dst_dom_ && virDomainGetState(dst_dom_.get(), &st, &reason, 0) == 0 && st == VIR_DOMAIN_RUNNING)
        dst_running_at_ = Clock::now();
      virResetLastError();
    }
  }

  // Protocol 2: the source daemon says when streams lost their connection
  // and when they resumed; the pause and the resume go on the progress line.
  void note_outage(int64_t reconnecting, int64_t resumes) {
    if (o_.progress && reconnecting && !reconnecting_) {
      paused_at_ = Clock::now();
      std::fprintf(stderr, "\nencmig: connection to the destination lost on %lld stream%s: paused, encmigd reconnecting\n",
                   (long long)reconnecting, reconnecting == 1 ? "" : "s");
    } else if (o_.progress && !reconnecting && reconnecting_) {
      std::fprintf(stderr, "\nencmig: resumed after %.1f s (%lld resume%s so far)\n",
                   std::chrono::duration<double>(Clock::now() - paused_at_).count(), (long long)resumes,
                   resumes == 1 ? "" : "s");
    }
    reconnecting_ = reconnecting;
  }

  // The daemons' final word on each stream.
  void collect_daemon_reports() {
    if (!encrypted_) return;
    for (auto [s, key] : {std::pair{&src_secret_, "source-encmigd"}, std::pair{&dst_secret_, "destination-encmigd"}}) {
      for (int i = 0; i < 20; i++) {  // give the daemon a moment to notice the streams closing
        auto a = s->read();
        if (!a) break;
        std::string st = json_string(a.value(), "state");
        if (st != "ready" && st != "active") {
          out_[key] = *a;
          if (st == "failed" && encmig_failure_.empty())
            encmig_failure_ = "encmigd on " + s->host() + ": " + json_string(a.value(), "detail", "stream failed");
          break;
        }
        if (rc_ != 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }

  json summarize_failure() {
    std::string msg = mig_error_;
    if ((o_.flags & VIR_MIGRATE_POSTCOPY) && (mig_error_.find("ostcopy") != std::string::npos || !userfaultfd_note_.empty()))
      msg += "; " + (userfaultfd_note_.empty() ? std::string(kUserfaultfdHelp) : userfaultfd_note_);
    if (!encmig_failure_.empty()) msg = encmig_failure_ + " (libvirt: " + mig_error_ + ")";
    if (interrupted_) msg = "interrupted; migration aborted (libvirt: " + mig_error_ + ")";
    out_["source-state"] = domain_state(dom_.get());
    if (suspended_) virDomainResume(dom_.get());
    return fail(msg);
  }

  json summarize_success() {
    out_["result"] = "completed";
    JobNumbers j;
    if (dst_) {
      auto nd = libvirt_domain(dst_.get(), o_.dname.empty() ? o_.domain : o_.dname);
      if (nd) {
        j = job_stats(nd->get(), VIR_DOMAIN_JOB_STATS_COMPLETED);
        out_["destination-state"] = domain_state(nd->get());
      }
    }
    JobNumbers sj = job_stats(dom_.get(), VIR_DOMAIN_JOB_STATS_COMPLETED);
    if (!j.ok) j = sj;
    // After postcopy, one side's completed statistics may lack the byte and
    // downtime counts (libvirt 9.0): take them from whichever side has them,
    // then from the last progress seen, then from encmigd's own count.
    for (const JobNumbers* k : {&sj, &last_}) {
      if (!j.data_processed && k->data_processed) j.data_processed = k->data_processed;
      if (!j.memory_processed && k->memory_processed) j.memory_processed = k->memory_processed;
      if (!j.disk_processed && k->disk_processed) j.disk_processed = k->disk_processed;
      if (!j.downtime_ms && k->downtime_ms) j.downtime_ms = k->downtime_ms;
    }
    // Postcopy if the source was seen paused for it, pages were requested,
    // or QEMU took our switch (it then completes in precopy only with
    // nothing left to send, which a running guest never has).
    const bool postcopy =
        postcopy_since_ != Clock::time_point{} || postcopy_switched_ || j.postcopy_requests || sj.postcopy_requests;
    out_["phase"] = postcopy ? "postcopy" : "precopy";
    if (postcopy) out_["postcopy-requests"] = std::max(j.postcopy_requests, sj.postcopy_requests);
    // libvirt's figure after postcopy can stop at the switch: encmigd
    // counted every byte QEMU sent.
    if (!j.data_processed || postcopy) {
      const json& st = json_object(json_object(out_, "source-encmigd"), "status");
      if (uint64_t e = uint64_t(json_int(st, "bytes-out")); e > j.data_processed) {
        j.data_processed = e;
        out_["bytes-from"] = "encmigd";
      }
    }
    double total = j.ok && j.elapsed_ms ? double(j.elapsed_ms) : wall_ms_;
    out_["total-time-ms"] = std::llround(total);
    out_["downtime-ms"] = j.downtime_ms;
    if (!j.downtime_ms && postcopy && dst_running_at_ != Clock::time_point{}) {
      // Seen by polling both domains every 50 ms: source paused for
      // postcopy, then destination running.
      out_["downtime-ms"] = std::max<int64_t>(
          1, std::chrono::duration_cast<std::chrono::milliseconds>(dst_running_at_ - postcopy_since_).count());
      out_["downtime-from"] = "encmig: source paused for postcopy to destination running, polled every 50 ms";
    }
    out_["setup-time-ms"] = j.setup_ms;
    out_["bytes"] = j.data_processed;
    out_["memory-bytes"] = j.memory_processed;
    out_["disk-bytes"] = j.disk_processed;
    out_["throughput-mbytes-per-s"] = total > 0 ? double(j.data_processed) / 1e3 / total : 0.0;
    out_["source-host"] = src_host_;
    out_["destination-host"] = dst_host_;
    return out_;
  }

  const LibvirtMigrateOptions& o_;
  const std::atomic<bool>& interrupted_;
  const Clock::time_point t0_ = Clock::now();
  json out_;
  VirConn src_, dst_;
  VirDomain dom_;
  std::string dst_error_;
  EncryptMode mode_ = kDefaultPolicy;
  std::string why_mode_, why_, src_host_, dst_host_, path_, nbd_path_, id_;
  handoff::HostSecret src_secret_, dst_secret_;
  bool postcopy_switched_ = false;   // our virDomainMigrateStartPostCopy succeeded
  int64_t reconnecting_ = 0;         // streams the source daemon last said are reconnecting
  uint64_t in_flight_ = 0;           // bytes the source daemon last said may not have reached the peer
  std::optional<SwitchoverLimit> limit_;
  Clock::time_point paused_at_{};
  static constexpr const char* kUserfaultfdHelp =
      "postcopy needs userfaultfd: a QEMU that runs unprivileged (as libvirt-qemu) gets it only with "
      "vm.unprivileged_userfaultfd = 1 on both hosts (QEMU 7.2 does not use /dev/userfaultfd; QEMU 10 does); set it with "
      "sysctl -w vm.unprivileged_userfaultfd=1, or migrate without --postcopy";
  std::string userfaultfd_note_;
  bool encrypted_ = false, aborted_ = false, suspended_ = false;
  int postcopy_tries_ = 0;  // virDomainMigrateStartPostCopy calls for --postcopy-after-precopy
  int postcopy_polls_ = 0;  // polls since the first 40 tries
  Clock::time_point postcopy_since_{};
  Clock::time_point dst_running_at_{};  // the guest seen running on the destination after the switch
  VirDomain dst_dom_;
  JobNumbers last_;
  int rc_ = -1;
  std::string mig_error_, encmig_failure_;
  double wall_ms_ = 0;
};

}  // namespace

json migrate_libvirt(const LibvirtMigrateOptions& o, const std::atomic<bool>& interrupted) {
  return LibvirtMigration(o, interrupted).run();
}

Status start_postcopy(const std::string& connect_uri, const std::string& domain) {
  libvirt_quiet();
  auto c = libvirt_open(connect_uri);
  if (!c) return c.error();
  auto d = libvirt_domain(c->get(), domain);
  if (!d) return d.error();
  if (virDomainMigrateStartPostCopy(d->get(), 0) != 0)
    return make_error(ErrorCode::kIo, "cannot switch " + domain + " to postcopy: " + libvirt_error());
  return {};
}

}  // namespace encmig
