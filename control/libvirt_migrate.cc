#include "control/libvirt_migrate.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "control/handoff.h"
#include "control/libvirt.h"
#include "migration/session.h"

namespace encmig {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kDefaultDataPort = 16520;

std::string with_port(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos && host.front() != '[') return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string data_address(const LibvirtMigrateOptions& o) {
  if (!o.data_addr.empty()) {
    if (HostPort::parse(o.data_addr)) return o.data_addr;
    return with_port(o.data_addr, kDefaultDataPort);
  }
  std::string h = libvirt_uri_host(o.desturi);
  return h.empty() ? "" : with_port(h, kDefaultDataPort);
}

std::string host_name(virConnectPtr c, const std::string& fallback) {
  char* h = virConnectGetHostname(c);
  if (!h) return fallback;
  std::string s(h);
  free(h);
  return s;
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
                     data_remaining = 0, memory_bps = 0, disk_processed = 0, memory_processed = 0;
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

}  // namespace

json migrate_libvirt(const LibvirtMigrateOptions& o, const std::atomic<bool>& interrupted) {
  libvirt_quiet();
  const auto t0 = Clock::now();
  auto ms_since = [](Clock::time_point t) { return std::llround(std::chrono::duration<double, std::milli>(Clock::now() - t).count()); };
  json out{{"domain", o.domain}, {"destination", o.desturi}, {"result", "failed"}, {"encrypted", false}};
  auto fail = [&](const std::string& msg) {
    out["error"] = msg;
    return out;
  };
  auto sc = libvirt_open(o.connect_uri);
  if (!sc) return fail(sc.error().text());
  auto dom = libvirt_domain(sc->get(), o.domain);
  if (!dom) return fail(dom.error().text());
  const bool p2p = o.flags & VIR_MIGRATE_PEER2PEER;
  const bool storage = o.flags & (VIR_MIGRATE_NON_SHARED_DISK | VIR_MIGRATE_NON_SHARED_INC);
  const bool parallel = o.flags & VIR_MIGRATE_PARALLEL;
  const int channels = parallel ? (o.parallel_connections > 0 ? o.parallel_connections : 2) : 0;

  auto pol = get_policy(dom->get());
  if (!pol) return fail(pol.error().text());
  EncryptMode mode = o.mode.value_or(pol->mode);
  std::string why_mode = o.mode ? std::string("--encrypted=") + encrypt_mode_name(mode)
                                : std::string("policy ") + encrypt_mode_name(mode) + (pol->explicit_set ? "" : " (default)");
  out["mode"] = encrypt_mode_name(mode);
  out["policy"] = encrypt_mode_name(pol->mode);

  // The destination connection: for the hand-off, for non-p2p migration, and for the final numbers.
  Result<VirConn> dc = libvirt_open(o.desturi);
  if (!dc && (mode != EncryptMode::kDisabled || !p2p)) {
    if (mode == EncryptMode::kRequired) {
      out["result"] = "refused";
      return fail("refusing to migrate (" + why_mode + "): " + dc.error().text() + "; the VM stays where it is");
    }
    if (!p2p) return fail(dc.error().text());
  }
  std::string src_host = host_name(sc->get(), "source");
  std::string dst_host = dc ? host_name(dc->get(), libvirt_uri_host(o.desturi)) : libvirt_uri_host(o.desturi);

  // Key hand-off: a fresh key, nonce and id for this migration only.
  handoff::HostSecret src_secret, dst_secret;
  bool encrypted = false;
  std::string why, path, nbd_path, id;
  auto interrupted_fn = [&] { return interrupted.load(); };
  if (mode == EncryptMode::kDisabled) {
    why = why_mode;
  } else {
    std::string peer = data_address(o);
    auto arm = [&]() -> Status {
      if (peer.empty()) return make_error(ErrorCode::kInvalidArgument, "cannot tell the destination's address from " + o.desturi + "; use --data-addr");
      auto sec = MigrationSecrets::generate();
      if (!sec) return sec.error();
      id = id_hex(sec->id);
      std::string usage = std::string(handoff::kUsagePrefix) + id;
      json common{{"encmig", handoff::kFormat}, {"streams", 1 + channels}, {"nbd", storage}, {"domain", o.domain}};
      json dreq = common, sreq = common;
      dreq["role"] = "destination";
      sreq["role"] = "source";
      sreq["peer"] = peer;
      // Destination first, so its daemon is ready before the source's probes it.
      auto hand_off = [&](virConnectPtr c, const std::string& host, const json& req, const char* side,
                          handoff::HostSecret& slot) -> Result<json> {
        auto h = handoff::HostSecret::define(c, host, usage, req, &sec.value());
        if (!h) return h.error();
        slot = std::move(h.value());
        auto a = slot.wait_answer(std::chrono::milliseconds(o.handoff_timeout_ms), interrupted_fn);
        if (!a) return make_error(a.error().code, a.error().text() + " (" + side + ")");
        if (a->value("state", "") != "ready")
          return make_error(ErrorCode::kNotReady, "encmigd on " + host + ": " + a->value("detail", std::string("not ready")));
        return a;
      };
      auto da = hand_off(dc->get(), dst_host, dreq, "destination", dst_secret);
      if (!da) return da.error();
      auto sa = hand_off(sc->get(), src_host, sreq, "source", src_secret);
      if (!sa) return sa.error();
      path = sa->value("path", "");
      nbd_path = sa->value("nbd-path", "");
      if (path != da->value("path", "") || nbd_path != da->value("nbd-path", ""))
        return make_error(ErrorCode::kInvalidArgument, "the hosts' encmigd use different --run-dir; libvirt needs one path on both");
      out["source-daemon"] = sa->value("daemon", "");
      out["destination-daemon"] = da->value("daemon", "");
      return {};
    };
    if (!dc) {
      why = why_mode + ": " + dc.error().text();
    } else if (auto st = arm(); st) {
      encrypted = true;
      why = why_mode + "; encmigd on both hosts (" + src_host + ", " + dst_host + ") armed with a fresh key";
    } else {
      src_secret.undefine();
      dst_secret.undefine();
      if (interrupted) return fail("interrupted before the migration started; the VM was not touched");
      if (mode == EncryptMode::kRequired) {
        out["result"] = "refused";
        out["reason"] = st.error().text();
        return fail("refusing to migrate " + o.domain + " unencrypted (" + why_mode + "): " + st.error().text() +
                    "; the VM keeps running on " + src_host);
      }
      why = why_mode + ": " + st.error().text() + "; migrated UNENCRYPTED";
      std::fprintf(stderr, "encmig: warning: %s cannot be encrypted: %s; falling back to an unencrypted migration (%s)\n",
                   o.domain.c_str(), st.error().text().c_str(), why_mode.c_str());
    }
  }
  out["encrypted"] = encrypted;
  out["reason"] = why;
  out["handoff-ms"] = ms_since(t0);
  if (!id.empty()) out["migration-id"] = id;

  Params params;
  if (encrypted) {
    params.str(VIR_MIGRATE_PARAM_URI, "unix://" + path);
    if (storage) params.str(VIR_MIGRATE_PARAM_DISKS_URI, "unix://" + nbd_path);
  } else if (!o.migrateuri.empty()) {
    params.str(VIR_MIGRATE_PARAM_URI, o.migrateuri);
  }
  if (parallel) params.i(VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS, channels);
  if (!o.dname.empty()) params.str(VIR_MIGRATE_PARAM_DEST_NAME, o.dname);
  if (o.bandwidth_mib) params.ull(VIR_MIGRATE_PARAM_BANDWIDTH, o.bandwidth_mib);

  // libvirt drives the migration on its own thread; this one watches it.
  std::atomic<bool> done{false};
  int rc = -1;
  std::string mig_error;
  virDomainPtr d = dom->get();
  virConnectPtr dconn = dc ? dc->get() : nullptr;
  std::thread worker([&] {
    if (p2p) {
      rc = virDomainMigrateToURI3(d, o.desturi.c_str(), params.p, params.n, o.flags);
    } else {
      virDomainPtr nd = virDomainMigrate3(d, dconn, params.p, params.n, o.flags);
      rc = nd ? 0 : -1;
      if (nd) virDomainFree(nd);
    }
    if (rc != 0) mig_error = libvirt_error("migration failed");
    done = true;
  });
  auto start = Clock::now();
  bool aborted = false, suspended = false;
  std::string encmig_failure;
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (done) break;
    if (interrupted && !aborted) {
      aborted = true;
      virDomainAbortJob(d);
    }
    if (o.timeout_s > 0 && !suspended && Clock::now() - start > std::chrono::seconds(o.timeout_s)) {
      suspended = true;  // virsh's --timeout: pause the guest so the migration can finish
      virDomainSuspend(d);
      if (o.progress) std::fprintf(stderr, "\nencmig: timeout reached, suspending the guest\n");
    }
    if (encrypted) {  // a daemon that saw tampering or a dead peer ends the job at once
      for (auto* s : {&src_secret, &dst_secret}) {
        auto a = s->read();
        if (a && a->value("state", "") == "failed" && encmig_failure.empty()) {
          encmig_failure = "encmigd on " + s->host() + ": " + a->value("detail", std::string("stream failed"));
          if (!aborted) virDomainAbortJob(d), aborted = true;
        }
      }
    }
    if (o.progress) progress_line(job_stats(d, 0), encrypted);
  }
  worker.join();
  if (o.progress) std::fprintf(stderr, "\n");
  double wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();

