#include "migration/record.h"

#include <cstring>

#include "migration/replay.h"

namespace encmig {

using wire::RecordType;

Result<RecordSealer> RecordSealer::create(TrafficKeys keys, uint16_t version, uint64_t base) {
  if (version < wire::kMinVersion || version > wire::kVersion)
    return make_error(ErrorCode::kInvalidArgument, "protocol version " + std::to_string(version));
  RecordSealer s;
  s.keys_ = std::move(keys);
  s.version_ = version;
  s.bytes_ = base;
  return s;
}

Status RecordSealer::check_next(RecordType type) const {
  if (finished_) return make_error(ErrorCode::kDataAfterFin, "seal after the end of the stream");
  // Version 2: after our FIN, we still acknowledge the peer's data, or fail.
  if (fin_ && type != RecordType::kAck && type != RecordType::kError)
    return make_error(ErrorCode::kDataAfterFin, "seal after FIN");
  if (counter_ >= wire::kMaxRecordsPerDirection) return make_error(ErrorCode::kRecordLimit);
  return {};
}

Status RecordSealer::seal(RecordType type, uint8_t* payload, uint32_t len, uint8_t* header, uint8_t* tag) {
  if (auto st = check_next(type); !st) return st;
  wire::encode_record_header({type, len, counter_}, header);
  if (auto st = keys_.seal(counter_, header, payload, len, tag); !st) return st;
  counter_++;
  return {};
}

Status RecordSealer::seal_data(uint8_t* payload, uint32_t len, uint8_t* header, uint8_t* tag) {
  if (len == 0 || len > wire::kMaxRecordPayload) return make_error(ErrorCode::kInvalidArgument, "DATA length");
  if (auto st = seal(RecordType::kData, payload, len, header, tag); !st) return st;
  bytes_ += len;
  return {};
}

Status RecordSealer::seal_data_from(const uint8_t* src, uint32_t len, uint8_t* out) {
  if (len == 0 || len > wire::kMaxRecordPayload) return make_error(ErrorCode::kInvalidArgument, "DATA length");
  if (auto st = check_next(RecordType::kData); !st) return st;
  wire::encode_record_header({RecordType::kData, len, counter_}, out);
  if (auto st = keys_.seal_to(counter_, out, src, len, out + wire::kRecordHeaderSize); !st) return st;
  counter_++;
  bytes_ += len;
  return {};
}

Status RecordSealer::seal_position(RecordType type, uint64_t position, uint8_t* out) {
  uint8_t* payload = out + wire::kRecordHeaderSize;
  wire::put64(payload, position);
  return seal(type, payload, wire::kAckPayloadSize, out, payload + wire::kAckPayloadSize);
}

Status RecordSealer::seal_fin(uint8_t* out) {
  uint8_t* payload = out + wire::kRecordHeaderSize;
  wire::put64(payload, bytes_);
  if (auto st = seal(RecordType::kFin, payload, wire::kFinPayloadSize, out, payload + wire::kFinPayloadSize); !st)
    return st;
  fin_ = true;
  finished_ = version_ < wire::kVersion2;
  return {};
}

Status RecordSealer::seal_error(ErrorCode code, const std::string& text, uint8_t* out, size_t* out_len) {
  size_t tlen = std::min(text.size(), wire::kMaxErrorPayload - wire::kMinErrorPayload);
  uint32_t len = uint32_t(wire::kMinErrorPayload + tlen);
  uint8_t* payload = out + wire::kRecordHeaderSize;
  wire::put16(payload, uint16_t(code));
  std::memcpy(payload + wire::kMinErrorPayload, text.data(), tlen);
  if (auto st = seal(RecordType::kError, payload, len, out, payload + len); !st) return st;
  finished_ = true;
  *out_len = wire::kRecordOverhead + len;
  return {};
}

Result<RecordOpener> RecordOpener::create(TrafficKeys keys, uint16_t version, uint64_t base) {
  RecordOpener o;
  o.keys_ = std::move(keys);
  o.version_ = version;
  o.bytes_ = base;
  return o;
}

Error RecordOpener::fail(Error e) {
  failed_ = true;
  return e;
}

Result<RecordOpener::Step> RecordOpener::open(uint8_t* buf, size_t avail) {
  if (failed_) return make_error(ErrorCode::kInternal, "record stream already failed");
  if (finished_) {
    if (avail == 0) return Step{};
    return fail(make_error(ErrorCode::kDataAfterFin));
  }
  if (avail == 0) return Step{0, wire::kRecordHeaderSize};
  // An unauthenticated alert can only come from a peer that rejected us.
  if (avail >= 4 && wire::magic_of(buf) == wire::kAlertMagic) {
    if (avail < wire::kAlertSize) return Step{0, wire::kAlertSize};
    auto a = wire::decode_alert(buf);
    return fail(make_error(ErrorCode::kPeerAlert, std::string(error_code_name(a->code)) + " (" + a->text + ")"));
  }
  if (avail < wire::kRecordHeaderSize) return Step{0, wire::kRecordHeaderSize};
  auto h = wire::decode_record_header(buf, version_);
  if (!h) return fail(h.error());
  if (ErrorCode c = check_counter(counter_, h->counter); c != ErrorCode::kOk)
    return fail(make_error(c, "expected " + std::to_string(counter_) + ", got " + std::to_string(h->counter)));
  size_t total = wire::kRecordOverhead + h->length;
  if (avail < total) return Step{0, total};

  uint8_t* payload = buf + wire::kRecordHeaderSize;
  if (auto st = keys_.open(counter_, buf, payload, h->length, payload + h->length); !st)
    return fail(make_error(st.error().code, "record " + std::to_string(counter_)));
  counter_++;

  // Version 2: after the peer's FIN only its ACKs (and an ERROR) may come.
  if (fin_ && h->type != RecordType::kAck && h->type != RecordType::kError)
    return fail(make_error(ErrorCode::kDataAfterFin, std::string(wire::record_type_name(h->type)) + " after FIN"));
  switch (h->type) {
    case RecordType::kData:
      bytes_ += h->length;
      return Step{total, 0, RecordType::kData, payload, h->length};
    case RecordType::kFin: {
      uint64_t sent = wire::get64(payload);
      if (sent != bytes_)
        return fail(make_error(ErrorCode::kBadFin, "peer sent " + std::to_string(sent) + " bytes, received " +
                                                        std::to_string(bytes_)));
      fin_ = true;
      finished_ = version_ < wire::kVersion2;
      return Step{total, 0, RecordType::kFin, nullptr, 0};
    }
    case RecordType::kAck:
    case RecordType::kResume:
      return Step{total, 0, h->type, nullptr, 0, wire::get64(payload)};
    case RecordType::kError: {
      auto code = ErrorCode(wire::get16(payload));
      std::string text;
      for (uint32_t i = wire::kMinErrorPayload; i < h->length; i++) {
        char c = char(payload[i]);
        text.push_back(c >= 0x20 && c < 0x7f ? c : '?');
      }
      return fail(make_error(ErrorCode::kPeerError, std::string(error_code_name(code)) + ": " + text));
    }
  }
  return fail(make_error(ErrorCode::kBadRecordType));
}

}  // namespace encmig
