// libFuzzer target: the server and client hello parsers and state machines.
#include <cstddef>
#include <cstdint>

#include "migration/handshake.h"

using namespace encmig;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static MigrationSecrets secrets = [] {
    MigrationSecrets m;
    m.key = std::move(Secret::create(32).value());
    return m;
  }();
  // Server side: arbitrary bytes as a client hello, then as a confirmation.
  auto s = ServerHandshake::create();
  auto r = s.consume(data, size);
  if (r.ok() && s.state() == ServerHandshake::State::kNeedSecrets) {
    if (s.client_hello().migration_id == secrets.id && s.accept(secrets).ok() && r.value() < size)
      (void)s.consume(data + r.value(), size - r.value());
  }
  // Client side: arbitrary bytes as the server's flight or an alert.
  auto c = ClientHandshake::create(secrets.clone().value(), wire::Kind::kMigration, 0);
  if (c.ok()) (void)c->consume(data, size);
  // The raw decoders.
  if (size >= wire::kHelloSize) {
    (void)wire::decode_hello(data, wire::Role::kClient);
    (void)wire::decode_alert(data);
    (void)wire::decode_probe_reply(data);
  }
  return 0;
}
