// encmig wire protocol, version 3. The whole format lives in this header and
// is mirrored in docs/protocol.md. All integers are big-endian.
//
// Version 3 is the only version: no release shipped versions 1 or 2, so none
// is carried. The version field stays (it is bound into every key), and a
// hello of any other version is refused, never answered in another one.
//
// Connection (client = source encmigd, server = destination encmigd):
//
//   client                                      server
//   ClientHello (64) ------------------------->
//                    <------------------------- ServerHello (64) + ServerConfirm (32)
//                                               (or Alert (64), then close)
//   ClientConfirm (32) + START --------------->
//                    <------------------------- START
//   DATA, ACK ... FIN <-----------------------> DATA, ACK ... FIN
//
// Hello (64 bytes; the ServerHello echoes kind, index, id and flags):
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +---------------------------------------------------------------+
//   |                     magic "EMIG" 0x454d4947                   |  0
//   +-------------------------------+---------------+---------------+
//   |          version (3)          |     kind      |     role      |  4
//   +-------------------------------+---------------+---------------+
//   |                         stream index                          |  8
//   +---------------------------------------------------------------+
//   |                     migration id (16 bytes)                   | 12
//   +---------------------------------------------------------------+
//   |                        random (32 bytes)                      | 28
//   +---------------------------------------------------------------+
//   |                  flags (bit 0 RESUME; others 0)               | 60
//   +---------------------------------------------------------------+
//
// Alert (64 bytes, unauthenticated): magic "EMIA" (4), version (2), code (2),
// then 56 bytes of NUL-padded ASCII text.
//
// ProbeReply (64 bytes, unauthenticated): magic "EMIP", version_min,
// version_max, ciphers bitmask, max record payload, 48 bytes NUL-padded
// software version.
//
// Record:
//   +---------------+---------------+-------------------------------+
//   |     type      |  flags (0)    |         reserved (0)          |  0
//   +---------------+---------------+-------------------------------+
//   |                  payload length (plaintext)                   |  4
//   +---------------------------------------------------------------+
//   |                     counter (64 bits)                         |  8
//   +---------------------------------------------------------------+
//   |          ciphertext (length bytes) ...   |   tag (16 bytes)   | 16
//   +---------------------------------------------------------------+
//
// Two kinds of records share the layout:
//   DATA (type 1, 1..2^20 bytes of the stream): a *stream* record. Sealed once
//     by its sender under the keys of the stream's direction (stream_d below),
//     counter = its number among the stream's DATA records in that direction,
//     counted from the stream's start across every connection; AAD = header ||
//     be64(stream position of its first byte). Resent after a resume as the
//     same bytes, never sealed again.
//   Control records, under the connection's keys (traffic_d), counter = their
//     number among this connection's control records in that direction;
//     AAD = header:
//       2 FIN   (48): be64 total DATA bytes || be64 DATA records || digest (32)
//       3 ERROR (2..256): be16 code || ASCII text
//       4 ACK   (8): be64 position (DATA bytes of the peer delivered to QEMU;
//                    total + 1 once its FIN is delivered too)
//       5 START (40): be64 position (as ACK) || stream salt (32)
//   START is the first record in each direction of every connection.
//   digest = SHA-256(tag_0 || tag_1 || ... ) over the stream's DATA tags.
//   GCM nonce = iv_e XOR (0^32 || be64(counter)), e = counter >> kEpochShift.
//
// Key schedule (labels below; section 4 of docs/protocol.md):
//   PRK        = HKDF-Extract(salt = "encmig/1" || nonce || id, IKM = key)
//   T          = SHA-256(ClientHello || ServerHello)
//   traffic_d  = HKDF-Expand(PRK, "encmig/1 " d " traffic" || T, 32)   d in {c2s, s2c}
//   confirm_d  = HKDF-Expand(PRK, "encmig/1 " d " confirm" || T, 32)
//   stream_d   = HKDF-Expand(PRK, "encmig/3 " d " stream" || kind || be32(index) || salt_d, 32)
//   key_e      = HKDF-Expand(secret, "encmig/1 key" || be32(e), 32)   secret = traffic_d or stream_d
//   iv_e       = HKDF-Expand(secret, "encmig/1 iv"  || be32(e), 12)
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "crypto/result.h"

