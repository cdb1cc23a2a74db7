// encmig wire protocol, version 1. The whole format lives in this header and
// is mirrored in docs/protocol.md. All integers are big-endian.
//
// Connection (client = source encmigd, server = destination encmigd):
//
//   client                                      server
//   ClientHello (64) ------------------------->
//                    <------------------------- ServerHello (64) + ServerConfirm (32)
//                                               (or Alert (64), then close)
//   ClientConfirm (32) ----------------------->
//   Record* ... FIN   <------------------------> Record* ... FIN
//
// Hello (64 bytes; the ServerHello echoes kind, index and id):
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +---------------------------------------------------------------+
//   |                     magic "EMIG" 0x454d4947                   |  0
//   +-------------------------------+---------------+---------------+
//   |            version            |     kind      |     role      |  4
//   +-------------------------------+---------------+---------------+
//   |                         stream index                          |  8
//   +---------------------------------------------------------------+
//   |                     migration id (16 bytes)                   | 12
//   +---------------------------------------------------------------+
//   |                        random (32 bytes)                      | 28
//   +---------------------------------------------------------------+
//   |                        reserved (zero)                        | 60
//   +---------------------------------------------------------------+
//
// Alert (64 bytes, unauthenticated): magic "EMIA", version, code, reserved,
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
//   AAD = the 16-byte header. GCM nonce = epoch IV XOR (0^32 || counter).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "crypto/result.h"

namespace encmig::wire {

constexpr uint16_t kVersion = 1;
constexpr uint32_t kHelloMagic = 0x454d4947;  // "EMIG"
constexpr uint32_t kAlertMagic = 0x454d4941;  // "EMIA"
constexpr uint32_t kProbeMagic = 0x454d4950;  // "EMIP"

constexpr size_t kKeySize = 32;
constexpr size_t kNonceSize = 8;
constexpr size_t kMigrationIdSize = 16;
constexpr size_t kRandomSize = 32;
constexpr size_t kHelloSize = 64;
constexpr size_t kAlertSize = 64;
constexpr size_t kAlertTextSize = 56;
constexpr size_t kProbeReplySize = 64;
constexpr size_t kProbeVersionTextSize = 48;
constexpr size_t kConfirmSize = 32;

constexpr size_t kRecordHeaderSize = 16;
constexpr size_t kTagSize = 16;
constexpr size_t kRecordOverhead = kRecordHeaderSize + kTagSize;
constexpr uint32_t kMaxRecordPayload = 1u << 20;  // 1 MiB
constexpr size_t kFinPayloadSize = 8;             // total DATA payload bytes sent
constexpr size_t kMaxErrorPayload = 256;
// Rekey epochs: a fresh key and IV every 2^16 records, so one key protects at
// most 2^16 * 2^20 = 2^36 bytes (2^32 AES blocks).
constexpr unsigned kEpochShift = 16;
// Hard stop for one direction of one stream (never reached in practice).
constexpr uint64_t kMaxRecordsPerDirection = 1ull << 48;

constexpr uint32_t kCipherAes256Gcm = 1u << 0;

enum class Kind : uint8_t { kMigration = 1, kNbd = 2, kProbe = 3 };
enum class Role : uint8_t { kClient = 1, kServer = 2 };
enum class RecordType : uint8_t { kData = 1, kFin = 2, kError = 3 };

using MigrationId = std::array<uint8_t, kMigrationIdSize>;
using Random = std::array<uint8_t, kRandomSize>;

struct Hello {
  uint16_t version = kVersion;
  Kind kind = Kind::kMigration;
  Role role = Role::kClient;
  uint32_t stream_index = 0;
  MigrationId migration_id{};
  Random random{};
};

struct Alert {
  uint16_t version = kVersion;
  ErrorCode code = ErrorCode::kOk;
  std::string text;  // at most kAlertTextSize bytes of printable ASCII
};

struct ProbeReply {
  uint16_t version_min = kVersion;
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
// Checks type, flags, reserved and length limits; does not check the counter.
Result<RecordHeader> decode_record_header(const uint8_t in[kRecordHeaderSize]);

inline uint32_t magic_of(const uint8_t* p) { return get32(p); }

std::string_view kind_name(Kind k);

}  // namespace encmig::wire
