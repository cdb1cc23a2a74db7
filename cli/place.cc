#include "cli/place.h"

#include "common/host_secret.h"
#include "cli/libvirt_migrate.h"
#include "common/json.h"
#include "common/libvirt.h"
#include "migration/socket.h"

namespace encmig {

using nlohmann::json;

namespace {

struct Source {
  VirConn conn;
  VirDomain dom;
  std::string host, name;
  unsigned long long memory = 0;  // bytes the domain needs
  EncryptMode mode = kDefaultPolicy;
  Result<json> probe = make_error(ErrorCode::kNotReady);  // its own encmigd's answer
};

// Whether the source can encrypt to this candidate; `why_not` says why not.
Capability capability(Source& src, virConnectPtr dc, const std::string& uri, const std::string& dst_host, json& c,
                      int timeout_ms, std::string* why_not) {
  auto silent = [](const Error& e) { return e.code == ErrorCode::kTimeout ? Capability::kNoDaemon : Capability::kBroken; };
  if (!src.probe) return *why_not = "the source host has no encmigd: " + src.probe.error().text(), silent(src.probe.error());
  auto p = handoff::probe_host(dc, dst_host, "", std::chrono::milliseconds(timeout_ms));
  if (!p) return *why_not = "no encmigd: " + p.error().text(), silent(p.error());
  c["daemon"] = json_string(p.value(), "daemon");
  int64_t port = json_int(p.value(), "data-port", wire::kDefaultPort);
  if (port < 1 || port > 65535) return *why_not = "its encmigd reports no valid data port", Capability::kBroken;
  std::string peer = HostPort{libvirt_uri_host(uri), uint16_t(port)}.str();
  auto sp = handoff::probe_host(src.conn.get(), src.host, peer, std::chrono::milliseconds(timeout_ms + 3000));
  if (!sp) return *why_not = "source encmigd did not answer: " + sp.error().text(), silent(sp.error());
  if (sp->contains("peer-error"))
    return *why_not = "source encmigd cannot reach " + peer + ": " + json_string(sp.value(), "peer-error"), Capability::kBroken;
  return Capability::kBothCan;
}

// One candidate, explained: {"uri", "capable", "encrypted", "reason", ...}.
json judge(Source& src, const std::string& uri, int timeout_ms) {
  json c{{"uri", uri}, {"capable", false}, {"encrypted", false}};
  auto dc = libvirt_open(uri);
  if (!dc) return c["reason"] = "unreachable: " + dc.error().text(), c;
  std::string h = libvirt_host_name(dc->get(), libvirt_uri_host(uri));
  c["host"] = h;
  unsigned long long free_bytes = virNodeGetFreeMemory(dc->get());
  c["free-memory"] = free_bytes;
  virDomainPtr same = virDomainLookupByName(dc->get(), src.name.c_str());
  virResetLastError();
  if (same) virDomainFree(same);
  if (h == src.host) return c["reason"] = "it is the source host", c;
  if (same) return c["reason"] = "a domain named '" + src.name + "' already exists there", c;
  if (free_bytes && free_bytes < src.memory)
    return c["reason"] = "not enough free memory (" + std::to_string(free_bytes >> 20) + " MiB free, " +
                         std::to_string(src.memory >> 20) + " MiB needed)",
           c;
  if (src.mode == EncryptMode::kDisabled) {
    c["capable"] = true;
    c["reason"] = "reachable (policy disabled: no encryption wanted)";
    return c;
  }
  std::string why_not;
  switch (decide_encryption(src.mode, capability(src, dc->get(), uri, h, c, timeout_ms, &why_not))) {
    case EncryptOutcome::kEncrypt:
      c["capable"] = true;
      c["encrypted"] = true;
      c["reason"] = "encmigd on both hosts; " + std::to_string(free_bytes >> 20) + " MiB free";
      break;
    case EncryptOutcome::kPlain:
      c["capable"] = true;
      c["reason"] = "would migrate UNENCRYPTED: " + why_not;
      break;
    case EncryptOutcome::kRefuse:
      c["reason"] = "cannot encrypt (policy required): " + why_not;
      break;
    case EncryptOutcome::kFail:
      c["reason"] = "cannot encrypt, and would not fall back to plain text: " + why_not;
      break;
  }
  return c;
}

}  // namespace

json place_domain(const PlaceOptions& o) {
  libvirt_quiet();
  json out{{"domain", o.domain}, {"candidates", json::array()}};
  Source src;
  auto sc = libvirt_open(o.connect_uri);
  if (!sc) return out["error"] = sc.error().text(), out;
  src.conn = std::move(sc.value());
  auto dom = libvirt_domain(src.conn.get(), o.domain);
  if (!dom) return out["error"] = dom.error().text(), out;
  src.dom = std::move(dom.value());
  auto pol = get_policy(src.dom.get());
  src.mode = o.mode.value_or(pol ? pol->mode : kDefaultPolicy);
  out["mode"] = encrypt_mode_name(src.mode);
  src.host = libvirt_host_name(src.conn.get(), "");
  virDomainInfo info{};
  virDomainGetInfo(src.dom.get(), &info);
  src.memory = info.memory * 1024ULL;  // KiB -> bytes
  src.name = virDomainGetName(src.dom.get());
  // The source's encmigd must be there too, or nothing can be encrypted.
  src.probe = handoff::probe_host(src.conn.get(), src.host, "", std::chrono::milliseconds(o.timeout_ms));

  for (const auto& uri : o.candidates) out["candidates"].push_back(judge(src, uri, o.timeout_ms));
  // Prefer an encrypted destination, then the first capable one.
  std::string chosen;
  for (bool want_enc : {true, false})
    for (auto& c : out["candidates"])
      if (chosen.empty() && c["capable"].get<bool>() && (c["encrypted"].get<bool>() || !want_enc))
        chosen = c["uri"].get<std::string>();
  if (!chosen.empty()) out["chosen"] = chosen;
  return out;
}

}  // namespace encmig