  // The daemons' final word on each stream.
  if (encrypted) {
    for (auto [s, key] : {std::pair{&src_secret, "source-encmigd"}, std::pair{&dst_secret, "destination-encmigd"}}) {
      for (int i = 0; i < 20; i++) {  // give the daemon a moment to notice the streams closing
        auto a = s->read();
        if (!a) break;
        std::string st = a->value("state", "");
        if (st != "ready" && st != "active") {
          out[key] = *a;
          if (st == "failed" && encmig_failure.empty())
            encmig_failure = "encmigd on " + s->host() + ": " + a->value("detail", std::string("stream failed"));
          break;
        }
        if (rc != 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  src_secret.undefine();
  dst_secret.undefine();
  out["libvirt-ms"] = std::llround(wall_ms);
  out["wall-ms"] = ms_since(t0);

  if (rc != 0) {
    std::string msg = mig_error;
    if (!encmig_failure.empty()) msg = encmig_failure + " (libvirt: " + mig_error + ")";
    if (interrupted) msg = "interrupted; migration aborted (libvirt: " + mig_error + ")";
    out["source-state"] = domain_state(d);
    if (suspended) virDomainResume(d);
    return fail(msg);
  }
  out["result"] = "completed";
  JobNumbers j;
  if (dconn) {
    auto nd = libvirt_domain(dconn, o.dname.empty() ? o.domain : o.dname);
    if (nd) {
      j = job_stats(nd->get(), VIR_DOMAIN_JOB_STATS_COMPLETED);
      out["destination-state"] = domain_state(nd->get());
    }
  }
  if (!j.ok) j = job_stats(d, VIR_DOMAIN_JOB_STATS_COMPLETED);
  double total = j.ok && j.elapsed_ms ? double(j.elapsed_ms) : wall_ms;
  out["total-time-ms"] = std::llround(total);
  out["downtime-ms"] = j.downtime_ms;
  out["setup-time-ms"] = j.setup_ms;
  out["bytes"] = j.data_processed;
  out["memory-bytes"] = j.memory_processed;
  out["disk-bytes"] = j.disk_processed;
  out["throughput-mbytes-per-s"] = total > 0 ? double(j.data_processed) / 1e3 / total : 0.0;
  out["source-host"] = src_host;
  out["destination-host"] = dst_host;
  return out;
}

json place_domain(const PlaceOptions& o) {
  libvirt_quiet();
  json out{{"domain", o.domain}, {"candidates", json::array()}};
  auto sc = libvirt_open(o.connect_uri);
  if (!sc) return out["error"] = sc.error().text(), out;
  auto dom = libvirt_domain(sc->get(), o.domain);
  if (!dom) return out["error"] = dom.error().text(), out;
  auto pol = get_policy(dom->get());
  EncryptMode mode = o.mode.value_or(pol ? pol->mode : kDefaultPolicy);
  out["mode"] = encrypt_mode_name(mode);
  std::string src_host = host_name(sc->get(), "");
  virDomainInfo info{};
  virDomainGetInfo(dom->get(), &info);
  unsigned long long need = info.memory * 1024ULL;  // KiB -> bytes
  const char* name = virDomainGetName(dom->get());

  // The source's encmigd must be there too, or nothing can be encrypted.
  auto src_probe = handoff::probe_host(sc->get(), src_host, "", std::chrono::milliseconds(o.timeout_ms));
  std::string chosen;
  for (const auto& uri : o.candidates) {
    json c{{"uri", uri}, {"capable", false}, {"encrypted", false}};
    auto reject = [&](const std::string& why) { c["reason"] = why; };
    auto dc = libvirt_open(uri);
    if (!dc) {
      reject("unreachable: " + dc.error().text());
    } else {
      std::string h = host_name(dc->get(), libvirt_uri_host(uri));
      c["host"] = h;
      unsigned long long free_bytes = virNodeGetFreeMemory(dc->get());
      c["free-memory"] = free_bytes;
      virDomainPtr same = virDomainLookupByName(dc->get(), name);
      virResetLastError();
      if (same) virDomainFree(same);
      std::string host = libvirt_uri_host(uri);
      if (h == src_host) {
        reject("it is the source host");
      } else if (same) {
        reject(std::string("a domain named '") + name + "' already exists there");
      } else if (free_bytes && free_bytes < need) {
        reject("not enough free memory (" + std::to_string(free_bytes >> 20) + " MiB free, " +
               std::to_string(need >> 20) + " MiB needed)");
      } else if (mode == EncryptMode::kDisabled) {
        c["capable"] = true;
        c["reason"] = "reachable (policy disabled: no encryption wanted)";
      } else {
        std::string why_not;
        if (!src_probe) {
          why_not = "the source host has no encmigd: " + src_probe.error().text();
        } else if (auto p = handoff::probe_host(dc->get(), h, "", std::chrono::milliseconds(o.timeout_ms)); !p) {
          why_not = "no encmigd: " + p.error().text();
        } else {
          c["daemon"] = p->value("daemon", "");
          std::string peer = with_port(host, uint16_t(p->value("data-port", int(kDefaultDataPort))));
          auto sp = handoff::probe_host(sc->get(), src_host, peer, std::chrono::milliseconds(o.timeout_ms + 3000));
          if (!sp) why_not = "source encmigd did not answer: " + sp.error().text();
          else if (sp->contains("peer-error"))
            why_not = "source encmigd cannot reach " + peer + ": " + sp->value("peer-error", std::string());
        }
        if (why_not.empty()) {
          c["capable"] = true;
          c["encrypted"] = true;
          c["reason"] = "encmigd on both hosts; " + std::to_string(free_bytes >> 20) + " MiB free";
        } else if (mode == EncryptMode::kOpportunistic) {
          c["capable"] = true;
          c["reason"] = "would migrate UNENCRYPTED: " + why_not;
        } else {
          reject("cannot encrypt (policy required): " + why_not);
        }
      }
    }
    out["candidates"].push_back(c);
  }
  // Prefer an encrypted destination, then the first capable one.
  for (bool want_enc : {true, false})
    for (auto& c : out["candidates"])
      if (chosen.empty() && c["capable"].get<bool>() && (c["encrypted"].get<bool>() || !want_enc))
        chosen = c["uri"].get<std::string>();
  if (!chosen.empty()) out["chosen"] = chosen;
  return out;
}

}  // namespace encmig
