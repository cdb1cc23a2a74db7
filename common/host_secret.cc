#include "common/host_secret.h"

#include <cstring>
#include <thread>

#include "common/json.h"
#include "crypto/random.h"
#include "migration/session.h"

namespace encmig::handoff {

Status check_secure_connection(virConnectPtr c, const std::string& host) {
  if (virConnectIsSecure(c) == 1) return {};
  char* uri = virConnectGetURI(c);
  std::string u = uri ? uri : "?";
  free(uri);
  return make_error(ErrorCode::kPolicy,
                    "refusing to hand the migration key to " + host + " over " + u +
                        ": libvirt reports the connection as not secure (neither encrypted nor a local socket), so the "
                        "key could be read on the network; use qemu+tls:// or qemu+ssh:// (or a local qemu:///system), "
                        "or --allow-insecure-handoff in a lab");
}

Result<HostSecret> HostSecret::define(virConnectPtr c, const std::string& host, const std::string& usage,
                                      json request, const MigrationSecrets* secrets, bool allow_insecure) {
  HostSecret h;
  h.host_ = host;
  if (secrets) {
    if (!allow_insecure)
      if (auto st = check_secure_connection(c, host); !st) return st.error();
    auto keys = MacKeys::derive(*secrets);
    if (!keys) return keys.error();
    if (auto st = sign(request, keys->request); !st) return st.error();
    h.answer_key_ = std::move(keys->answer);
  }
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
  if (!j || !answer_key_ || !j->contains("state")) return j;
  if (auto st = verify(j.value(), *answer_key_); !st)
    return make_error(ErrorCode::kAuthFailed, "the answer on " + host_ + " is not encmigd's: " + st.error().text());
  int64_t seq = json_int(j.value(), "seq", -1);
  if (seq < seq_) return make_error(ErrorCode::kAuthFailed, "the answer on " + host_ + " went back to an older one (replayed)");
  seq_ = seq;
  return j;
}

Result<bool> HostSecret::key_taken() const {
  if (!s_) return make_error(ErrorCode::kInternal, "no secret");
  char* xml = virSecretGetXMLDesc(s_.get(), 0);
  if (!xml) return make_error(ErrorCode::kIo, "cannot read the hand-off secret on " + host_ + ": " + libvirt_error());
  std::string x(xml);
  free(xml);
  // Redefined as persistent or private (by someone allowed to write secrets),
  // it is hidden from encmigd: that is tampering, not a host without encmigd.
  if (xml_attribute(x, "secret", "ephemeral") != "yes" || xml_attribute(x, "secret", "private") != "no")
    return make_error(ErrorCode::kAuthFailed, "the hand-off secret on " + host_ + " was redefined (no longer ephemeral and public)");
  size_t size = 0;
  unsigned char* v = virSecretGetValue(s_.get(), &size, 0);
  if (!v) return make_error(ErrorCode::kIo, "cannot read the hand-off secret's value on " + host_ + ": " + libvirt_error());
  bool taken = size == 1 && v[0] == 0;  // encmigd leaves one zero byte once it holds the key
  secure_wipe(v, size);
  free(v);
  return taken;
}

Result<json> HostSecret::wait_answer(std::chrono::milliseconds timeout, const std::function<bool()>& interrupted) const {
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + timeout;
  bool extended = false;
  for (;;) {
    auto j = read();
    if (!j) return j;
    if (j->contains("state")) return j;
    if (interrupted && interrupted()) return make_error(ErrorCode::kCancelled, "interrupted");
    if (std::chrono::steady_clock::now() > deadline) {
      // Whether a host runs encmigd is a fact, not a matter of timing: the
      // daemon takes the key out of libvirt the moment it sees the secret.
      // If the key is still there, nothing is watching this host's libvirt.
      if (!answer_key_) return make_error(ErrorCode::kTimeout, "no encmigd answered on " + host_);
      auto taken = key_taken();
      if (!taken) return taken.error();
      if (!taken.value())
        return make_error(ErrorCode::kTimeout, "no encmigd answered on " + host_ + " within " +
                                                   std::to_string(timeout.count() / 1000.0).substr(0, 3) + " s");
      if (extended)
        return make_error(ErrorCode::kNotReady, "encmigd on " + host_ + " took the key but did not answer within " +
                                                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                                       std::chrono::steady_clock::now() - start).count()) + " s");
      deadline += kArmingGrace;  // it is there, and busy (e.g. probing its peer): give it time
      extended = true;
    }
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
