#include "migration/wire.h"

namespace encmig {

const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kBadMagic: return "bad magic";
    case ErrorCode::kBadVersion: return "unsupported protocol version";
    case ErrorCode::kBadKind: return "bad stream kind";
    case ErrorCode::kBadReserved: return "nonzero reserved field";
    case ErrorCode::kUnknownMigration: return "unknown migration id";
    case ErrorCode::kDuplicateStream: return "duplicate stream index";
    case ErrorCode::kKeyConfirmFailed: return "key confirmation failed (wrong key or tampered hello)";
    case ErrorCode::kHelloMismatch: return "server hello does not match client hello";
    case ErrorCode::kRecordTooLarge: return "record length above limit";
    case ErrorCode::kBadRecordType: return "bad record type";
    case ErrorCode::kCounterMismatch: return "record counter mismatch (replay, reorder or drop)";
    case ErrorCode::kAuthFailed: return "record authentication failed (tampered or wrong key)";
    case ErrorCode::kTruncated: return "stream truncated (no authenticated end-of-stream record)";
    case ErrorCode::kDataAfterFin: return "data after end-of-stream record";
    case ErrorCode::kBadFin: return "malformed end-of-stream record";
    case ErrorCode::kRecordLimit: return "record limit reached";
    case ErrorCode::kPeerAlert: return "peer rejected the connection";
    case ErrorCode::kPeerError: return "peer reported an error";
    case ErrorCode::kCancelled: return "migration cancelled";
    case ErrorCode::kNotReady: return "not ready";
    case ErrorCode::kPolicy: return "refused by policy";
    case ErrorCode::kBadRole: return "wrong role in hello";
    case ErrorCode::kLocalFailure: return "failure on the peer's side";
    case ErrorCode::kResumeRefused: return "stream start or resume refused";
    case ErrorCode::kBadAck: return "bad acknowledgement";
    case ErrorCode::kIntegrity: return "stream integrity check failed";
    case ErrorCode::kCrypto: return "crypto library error";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kTimeout: return "timed out";
    case ErrorCode::kInternal: return "internal error";
    case ErrorCode::kTagMismatch: return "AEAD tag mismatch";
    case ErrorCode::kCommandNotFound: return "command not found";
    case ErrorCode::kAlreadyArmed: return "migration already armed";
    case ErrorCode::kLimit: return "limit reached";
  }
  return "unknown error";
}

namespace wire {

namespace {

void put_text(uint8_t* out, size_t cap, std::string_view s) {
  std::memset(out, 0, cap);
  size_t n = 0;
  for (char c : s) {
    if (n == cap) break;
    out[n++] = (c >= 0x20 && c < 0x7f) ? uint8_t(c) : uint8_t('?');
  }
}

std::string get_text(const uint8_t* in, size_t cap) {
  std::string s;
  for (size_t i = 0; i < cap && in[i]; i++) s.push_back((in[i] >= 0x20 && in[i] < 0x7f) ? char(in[i]) : '?');
  return s;
}
}  // namespace

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::kMigration: return "migration";
    case Kind::kNbd: return "nbd";
    case Kind::kProbe: return "probe";
  }
  return "unknown";
}

void encode_hello(const Hello& h, uint8_t out[kHelloSize]) {
  put32(out, kHelloMagic);
  put16(out + 4, h.version);
  out[6] = uint8_t(h.kind);
  out[7] = uint8_t(h.role);
  put32(out + 8, h.stream_index);
  std::memcpy(out + 12, h.migration_id.data(), kMigrationIdSize);
  std::memcpy(out + 28, h.random.data(), kRandomSize);
  put32(out + 60, h.flags);
}

Result<Hello> decode_hello(const uint8_t in[kHelloSize], Role expected_role) {
  if (get32(in) != kHelloMagic) return make_error(ErrorCode::kBadMagic, "hello");
  Hello h;
  h.version = get16(in + 4);
  if (h.version < kMinVersion || h.version > kVersion)
    return make_error(ErrorCode::kBadVersion, "hello version " + std::to_string(h.version));
  uint8_t kind = in[6];
  if (kind < uint8_t(Kind::kMigration) || kind > uint8_t(Kind::kProbe))
    return make_error(ErrorCode::kBadKind, "kind " + std::to_string(kind));
  h.kind = Kind(kind);
  if (in[7] != uint8_t(expected_role)) return make_error(ErrorCode::kBadRole, "hello role " + std::to_string(in[7]));
  h.role = expected_role;
  h.stream_index = get32(in + 8);
  std::memcpy(h.migration_id.data(), in + 12, kMigrationIdSize);
  std::memcpy(h.random.data(), in + 28, kRandomSize);
  h.flags = get32(in + 60);
  if (h.flags & ~kHelloFlagResume) return make_error(ErrorCode::kBadReserved, "hello reserved bytes");
  return h;
}

