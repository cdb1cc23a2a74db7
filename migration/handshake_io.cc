#include "migration/handshake_io.h"

namespace encmig {

Result<std::unique_ptr<EncryptedChannel>> client_handshake(Fd&& tcp, MigrationSecrets secrets, wire::Kind kind,
                                                           uint32_t index, std::string name, Deadline deadline) {
  auto hs = ClientHandshake::create(std::move(secrets), kind, index);
  if (!hs) return hs.error();
  if (auto st = write_all(tcp.get(), hs->hello().data(), hs->hello().size()); !st) return st.error();
  uint8_t buf[wire::kServerFlightSize];
  while (hs->state() == ClientHandshake::State::kAwaitServer) {
    size_t want = hs->wanted();
    if (auto st = read_exact(tcp.get(), buf, want, deadline); !st)
      return Error{st.error().code, "handshake: " + st.error().detail};
    auto used = hs->consume(buf, want);
    if (!used) return used.error();
  }
  if (auto st = write_all(tcp.get(), hs->confirm().data(), hs->confirm().size()); !st) return st.error();
  auto keys = hs->take_keys();
  if (!keys) return keys.error();
  return EncryptedChannel::create(std::move(tcp), std::move(keys.value()), std::move(name));
}

ServerSocketHandshake::ServerSocketHandshake(Fd tcp, Deadline deadline) : tcp_(std::move(tcp)), deadline_(deadline) {}

Result<wire::Hello> ServerSocketHandshake::read_hello() {
  uint8_t buf[wire::kHelloSize];
  if (auto st = read_exact(tcp_.get(), buf, sizeof buf, deadline_); !st)
    return Error{st.error().code, "no hello: " + st.error().detail};
  if (auto r = hs_.consume(buf, sizeof buf); !r) {
    reject(r.error().code, r.error().message());
    return Error{r.error().code, "malformed hello: " + r.error().detail};
  }
  return hs_.client_hello();
}

void ServerSocketHandshake::answer_probe(const wire::ProbeReply& reply) {
  hs_.answer_probe(reply);
  (void)write_all(tcp_.get(), hs_.output().data(), hs_.output().size());
}

void ServerSocketHandshake::reject(ErrorCode code, const std::string& text) {
  hs_.reject(code, text);
  (void)write_all(tcp_.get(), hs_.output().data(), hs_.output().size());
  alerted_ = true;
}

Result<std::unique_ptr<EncryptedChannel>> ServerSocketHandshake::complete(const MigrationSecrets& secrets,
                                                                          std::string name) {
  if (auto st = hs_.accept(secrets); !st) return st.error();
  if (auto st = write_all(tcp_.get(), hs_.output().data(), hs_.output().size()); !st) return st.error();
  uint8_t confirm[wire::kConfirmSize];
  if (auto st = read_exact(tcp_.get(), confirm, sizeof confirm, deadline_); !st) return st.error();
  if (auto r = hs_.consume(confirm, sizeof confirm); !r) {
    reject(r.error().code, "key confirmation failed");
    return r.error();
  }
  auto keys = hs_.take_keys();
  if (!keys) return keys.error();
  return EncryptedChannel::create(std::move(tcp_), std::move(keys.value()), std::move(name));
}

Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms) {
  Deadline deadline = deadline_in(timeout_ms);
  auto fd = tcp_connect(hp, SocketOptions{}, timeout_ms);
  if (!fd) return fd.error();
  wire::Hello h;
  h.kind = wire::Kind::kProbe;
  uint8_t raw[wire::kHelloSize];
  wire::encode_hello(h, raw);
  if (auto st = write_all(fd->get(), raw, sizeof raw); !st) return st.error();
  uint8_t reply[wire::kProbeReplySize];
  if (auto st = read_exact(fd->get(), reply, sizeof reply, deadline); !st) return st.error();
  return wire::decode_probe_reply(reply);
}

}  // namespace encmig
