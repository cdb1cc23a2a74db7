#include "common/policy.h"

#include "common/libvirt.h"

namespace encmig {

Result<EncryptMode> parse_encrypt_mode(const std::string& s) {
  if (s == "disabled" || s == "off" || s == "no") return EncryptMode::kDisabled;
  if (s == "opportunistic" || s.empty()) return EncryptMode::kOpportunistic;
  if (s == "required" || s == "on" || s == "yes") return EncryptMode::kRequired;
  return make_error(ErrorCode::kInvalidArgument, "encryption mode must be disabled, opportunistic or required, not '" + s + "'");
}

const char* encrypt_mode_name(EncryptMode m) {
  switch (m) {
    case EncryptMode::kDisabled: return "disabled";
    case EncryptMode::kOpportunistic: return "opportunistic";
    case EncryptMode::kRequired: return "required";
  }
  return "?";
}

Result<DomainPolicy> get_policy(virDomainPtr dom) {
  char* md = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, kPolicyNamespace, VIR_DOMAIN_AFFECT_CURRENT);
  if (!md) {
    virErrorPtr e = virGetLastError();
    if (e && e->code == VIR_ERR_NO_DOMAIN_METADATA) {
      virResetLastError();
      return DomainPolicy{};
    }
    return make_error(ErrorCode::kIo, "cannot read the domain's metadata: " + libvirt_error());
  }
  std::string xml(md);
  free(md);
  std::string v = xml_attribute(xml, "policy", "encrypted");
  auto m = parse_encrypt_mode(v);
  if (!m) return make_error(ErrorCode::kInvalidArgument, "the domain's encmig policy is invalid: " + m.error().text());
  return DomainPolicy{m.value(), true};
}

Status set_policy(virDomainPtr dom, EncryptMode mode) {
  std::string xml = std::string("<policy encrypted='") + encrypt_mode_name(mode) + "'/>";
  unsigned flags = 0;
  if (virDomainIsActive(dom) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (virDomainIsPersistent(dom) == 1) flags |= VIR_DOMAIN_AFFECT_CONFIG;
  if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, xml.c_str(), kPolicyPrefix, kPolicyNamespace, flags) != 0)
    return make_error(ErrorCode::kIo, "cannot set the domain's metadata: " + libvirt_error());
  return {};
}

Result<DomainPolicy> domain_policy(const std::string& uri, const std::string& domain, std::optional<EncryptMode> mode) {
  libvirt_quiet();
  auto c = libvirt_open(uri);
  if (!c) return c.error();
  auto d = libvirt_domain(c->get(), domain);
  if (!d) return d.error();
  if (mode)
    if (auto st = set_policy(d->get(), *mode); !st) return st.error();
  return get_policy(d->get());
}

EncryptOutcome decide_encryption(EncryptMode mode, Capability hosts) {
  if (mode == EncryptMode::kDisabled) return EncryptOutcome::kPlain;
  if (hosts == Capability::kBothCan) return EncryptOutcome::kEncrypt;
  if (mode == EncryptMode::kRequired) return EncryptOutcome::kRefuse;
  return hosts == Capability::kNoDaemon ? EncryptOutcome::kPlain : EncryptOutcome::kFail;
}

}  // namespace encmig