void encode_alert(const Alert& a, uint8_t out[kAlertSize]) {
  put32(out, kAlertMagic);
  put16(out + 4, a.version);
  put16(out + 6, uint16_t(a.code));
  put_text(out + 8, kAlertTextSize, a.text);
}

Result<Alert> decode_alert(const uint8_t in[kAlertSize]) {
  if (get32(in) != kAlertMagic) return make_error(ErrorCode::kBadMagic, "alert");
  Alert a;
  a.version = get16(in + 4);
  a.code = ErrorCode(get16(in + 6));
  a.text = get_text(in + 8, kAlertTextSize);
  return a;
}

void encode_probe_reply(const ProbeReply& r, uint8_t out[kProbeReplySize]) {
  put32(out, kProbeMagic);
  put16(out + 4, r.version_min);
  put16(out + 6, r.version_max);
  put32(out + 8, r.ciphers);
  put32(out + 12, r.max_record);
  put_text(out + 16, kProbeVersionTextSize, r.software);
}

Result<ProbeReply> decode_probe_reply(const uint8_t in[kProbeReplySize]) {
  if (get32(in) != kProbeMagic) return make_error(ErrorCode::kBadMagic, "probe reply");
  ProbeReply r;
  r.version_min = get16(in + 4);
  r.version_max = get16(in + 6);
  r.ciphers = get32(in + 8);
  r.max_record = get32(in + 12);
  r.software = get_text(in + 16, kProbeVersionTextSize);
  return r;
}

void encode_record_header(const RecordHeader& h, uint8_t out[kRecordHeaderSize]) {
  out[0] = uint8_t(h.type);
  out[1] = 0;
  put16(out + 2, 0);
  put32(out + 4, h.length);
  put64(out + 8, h.counter);
}

Result<RecordHeader> decode_record_header(const uint8_t in[kRecordHeaderSize]) {
  RecordHeader h;
  uint8_t t = in[0];
  if (t < uint8_t(RecordType::kData) || t > uint8_t(RecordType::kStart))
    return make_error(ErrorCode::kBadRecordType, "type " + std::to_string(t));
  h.type = RecordType(t);
  if (in[1] != 0 || get16(in + 2) != 0) return make_error(ErrorCode::kBadReserved, "record flags/reserved");
  h.length = get32(in + 4);
  h.counter = get64(in + 8);
  switch (h.type) {
    case RecordType::kData:
      if (h.length > kMaxRecordPayload)
        return make_error(ErrorCode::kRecordTooLarge, std::to_string(h.length) + " > " + std::to_string(kMaxRecordPayload));
      if (h.length == 0) return make_error(ErrorCode::kBadRecordType, "empty DATA record");
      break;
    case RecordType::kFin:
      if (h.length != kFinPayloadSize) return make_error(ErrorCode::kBadFin, "FIN length " + std::to_string(h.length));
      break;
    case RecordType::kError:
      if (h.length < kMinErrorPayload || h.length > kMaxErrorPayload)
        return make_error(ErrorCode::kRecordTooLarge, "ERROR record length " + std::to_string(h.length));
      break;
    case RecordType::kAck:
      if (h.length != kAckPayloadSize)
        return make_error(ErrorCode::kRecordTooLarge, "ACK record length " + std::to_string(h.length));
      break;
    case RecordType::kStart:
      if (h.length != kStartPayloadSize)
        return make_error(ErrorCode::kRecordTooLarge, "START record length " + std::to_string(h.length));
      break;
  }
  return h;
}

const char* record_type_name(RecordType t) {
  switch (t) {
    case RecordType::kData: return "DATA";
    case RecordType::kFin: return "FIN";
    case RecordType::kError: return "ERROR";
    case RecordType::kAck: return "ACK";
    case RecordType::kStart: return "START";
  }
  return "unknown record";
}

}  // namespace wire
}  // namespace encmig