namespace encmig {

// Error codes (docs/protocol.md, section 10). Values 1..63 are sent on the
// wire in Alerts and ERROR records: keep them stable. 64 and up are local to a
// process and never sent; the crypto layer's own codes (crypto/result.h) are
// among them.
enum class ErrorCode : uint16_t {
  kOk = 0,
  // ---- wire codes ----
  kBadMagic = 1,
  kBadVersion = 2,
  kBadKind = 3,
  kBadReserved = 4,       // a reserved or flags field is not zero
  kUnknownMigration = 5,
  kDuplicateStream = 6,
  kKeyConfirmFailed = 7,
  kHelloMismatch = 8,
  kRecordTooLarge = 9,
  kBadRecordType = 10,
  kCounterMismatch = 11,
  kAuthFailed = 12,
  kTruncated = 13,
  kDataAfterFin = 14,
  kBadFin = 15,
  kRecordLimit = 16,
  kPeerAlert = 17,
  kPeerError = 18,
  kCancelled = 19,
  kNotReady = 20,
  kPolicy = 21,
  kBadRole = 22,          // a hello's role is not the one its sender must have
  kLocalFailure = 23,     // the sender failed on its own side (its QEMU, a socket, a timeout); the text says how
  kResumeRefused = 24,    // a connection's first record is not START, or its START cannot be taken: no such
                          // stream, a finished one, a position out of range, a salt that changed
  kBadAck = 25,           // an ACK beyond what was sent, below an earlier one, or inside a record
  kIntegrity = 26,        // what the receiver delivered to its QEMU is not what the FIN says was sent, or a
                          // record was about to be delivered out of place: never a "completed" stream
  // ---- local codes ----
  kCrypto = 64,
  kIo = 65,
  kInvalidArgument = 66,
  kTimeout = 67,
  kInternal = 68,
  kTagMismatch = 69,      // crypto layer: an AEAD tag did not verify (the record layer reports kAuthFailed)
  kCommandNotFound = 70,  // control socket: no such command
  kAlreadyArmed = 71,     // control socket: a migration with this id is armed already
  kLimit = 72,            // a configured limit was reached (armed migrations, ...)
};
static_assert(crypto_error::kCrypto == ErrorCode::kCrypto && crypto_error::kInvalidArgument == ErrorCode::kInvalidArgument &&
              crypto_error::kInternal == ErrorCode::kInternal && crypto_error::kTagMismatch == ErrorCode::kTagMismatch);
constexpr uint16_t kMaxWireErrorCode = 63;

namespace wire {

constexpr uint16_t kVersion3 = 3;
constexpr uint16_t kVersion = kVersion3;     // the one version spoken
constexpr uint16_t kMinVersion = kVersion3;  // and the oldest one accepted
constexpr uint32_t kHelloFlagResume = 1u << 0;  // this connection resumes an existing stream
constexpr uint16_t kDefaultPort = 16520;  // encmigd's data port unless configured otherwise
constexpr uint32_t kHelloMagic = 0x454d4947;  // "EMIG"
constexpr uint32_t kAlertMagic = 0x454d4941;  // "EMIA"
constexpr uint32_t kProbeMagic = 0x454d4950;  // "EMIP"

constexpr size_t kKeySize = 32;
// The migration's "nonce" (the spec's name): not an AEAD nonce but 8 public
// random bytes that enter the key derivation's salt, so that two migrations
// never derive the same PRK even if a key were reused.
constexpr size_t kNonceSize = 8;
constexpr size_t kMigrationIdSize = 16;
constexpr size_t kRandomSize = 32;
constexpr size_t kHelloSize = 64;
constexpr size_t kAlertSize = 64;
constexpr size_t kAlertTextSize = 56;
constexpr size_t kProbeReplySize = 64;
constexpr size_t kProbeVersionTextSize = 48;
constexpr size_t kConfirmSize = 32;
// What the client reads after its hello: ServerHello || ServerConfirm.
constexpr size_t kServerFlightSize = kHelloSize + kConfirmSize;

constexpr size_t kRecordHeaderSize = 16;
constexpr size_t kTagSize = 16;
constexpr size_t kRecordOverhead = kRecordHeaderSize + kTagSize;
constexpr uint32_t kMaxRecordPayload = 1u << 20;  // 1 MiB
constexpr size_t kDigestSize = 32;                // SHA-256 of the stream's DATA tags
constexpr size_t kSaltSize = 32;                  // a stream direction's salt, in START
constexpr size_t kFinPayloadSize = 8 + 8 + kDigestSize;  // total DATA bytes || DATA records || digest
constexpr size_t kMinErrorPayload = 2;            // the be16 code
constexpr size_t kMaxErrorPayload = 256;
constexpr size_t kFinRecordSize = kRecordOverhead + kFinPayloadSize;
constexpr size_t kAckPayloadSize = 8;             // ACK: be64 position
constexpr size_t kAckRecordSize = kRecordOverhead + kAckPayloadSize;
constexpr size_t kStartPayloadSize = 8 + kSaltSize;  // START: be64 position || salt
constexpr size_t kStartRecordSize = kRecordOverhead + kStartPayloadSize;
constexpr size_t kDataAadSize = kRecordHeaderSize + 8;  // DATA: header || be64 position
constexpr size_t kMaxErrorRecordSize = kRecordOverhead + kMaxErrorPayload;
// Rekey epochs: a fresh key and IV every 2^16 records, so one key protects at
// most 2^16 * 2^20 = 2^36 bytes (2^32 AES blocks).
constexpr unsigned kEpochShift = 16;
// Counters 0 .. 2^48 - 1: DATA records per direction of one stream, and
// control records per direction of one connection. The record with counter
// 2^48 - 1 is the last that may be sent (never reached in practice).
constexpr uint64_t kMaxRecordsPerDirection = 1ull << 48;

constexpr uint32_t kCipherAes256Gcm = 1u << 0;

// Key schedule labels: ASCII, no terminator.
constexpr std::string_view kLabelSalt = "encmig/1";
constexpr std::string_view kLabelC2sTraffic = "encmig/1 c2s traffic";
constexpr std::string_view kLabelS2cTraffic = "encmig/1 s2c traffic";
constexpr std::string_view kLabelC2sConfirm = "encmig/1 c2s confirm";
constexpr std::string_view kLabelS2cConfirm = "encmig/1 s2c confirm";
constexpr std::string_view kLabelEpochKey = "encmig/1 key";
constexpr std::string_view kLabelEpochIv = "encmig/1 iv";
constexpr std::string_view kLabelC2sStream = "encmig/3 c2s stream";
constexpr std::string_view kLabelS2cStream = "encmig/3 s2c stream";
constexpr size_t kTrafficSecretSize = 32;

enum class Kind : uint8_t { kMigration = 1, kNbd = 2, kProbe = 3 };
enum class Role : uint8_t { kClient = 1, kServer = 2 };
enum class RecordType : uint8_t { kData = 1, kFin = 2, kError = 3, kAck = 4, kStart = 5 };
const char* record_type_name(RecordType t);  // "DATA", "FIN", ...

using MigrationId = std::array<uint8_t, kMigrationIdSize>;
using Random = std::array<uint8_t, kRandomSize>;
using Salt = std::array<uint8_t, kSaltSize>;
using Digest = std::array<uint8_t, kDigestSize>;

struct Hello {
  uint16_t version = kVersion;
  Kind kind = Kind::kMigration;
  Role role = Role::kClient;
  uint32_t stream_index = 0;
  MigrationId migration_id{};
  Random random{};
  uint32_t flags = 0;  // kHelloFlag*
};

struct Alert {
  uint16_t version = kVersion;
  ErrorCode code = ErrorCode::kOk;
  std::string text;  // at most kAlertTextSize bytes of printable ASCII
};

struct ProbeReply {
  uint16_t version_min = kMinVersion;
  uint16_t version_max = kVersion;
  uint32_t ciphers = kCipherAes256Gcm;
  uint32_t max_record = kMaxRecordPayload;
  std::string software;  // at most kProbeVersionTextSize bytes
};

struct RecordHeader {
  RecordType type = RecordType::kData;
  uint32_t length = 0;
  uint64_t counter = 0;
};

// START: the first record of each direction of every connection.
struct Start {
  uint64_t position = 0;  // what the sender has delivered of the peer's DATA (+1 with its FIN)
  Salt salt{};            // the sender's DATA direction: its stream key's salt, the same on every connection
};

// FIN: the end of one direction of a stream, and its summary.
struct Fin {
  uint64_t total = 0;    // DATA payload bytes in the stream (the FIN is position total + 1)
  uint64_t records = 0;  // DATA records in the stream
  Digest digest{};       // SHA-256 over the tags of those records, in order
};

// Big-endian helpers.
inline void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void put32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (24 - 8 * i)); }
inline void put64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = uint8_t(v >> (56 - 8 * i)); }
inline uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
inline uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }

void encode_hello(const Hello& h, uint8_t out[kHelloSize]);
// Checks magic, version, kind, role and reserved bytes.
Result<Hello> decode_hello(const uint8_t in[kHelloSize], Role expected_role);

void encode_alert(const Alert& a, uint8_t out[kAlertSize]);
Result<Alert> decode_alert(const uint8_t in[kAlertSize]);

void encode_probe_reply(const ProbeReply& r, uint8_t out[kProbeReplySize]);
Result<ProbeReply> decode_probe_reply(const uint8_t in[kProbeReplySize]);

void encode_record_header(const RecordHeader& h, uint8_t out[kRecordHeaderSize]);
// Checks type, flags, reserved and length limits; not the counter.
Result<RecordHeader> decode_record_header(const uint8_t in[kRecordHeaderSize]);

inline uint32_t magic_of(const uint8_t* p) { return get32(p); }

std::string_view kind_name(Kind k);

}  // namespace wire
}  // namespace encmig
