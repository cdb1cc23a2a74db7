#include "control/qmp_direct.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "control/base64.h"
#include "control/qmp_client.h"
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

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, i++;
  char s[32];
  std::snprintf(s, sizeof s, "%.1f %s", b, u[i]);
  return s;
}

// Polls the source until the migration ends; draws the progress line.
json wait_for_migration(QmpClient& src, const DirectOptions& o, const std::atomic<bool>& interrupted) {
  auto start = Clock::now();
  bool cancelled = false;
  std::string why_cancel;
  for (;;) {
    auto r = src.execute("query-migrate");
    if (!r) return fail_summary("source monitor: " + r.error().message());
    std::string status = r->value("status", "none");
    if (status == "completed" || status == "failed" || status == "cancelled") {
      if (o.progress && !o.json) std::fprintf(stderr, "\n");
      json out = r.value();
      if (cancelled && status != "completed") out["error-desc"] = why_cancel;
      return out;
    }
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (!cancelled && (interrupted || (o.timeout_s > 0 && elapsed > o.timeout_s))) {
      why_cancel = interrupted ? "interrupted" : "timed out after " + std::to_string(o.timeout_s) + " s";
      (void)src.execute("migrate_cancel");
      cancelled = true;
    }
    if (o.progress && !o.json && r->contains("ram")) {
      const json& ram = (*r)["ram"];
      double total = ram.value("total", 0.0), remaining = ram.value("remaining", 0.0);
      double mbps = ram.value("mbps", 0.0), dirty = ram.value("dirty-pages-rate", 0.0) * ram.value("page-size", 4096.0);
      double pct = total > 0 ? 100.0 * (total - remaining) / total : 0;
      double eta = mbps > 0 ? remaining * 8 / (mbps * 1e6) : 0;
      std::fprintf(stderr, "\rMigration: [%5.1f %%]  %8.1f MB/s  remaining %s  ETA %.1f s  dirty %s/s   ", pct,
                   mbps / 8, human_bytes(remaining).c_str(), eta, human_bytes(dirty).c_str());
      std::fflush(stderr);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Waits until the destination has loaded the state (leaves "inmigrate").
// Waits until the destination QEMU has loaded everything. With encryption it
// also watches both daemons: a failed stream means the destination will never
// finish, however long we wait. Returns the destination's state, or "failed"
// with `why` set.
std::string wait_destination(QmpClient& dst, QmpClient* sd, QmpClient* dd, const std::string& id, int seconds,
                             std::string* why) {
  auto until = Clock::now() + std::chrono::seconds(seconds);
  std::string s = "unknown";
  while (Clock::now() < until) {
    auto r = dst.execute("query-status");
    if (!r) return "gone";
    s = r->value("status", "unknown");
    if (s != "inmigrate") return s;
    for (QmpClient* d : {sd, dd}) {
      if (!d) continue;
      auto m = d->execute("query-migrations", {{"id", id}});
      if (m && m->is_array() && !m->empty() && (*m)[0].value("state", "") == "failed") {
        *why = (*m)[0].value("error", std::string("stream failed"));
        return "failed";
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *why = "the destination did not finish loading within " + std::to_string(seconds) + " s";
  return s;
}

}  // namespace

json migrate_direct(const DirectOptions& o, const std::atomic<bool>& interrupted) {
  auto src = QmpClient::connect(o.src_qmp);
  if (!src) return fail_summary("source QEMU monitor " + o.src_qmp + ": " + src.error().message());
  auto dst = QmpClient::connect(o.dst_qmp);
  if (!dst) return fail_summary("destination QEMU monitor " + o.dst_qmp + ": " + dst.error().message());

  // Decide whether to encrypt: both daemons must answer.
  bool encrypt = false;
  std::string reason;
  std::optional<QmpClient> sd, dd;
  json dst_caps;
  if (o.mode == EncryptMode::kDisabled) {
    reason = "encryption disabled by policy";
  } else {
    auto a = QmpClient::connect(o.src_encmigd);
    auto b = QmpClient::connect(o.dst_encmigd);
    if (!a) reason = "source encmigd unavailable (" + a.error().message() + ")";
    else if (!b) reason = "destination encmigd unavailable (" + b.error().message() + ")";
    else {
      auto caps = b->execute("query-encmig-capabilities");
      if (!caps) reason = "destination encmigd: " + caps.error().message();
      else {
        dst_caps = caps.value();
        encrypt = true;
        reason = "both hosts run encmigd (protocol 1, aes-256-gcm)";
        sd.emplace(std::move(a.value()));
        dd.emplace(std::move(b.value()));
      }
    }
    if (!encrypt && o.mode == EncryptMode::kRequired)
      return fail_summary("encryption required but not possible: " + reason + "; nothing was migrated");
    if (!encrypt) std::fprintf(stderr, "encmig: warning: migrating WITHOUT encryption: %s\n", reason.c_str());
  }

  if (o.downtime_limit_ms > 0)
    (void)src->execute("migrate-set-parameters", {{"downtime-limit", o.downtime_limit_ms}});
  // QEMU's default max-bandwidth (128 MiB/s) would hide every transport
  // difference; virsh likewise passes its own --bandwidth or none.
  uint64_t bw = o.bandwidth_mib > 0 ? uint64_t(o.bandwidth_mib) << 20 : (uint64_t(1) << 40);
  (void)src->execute("migrate-set-parameters", {{"max-bandwidth", bw}});
  if (auto st = set_multifd(dst.value(), o.multifd); !st) return fail_summary("destination: " + st.error().message());
  if (auto st = set_multifd(src.value(), o.multifd); !st) return fail_summary("source: " + st.error().message());

  json summary{{"encrypted", encrypt}, {"reason", reason}, {"multifd-channels", o.multifd}};
  std::string id;
  if (encrypt) {
    auto secrets = MigrationSecrets::generate();
    if (!secrets) return fail_summary(secrets.error().message());
    id = id_hex(secrets->id);
    std::string dst_sock = o.run_dir + "/" + id.substr(0, 12) + "-dst.sock";
    std::string src_sock = o.run_dir + "/" + id.substr(0, 12) + "-src.sock";
    std::string dst_addr = o.dst_addr;
    if (dst_addr.empty()) dst_addr = "127.0.0.1:" + std::to_string(dst_caps.value("data-port", 16520));
    char nonce[17];
    for (int i = 0; i < 8; i++) std::snprintf(nonce + 2 * i, 3, "%02x", secrets->nonce[size_t(i)]);
    std::string key = base64_encode(secrets->key.data(), secrets->key.size());
    int streams = 1 + o.multifd;

    auto cancel_both = [&] {
      (void)sd->execute("migration-cancel", {{"id", id}});
      (void)dd->execute("migration-cancel", {{"id", id}});
    };
    auto inc = dst->execute("migrate-incoming", {{"uri", "unix:" + dst_sock}});
    if (!inc) {
      secure_wipe(key.data(), key.size());
      return fail_summary("destination migrate-incoming: " + inc.error().message());
    }
    auto ad = dd->execute("migration-arm", {{"id", id}, {"role", "destination"}, {"key", key}, {"nonce", nonce},
                                            {"qemu-path", dst_sock}, {"streams", streams}});
    auto as = ad ? sd->execute("migration-arm", {{"id", id}, {"role", "source"}, {"key", key}, {"nonce", nonce},
                                                 {"peer", dst_addr}, {"listen-path", src_sock}, {"streams", streams}})
                 : Result<json>(ad.error());
    secure_wipe(key.data(), key.size());
    secrets.value() = MigrationSecrets{};  // the daemons hold the only copies now
    if (!ad || !as) {
      cancel_both();
      return fail_summary("arming encmigd: " + (ad ? as.error() : ad.error()).message());
    }
    auto m = src->execute("migrate", {{"uri", "unix:" + src_sock}});
    if (!m) {
      cancel_both();
      return fail_summary("source migrate: " + m.error().message());
    }
  } else {
    if (o.plain_listen.empty()) return fail_summary("plain migration needs --plain-listen HOST:PORT");
    std::string conn = o.plain_connect.empty() ? o.plain_listen : o.plain_connect;
    auto inc = dst->execute("migrate-incoming", {{"uri", "tcp:" + o.plain_listen}});
    if (!inc) return fail_summary("destination migrate-incoming: " + inc.error().message());
    auto m = src->execute("migrate", {{"uri", "tcp:" + conn}});
    if (!m) return fail_summary("source migrate: " + m.error().message());
  }

  json q = wait_for_migration(src.value(), o, interrupted);
  std::string status = q.value("status", "failed");
  // QEMU 7.2 reports "completed" a moment before it has filled in the times.
  for (int i = 0; i < 100 && status == "completed" && q.value("total-time", 0) == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (auto r = src->execute("query-migrate"); r) q = r.value();
  }
  std::string dst_why;
  std::string dst_state = status == "completed"
                              ? wait_destination(dst.value(), encrypt ? &sd.value() : nullptr,
                                                 encrypt ? &dd.value() : nullptr, id, 60, &dst_why)
                              : "n/a";
  if (status == "completed" && dst_state != "paused" && dst_state != "running" && dst_state != "postmigrate") {
    // The source finished writing, but the destination never got it all: the
    // migration failed. Like libvirt's confirm step, resume the source VM.
    status = "failed";
    q["error-desc"] = "the destination did not complete: " + (dst_why.empty() ? "state " + dst_state : dst_why);
    auto st = src->execute("query-status");
    if (st && st->value("status", "") == "postmigrate") (void)src->execute("cont");
  }
  if (encrypt) {
    auto es = sd->execute("migration-end", {{"id", id}});
    auto ed = dd->execute("migration-end", {{"id", id}});
    if (es) summary["source-encmigd"] = es.value();
    if (ed) summary["destination-encmigd"] = ed.value();
    summary["migration-id"] = id;
  }
  auto src_status = src->execute("query-status");
  summary["source-state"] = src_status ? src_status->value("status", "unknown") : "gone";
  summary["destination-state"] = dst_state;
  summary["result"] = status;
  if (status != "completed") {
    std::string err = q.value("error-desc", std::string("migration ") + status);
    if (encrypt && summary.contains("source-encmigd") && summary["source-encmigd"].contains("error"))
      err += " (encmigd: " + summary["source-encmigd"]["error"].get<std::string>() + ")";
    else if (encrypt && summary.contains("destination-encmigd") && summary["destination-encmigd"].contains("error"))
      err += " (encmigd: " + summary["destination-encmigd"]["error"].get<std::string>() + ")";
    summary["error"] = err;
    return summary;
  }
  summary["total-time-ms"] = q.value("total-time", 0);
  summary["downtime-ms"] = q.value("downtime", 0);
  summary["setup-time-ms"] = q.value("setup-time", 0);
  if (q.contains("ram")) {
    summary["bytes"] = q["ram"].value("transferred", uint64_t(0));
    summary["ram-total"] = q["ram"].value("total", uint64_t(0));
    double t = summary["total-time-ms"].get<double>() / 1000.0;
    summary["throughput-mbytes-per-s"] = t > 0 ? summary["bytes"].get<double>() / t / 1e6 : 0.0;
  }
  return summary;
}

}  // namespace encmig
