#include "migration/record.h"

#include <cstring>

#include "migration/replay.h"

namespace encmig {

using wire::RecordType;

Result<RecordSealer> RecordSealer::create(TrafficKeys keys) {
  RecordSealer s;
  s.keys_ = std::move(keys);
  return s;
}

Status RecordSealer::seal(RecordType type, uint8_t* payload, uint32_t len, uint8_t* header, uint8_t* tag) {
  if (finished_) return make_error(ErrorCode::kDataAfterFin, "seal after FIN");
  if (counter_ >= wire::kMaxRecordsPerDirection) return make_error(ErrorCode::kRecordLimit);
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

Status RecordSealer::seal_fin(uint8_t* out) {
  uint8_t* payload = out + wire::kRecordHeaderSize;
  wire::put64(payload, bytes_);
  if (auto st = seal(RecordType::kFin, payload, wire::kFinPayloadSize, out, payload + wire::kFinPayloadSize); !st)
    return st;
  finished_ = true;
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

Result<RecordOpener> RecordOpener::create(TrafficKeys keys) {
  RecordOpener o;
  o.keys_ = std::move(keys);
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
  // An unauthenticated alert can only come from a peer that rejected us.
  if (avail >= 4 && wire::magic_of(buf) == wire::kAlertMagic) {
    if (avail < wire::kAlertSize) return Step{0, wire::kAlertSize};
    auto a = wire::decode_alert(buf);
    return fail(make_error(ErrorCode::kPeerAlert, std::string(error_code_name(a->code)) + " (" + a->text + ")"));
  }
  if (avail < wire::kRecordHeaderSize) return Step{0, wire::kRecordHeaderSize};
  auto h = wire::decode_record_header(buf);
  if (!h) return fail(h.error());
  if (ErrorCode c = check_counter(counter_, h->counter); c != ErrorCode::kOk)
    return fail(make_error(c, "expected " + std::to_string(counter_) + ", got " + std::to_string(h->counter)));
  size_t total = wire::kRecordOverhead + h->length;
  if (avail < total) return Step{0, total};

  uint8_t* payload = buf + wire::kRecordHeaderSize;
  if (auto st = keys_.open(counter_, buf, payload, h->length, payload + h->length); !st)
    return fail(make_error(st.error().code, "record " + std::to_string(counter_)));
  counter_++;

  switch (h->type) {
    case RecordType::kData:
      bytes_ += h->length;
      return Step{total, 0, RecordType::kData, payload, h->length};
    case RecordType::kFin: {
      uint64_t sent = wire::get64(payload);
      if (sent != bytes_)
        return fail(make_error(ErrorCode::kBadFin, "peer sent " + std::to_string(sent) + " bytes, received " +
                                                        std::to_string(bytes_)));
      finished_ = true;
      return Step{total, 0, RecordType::kFin, nullptr, 0};
    }
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
