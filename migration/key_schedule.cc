#include "migration/key_schedule.h"

#include <cstring>
#include <string_view>
#include <vector>

#include "crypto/random.h"

namespace encmig {

namespace {
std::vector<uint8_t> label_with(std::string_view label, const uint8_t* tail, size_t tail_len) {
  std::vector<uint8_t> v(label.begin(), label.end());
  v.insert(v.end(), tail, tail + tail_len);
  return v;
}
}  // namespace

Result<MigrationSecrets> MigrationSecrets::generate() {
  auto key = Secret::random(wire::kKeySize);
  if (!key) return key.error();
  MigrationSecrets m;
  m.key = std::move(key.value());
  if (auto st = random_key_bytes(m.nonce.data(), m.nonce.size()); !st) return st.error();
  if (auto st = random_key_bytes(m.id.data(), m.id.size()); !st) return st.error();
  return m;
}

Result<MigrationSecrets> MigrationSecrets::clone() const {
  auto k = key.clone();
  if (!k) return k.error();
  MigrationSecrets m;
  m.key = std::move(k.value());
  m.nonce = nonce;
  m.id = id;
  return m;
}

namespace {
Result<Secret> migration_prk(const MigrationSecrets& m) {
  if (m.key.size() != wire::kKeySize) return make_error(ErrorCode::kInvalidArgument, "migration key size");
  std::vector<uint8_t> salt(wire::kLabelSalt.begin(), wire::kLabelSalt.end());
  salt.insert(salt.end(), m.nonce.begin(), m.nonce.end());
  salt.insert(salt.end(), m.id.begin(), m.id.end());
  // The migration nonce is public salt material (key_schedule.h), not an AEAD nonce.
  return hkdf_extract(salt, m.key);
}
}  // namespace

Result<Secret> derive_stream_secret(const MigrationSecrets& m, wire::Kind kind, uint32_t index, Direction d,
                                    const wire::Salt& salt) {
  auto prk = migration_prk(m);
  if (!prk) return prk.error();
  uint8_t tail[1 + 4 + wire::kSaltSize];
  tail[0] = uint8_t(kind);
  wire::put32(tail + 1, index);
  std::memcpy(tail + 5, salt.data(), salt.size());
  const auto label = d == Direction::kClientToServer ? wire::kLabelC2sStream : wire::kLabelS2cStream;
  return hkdf_expand(prk.value(), label_with(label, tail, sizeof tail), wire::kTrafficSecretSize);
}

Result<ConnectionSecrets> ConnectionSecrets::derive(const MigrationSecrets& m,
                                                    const uint8_t client_hello[wire::kHelloSize],
                                                    const uint8_t server_hello[wire::kHelloSize]) {
  auto prk = migration_prk(m);
  if (!prk) return prk.error();

  ConnectionSecrets cs;
  uint8_t both[2 * wire::kHelloSize];
  std::memcpy(both, client_hello, wire::kHelloSize);
  std::memcpy(both + wire::kHelloSize, server_hello, wire::kHelloSize);
  if (auto st = sha256(both, cs.transcript.data()); !st) return st.error();
  const uint8_t* t = cs.transcript.data();

  auto c2s = hkdf_expand(prk.value(), label_with(wire::kLabelC2sTraffic, t, kSha256Size), wire::kTrafficSecretSize);
  auto s2c = hkdf_expand(prk.value(), label_with(wire::kLabelS2cTraffic, t, kSha256Size), wire::kTrafficSecretSize);
  if (!c2s) return c2s.error();
  if (!s2c) return s2c.error();
  cs.c2s_traffic = std::move(c2s.value());
  cs.s2c_traffic = std::move(s2c.value());
  if (auto st = hkdf_expand_to(prk.value(), label_with(wire::kLabelC2sConfirm, t, kSha256Size),
                               cs.c2s_confirm.data(), wire::kConfirmSize);
      !st)
    return st.error();
  if (auto st = hkdf_expand_to(prk.value(), label_with(wire::kLabelS2cConfirm, t, kSha256Size),
                               cs.s2c_confirm.data(), wire::kConfirmSize);
      !st)
    return st.error();
  return cs;
}

Result<TrafficKeys> TrafficKeys::create(Secret secret) {
  if (secret.size() != wire::kTrafficSecretSize) return make_error(ErrorCode::kInvalidArgument, "traffic secret size");
  TrafficKeys k;
  k.traffic_ = std::move(secret);
  if (auto st = k.prepare(0); !st) return st.error();
  return k;
}

Status TrafficKeys::prepare(uint64_t counter) {
  uint64_t epoch = counter >> wire::kEpochShift;
  if (epoch == epoch_) return {};
  uint8_t e[4];
  wire::put32(e, uint32_t(epoch));
  auto key = hkdf_expand(traffic_, label_with(wire::kLabelEpochKey, e, 4), kAeadKeySize);
  if (!key) return key.error();
  auto iv = hkdf_expand(traffic_, label_with(wire::kLabelEpochIv, e, 4), kAeadNonceSize);
  if (!iv) return iv.error();
  auto aead = Aead::create(key.value());
  if (!aead) return aead.error();
  aead_ = std::move(aead.value());
  iv_ = std::move(iv.value());
  epoch_ = epoch;
  return {};
}

void TrafficKeys::nonce(uint64_t counter, uint8_t out[kAeadNonceSize]) const {
  std::memcpy(out, iv_.data(), kAeadNonceSize);
  for (int i = 0; i < 8; i++) out[4 + i] ^= uint8_t(counter >> (56 - 8 * i));
}

Status TrafficKeys::seal(uint64_t counter, const uint8_t* aad, size_t aad_len, uint8_t* payload, size_t len,
                         uint8_t* tag) {
  if (auto st = prepare(counter); !st) return st;
  uint8_t n[kAeadNonceSize];
  nonce(counter, n);
  return aead_.seal(n, aad, aad_len, payload, len, tag);
}

Status TrafficKeys::open(uint64_t counter, const uint8_t* aad, size_t aad_len, uint8_t* payload, size_t len,
                         const uint8_t* tag) {
  if (auto st = prepare(counter); !st) return st;
  uint8_t n[kAeadNonceSize];
  nonce(counter, n);
  auto st = aead_.open(n, aad, aad_len, payload, len, tag);
  if (!st && st.error().code == ErrorCode::kTagMismatch) return make_error(ErrorCode::kAuthFailed);
  return st;
}

}  // namespace encmig
