#include "cli/host_secret.h"

#include <cstring>
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
