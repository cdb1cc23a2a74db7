#include "common/libvirt.h"

#include <libvirt/virterror.h>

#include <cstdlib>

namespace encmig {

void libvirt_quiet() {
  virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
}

std::string libvirt_error(const std::string& fallback) {
  const char* m = virGetLastErrorMessage();
  if (!m || std::string(m) == "no error") return fallback;
  return m;
}

Result<VirConn> libvirt_open(const std::string& uri) {
  virConnectPtr c = virConnectOpen(uri.empty() ? nullptr : uri.c_str());
  if (!c) return make_error(ErrorCode::kIo, "cannot connect to libvirt at " + (uri.empty() ? "default URI" : uri) + ": " +
                                                libvirt_error());
  return VirConn(c);
}

Result<VirDomain> libvirt_domain(virConnectPtr c, const std::string& name) {
  virDomainPtr d = virDomainLookupByName(c, name.c_str());
  if (!d) d = virDomainLookupByUUIDString(c, name.c_str());
  if (!d && !name.empty() && name.find_first_not_of("0123456789") == std::string::npos)
    d = virDomainLookupByID(c, std::atoi(name.c_str()));
  if (!d) return make_error(ErrorCode::kInvalidArgument, "failed to get domain '" + name + "'");
  virResetLastError();
  return VirDomain(d);
}

std::string libvirt_uri_host(const std::string& uri) {
  auto p = uri.find("://");
  if (p == std::string::npos) return "";
  std::string rest = uri.substr(p + 3);
  rest = rest.substr(0, rest.find('/'));
  if (auto at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
  if (!rest.empty() && rest[0] == '[') return rest.substr(1, rest.find(']') - 1);
  return rest.substr(0, rest.find(':'));
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string xml_unescape(const std::string& s) {
  static const std::pair<const char*, char> ents[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string o;
  for (size_t i = 0; i < s.size();) {
    bool hit = false;
    if (s[i] == '&') {
      for (auto& [e, c] : ents) {
        size_t n = std::char_traits<char>::length(e);
        if (s.compare(i, n, e) == 0) {
          o += c;
          i += n;
          hit = true;
          break;
        }
      }
    }
    if (!hit) o += s[i++];
  }
  return o;
}

std::string xml_element_text(const std::string& xml, const std::string& tag) {
  auto b = xml.find("<" + tag + ">");
  if (b == std::string::npos) return "";
  b += tag.size() + 2;
  auto e = xml.find("</" + tag + ">", b);
  if (e == std::string::npos) return "";
  return xml_unescape(xml.substr(b, e - b));
}

std::string xml_attribute(const std::string& xml, const std::string& tag, const std::string& attr) {
  size_t b = 0;
  for (;;) {
    b = xml.find("<" + tag, b);
    if (b == std::string::npos) return "";
    char after = b + tag.size() + 1 < xml.size() ? xml[b + tag.size() + 1] : '>';
    if (after == ' ' || after == '/' || after == '>' || after == '\n' || after == '\t') break;
    b += 1;
  }
  auto e = xml.find('>', b);
  std::string el = xml.substr(b, e == std::string::npos ? std::string::npos : e - b);
  for (char q : {'\'', '"'}) {
    std::string key = " " + attr + "=" + q;
    auto p = el.find(key);
    if (p == std::string::npos) continue;
    p += key.size();
    auto end = el.find(q, p);
    if (end == std::string::npos) return "";
    return xml_unescape(el.substr(p, end - p));
  }
  return "";
}

}  // namespace encmig
