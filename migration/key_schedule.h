// The key schedule (docs/protocol.md, "Key schedule").
//
//   PRK        = HKDF-Extract(salt = "encmig/1" || nonce || id, IKM = key)
//   T          = SHA-256(ClientHello || ServerHello)
//   traffic_d  = HKDF-Expand(PRK, "encmig/1 " d " traffic" || T, 32)   d in {c2s, s2c}
//   confirm_d  = HKDF-Expand(PRK, "encmig/1 " d " confirm" || T, 32)
//   key_d,e    = HKDF-Expand(traffic_d, "encmig/1 key" || be32(e), 32)
//   iv_d,e     = HKDF-Expand(traffic_d, "encmig/1 iv"  || be32(e), 12)
//   nonce(c)   = iv_d,e XOR (0^32 || be64(c)),  e = c >> kEpochShift
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

// One direction's record keys, with epoch rekeying.
class TrafficKeys {
 public:
  static Result<TrafficKeys> create(Secret traffic_secret);
  TrafficKeys() = default;
  TrafficKeys(TrafficKeys&&) = default;
  TrafficKeys& operator=(TrafficKeys&&) = default;

  // Makes the AEAD and nonce valid for `counter`, rekeying on a new epoch.
  Status prepare(uint64_t counter);
  Aead& aead() { return aead_; }
  void nonce(uint64_t counter, uint8_t out[kAeadNonceSize]) const;

 private:
  Secret traffic_;
  Secret iv_;
  Aead aead_;
  uint64_t epoch_ = ~0ull;
};

}  // namespace encmig
