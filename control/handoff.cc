#include "control/handoff.h"

#include "control/libvirt.h"

namespace encmig::handoff {

std::string secret_xml(const std::string& usage, const json& description, const std::string& uuid) {
  std::string x = "<secret ephemeral='yes' private='no'>\n";
  if (!uuid.empty()) x += "  <uuid>" + xml_escape(uuid) + "</uuid>\n";
  x += "  <description>" + xml_escape(description.dump()) + "</description>\n";
  x += "  <usage type='tls'><name>" + xml_escape(usage) + "</name></usage>\n</secret>\n";
  return x;
}

Result<json> parse(const std::string& secret_xml) {
  std::string d = xml_element_text(secret_xml, "description");
  if (d.empty() || d.size() > kMaxDescription) return make_error(ErrorCode::kInvalidArgument, "no encmig description");
  json j = json::parse(d, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("encmig", 0) != kFormat)
    return make_error(ErrorCode::kInvalidArgument, "description is not an encmig v1 request");
  return j;
}

std::string migrate_path(const std::string& run_dir, const std::string& id) { return run_dir + "/" + id + "/migrate.sock"; }
std::string nbd_path(const std::string& run_dir, const std::string& id) { return run_dir + "/" + id + "/nbd.sock"; }

}  // namespace encmig::handoff

#include <thread>

#include "crypto/random.h"
#include "migration/session.h"

namespace encmig::handoff {

Result<HostSecret> HostSecret::define(virConnectPtr c, const std::string& host, const std::string& usage,
                                      const json& request, const MigrationSecrets* secrets) {
  HostSecret h;
  h.host_ = host;
  std::string xml = secret_xml(usage, request);
  h.s_.reset(virSecretDefineXML(c, xml.c_str(), 0));
  if (!h.s_) return make_error(ErrorCode::kIo, "cannot define the hand-off secret on " + host + ": " + libvirt_error());
  if (secrets) {
    auto v = Secret::create(kValueSize);
    if (!v) return v.error();
    std::memcpy(v->mutable_data(), secrets->key.data(), wire::kKeySize);
    std::memcpy(v->mutable_data() + wire::kKeySize, secrets->nonce.data(), secrets->nonce.size());
    if (virSecretSetValue(h.s_.get(), v->data(), v->size(), 0) != 0)
      return make_error(ErrorCode::kIo, "cannot hand the key to " + host + ": " + libvirt_error());
  }
  return h;
}

Result<json> HostSecret::read() const {
  if (!s_) return make_error(ErrorCode::kInternal, "no secret");
  char* xml = virSecretGetXMLDesc(s_.get(), 0);
  if (!xml) return make_error(ErrorCode::kIo, "cannot read the hand-off secret on " + host_ + ": " + libvirt_error());
  auto j = parse(xml);
  free(xml);
  return j;
}

Result<json> HostSecret::wait_answer(std::chrono::milliseconds timeout, const std::function<bool()>& interrupted) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto j = read();
    if (!j) return j;
    if (j->contains("state")) return j;
    if (interrupted && interrupted()) return make_error(ErrorCode::kCancelled, "interrupted");
    if (std::chrono::steady_clock::now() > deadline)
      return make_error(ErrorCode::kTimeout, "no encmigd answered on " + host_ + " within " +
                                                 std::to_string(timeout.count() / 1000.0).substr(0, 3) + " s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void HostSecret::undefine() {
  if (!s_) return;
  virSecretUndefine(s_.get());
  s_.reset();
}

Result<json> probe_host(virConnectPtr c, const std::string& host, const std::string& peer,
                        std::chrono::milliseconds timeout) {
  wire::MigrationId r{};  // a random name, spelled like a migration id
  if (auto st = random_nonce_bytes(r.data(), r.size()); !st) return st.error();
  std::string hex = id_hex(r);
  json req{{"encmig", kFormat}, {"probe", true}};
  if (!peer.empty()) req["peer"] = peer;
  auto s = HostSecret::define(c, host, kProbePrefix + hex, req, nullptr);
  if (!s) return s.error();
  return s->wait_answer(timeout, nullptr);
}

}  // namespace encmig::handoff
