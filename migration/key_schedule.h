// The key schedule (docs/protocol.md, section 4; the formulas and labels are
// in migration/wire.h).
#pragma once
#include <array>
#include <cstdint>

#include "crypto/aead.h"
#include "crypto/hkdf.h"
#include "crypto/secret.h"
#include "migration/wire.h"

namespace encmig {

using Nonce64 = std::array<uint8_t, wire::kNonceSize>;

// What the party that starts a migration hands to both hosts.
struct MigrationSecrets {
  Secret key;  // 32 bytes
  // The spec's "nonce": public, random per migration, and used only as part
  // of the salt of HKDF-Extract (salt = "encmig/1" || nonce || id). It is not
  // an AEAD nonce; record nonces come from the record counter (TrafficKeys).
  Nonce64 nonce{};
  wire::MigrationId id{};

  static Result<MigrationSecrets> generate();
  Result<MigrationSecrets> clone() const;
};

enum class Direction { kClientToServer, kServerToClient };

// Per-connection secrets, derived once both hellos are known.
struct ConnectionSecrets {
  std::array<uint8_t, kSha256Size> transcript{};
  Secret c2s_traffic;
  Secret s2c_traffic;
  std::array<uint8_t, wire::kConfirmSize> c2s_confirm{};
  std::array<uint8_t, wire::kConfirmSize> s2c_confirm{};

  static Result<ConnectionSecrets> derive(const MigrationSecrets& m, const uint8_t client_hello[wire::kHelloSize],
                                          const uint8_t server_hello[wire::kHelloSize]);
};

// The secret of one direction of one stream's DATA records (stream_d):
// HKDF-Expand(PRK, "encmig/3 d stream" || kind || be32(index) || salt, 32).
// The same on every connection of the stream; the salt is drawn fresh by the
// direction's sender when the stream starts, so no two streams ever share it,
// even under a reused migration key.
Result<Secret> derive_stream_secret(const MigrationSecrets& m, wire::Kind kind, uint32_t index, Direction d,
                                    const wire::Salt& salt);

class DataSealer;
class DataOpener;
class ControlSealer;
class RecordReader;

// One direction's record keys (a connection's traffic_d, or a stream's
// stream_d), with epoch rekeying. Only the record layer (migration/record.h)
// can seal or open with them, and only at the counter it owns: no caller ever
// chooses a nonce.
class TrafficKeys {
 public:
  static Result<TrafficKeys> create(Secret secret);
  TrafficKeys() = default;
  TrafficKeys(TrafficKeys&&) = default;
  TrafficKeys& operator=(TrafficKeys&&) = default;

 private:
  friend class DataSealer;
  friend class DataOpener;
  friend class ControlSealer;
  friend class RecordReader;
  // Seal or open in place the record with this counter, rekeying first when
  // the counter starts a new epoch. `aad` is the header (control records) or
  // the header and the position (DATA).
  Status seal(uint64_t counter, const uint8_t* aad, size_t aad_len, uint8_t* payload, size_t len,
              uint8_t tag[wire::kTagSize]);
  Status open(uint64_t counter, const uint8_t* aad, size_t aad_len, uint8_t* payload, size_t len,
              const uint8_t tag[wire::kTagSize]);
  Status prepare(uint64_t counter);
  void nonce(uint64_t counter, uint8_t out[kAeadNonceSize]) const;

  Secret traffic_;
  Secret iv_;
  Aead aead_;
  uint64_t epoch_ = ~0ull;
};

}  // namespace encmig
