// Small RAII handles over libvirt's C API, shared by encmig and encmigd.
#pragma once
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <memory>
#include <string>

#include "migration/wire.h"  // ErrorCode

namespace encmig {

struct VirConnClose { void operator()(virConnectPtr c) const { if (c) virConnectClose(c); } };
struct VirDomainFree { void operator()(virDomainPtr d) const { if (d) virDomainFree(d); } };
struct VirSecretFree { void operator()(virSecretPtr s) const { if (s) virSecretFree(s); } };
using VirConn = std::unique_ptr<virConnect, VirConnClose>;
using VirDomain = std::unique_ptr<virDomain, VirDomainFree>;
using VirSecret = std::unique_ptr<virSecret, VirSecretFree>;

// Silences libvirt's default error printer; errors are reported by callers.
void libvirt_quiet();
// The last libvirt error on this thread, or `fallback`.
std::string libvirt_error(const std::string& fallback = "libvirt error");
Result<VirConn> libvirt_open(const std::string& uri);
// By name, UUID or numeric id, like virsh.
Result<VirDomain> libvirt_domain(virConnectPtr c, const std::string& name);
// The host part of a libvirt URI ("qemu+tcp://hostb/system" -> "hostb"), or "".
std::string libvirt_uri_host(const std::string& uri);

std::string xml_escape(const std::string& s);
std::string xml_unescape(const std::string& s);
// Text between <tag> and </tag> (unescaped), or "" if absent.
std::string xml_element_text(const std::string& xml, const std::string& tag);
// Value of attr="..." or attr='...' in the first <tag ...> element, or "".
std::string xml_attribute(const std::string& xml, const std::string& tag, const std::string& attr);

}  // namespace encmig
