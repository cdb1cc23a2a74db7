#include "migration/record.h"

#include <cstring>

#include "migration/replay.h"

namespace encmig {

using wire::RecordType;

namespace {
// DATA's AAD: the header, then the stream position of the record's first byte.
void data_aad(const uint8_t* header, uint64_t position, uint8_t out[wire::kDataAadSize]) {
  std::memcpy(out, header, wire::kRecordHeaderSize);
  wire::put64(out + wire::kRecordHeaderSize, position);
}
}  // namespace

// ---- DataSealer ----

Result<DataSealer> DataSealer::create(Secret stream_secret) {
  auto keys = TrafficKeys::create(std::move(stream_secret));
  if (!keys) return keys.error();
  auto digest = Sha256::create();
  if (!digest) return digest.error();
  DataSealer s;
  s.keys_ = std::move(keys.value());
  s.digest_ = std::move(digest.value());
  return s;
}

Status DataSealer::seal(uint8_t* rec, uint32_t len) {
  if (finished_) return make_error(ErrorCode::kDataAfterFin, "seal after the end of the stream");
  if (len == 0 || len > wire::kMaxRecordPayload) return make_error(ErrorCode::kInvalidArgument, "DATA length");
  if (records_ >= wire::kMaxRecordsPerDirection) return make_error(ErrorCode::kRecordLimit);
  wire::encode_record_header({RecordType::kData, len, records_}, rec);
  uint8_t aad[wire::kDataAadSize];
  data_aad(rec, position_, aad);
  uint8_t* payload = rec + wire::kRecordHeaderSize;
  if (auto st = keys_.seal(records_, aad, sizeof aad, payload, len, payload + len); !st) return st;
  digest_.update({payload + len, wire::kTagSize});
  records_++;
  position_ += len;
  return {};
}

wire::Fin DataSealer::finish() {
  if (!finished_) {
    finished_ = true;
    fin_.total = position_;
    fin_.records = records_;
    digest_.finish(fin_.digest.data());
  }
  return fin_;
}

// ---- DataOpener ----

Result<DataOpener> DataOpener::create(Secret stream_secret) {
  auto keys = TrafficKeys::create(std::move(stream_secret));
  if (!keys) return keys.error();
  DataOpener o;
  o.keys_ = std::move(keys.value());
  return o;
}

Status DataOpener::open(const wire::RecordHeader& h, uint8_t* rec) {
  uint8_t aad[wire::kDataAadSize];
  data_aad(rec, position_, aad);
  uint8_t* payload = rec + wire::kRecordHeaderSize;
  if (auto st = keys_.open(records_, aad, sizeof aad, payload, h.length, payload + h.length); !st)
    return make_error(st.error().code, "DATA record " + std::to_string(records_) + " at position " +
                                           std::to_string(position_));
  records_++;
  position_ += h.length;
  return {};
}

// ---- ControlSealer ----

Result<ControlSealer> ControlSealer::create(TrafficKeys keys) {
  ControlSealer s;
  s.keys_ = std::move(keys);
  return s;
}

Status ControlSealer::seal(RecordType type, uint8_t* out, uint32_t len) {
  if (finished_) return make_error(ErrorCode::kDataAfterFin, "seal after an ERROR record");
  if (!started_ && type != RecordType::kStart && type != RecordType::kError)
    return make_error(ErrorCode::kInternal, std::string(wire::record_type_name(type)) + " before START");
  if (started_ && type == RecordType::kStart) return make_error(ErrorCode::kInternal, "a second START");
  if (fin_ && type != RecordType::kAck && type != RecordType::kError)
    return make_error(ErrorCode::kDataAfterFin, std::string(wire::record_type_name(type)) + " after FIN");
  if (counter_ >= wire::kMaxRecordsPerDirection) return make_error(ErrorCode::kRecordLimit);
  wire::encode_record_header({type, len, counter_}, out);
  uint8_t* payload = out + wire::kRecordHeaderSize;
  if (auto st = keys_.seal(counter_, out, wire::kRecordHeaderSize, payload, len, payload + len); !st) return st;
  counter_++;
  started_ = true;
  if (type == RecordType::kFin) fin_ = true;
  if (type == RecordType::kError) finished_ = true;
  return {};
}

Status ControlSealer::seal_start(const wire::Start& s, uint8_t* out) {
  uint8_t* p = out + wire::kRecordHeaderSize;
  wire::put64(p, s.position);
  std::memcpy(p + 8, s.salt.data(), wire::kSaltSize);
  return seal(RecordType::kStart, out, wire::kStartPayloadSize);
}

Status ControlSealer::seal_ack(uint64_t position, uint8_t* out) {
  wire::put64(out + wire::kRecordHeaderSize, position);
  return seal(RecordType::kAck, out, wire::kAckPayloadSize);
}

Status ControlSealer::seal_fin(const wire::Fin& f, uint8_t* out) {
  uint8_t* p = out + wire::kRecordHeaderSize;
  wire::put64(p, f.total);
  wire::put64(p + 8, f.records);
  std::memcpy(p + 16, f.digest.data(), wire::kDigestSize);
  return seal(RecordType::kFin, out, wire::kFinPayloadSize);
}

Status ControlSealer::seal_error(ErrorCode code, const std::string& text, uint8_t* out, size_t* out_len) {
  size_t tlen = std::min(text.size(), wire::kMaxErrorPayload - wire::kMinErrorPayload);
  uint32_t len = uint32_t(wire::kMinErrorPayload + tlen);
  uint8_t* p = out + wire::kRecordHeaderSize;
  wire::put16(p, uint16_t(code));
  for (size_t i = 0; i < tlen; i++) {
    char c = text[i];
    p[wire::kMinErrorPayload + i] = (c >= 0x20 && c < 0x7f) ? uint8_t(c) : uint8_t('?');
  }
  if (auto st = seal(RecordType::kError, out, len); !st) return st;
  *out_len = wire::kRecordOverhead + len;
  return {};
}

// ---- RecordReader ----

Result<RecordReader> RecordReader::create(TrafficKeys control_keys) {
  RecordReader r;
  r.keys_ = std::move(control_keys);
  return r;
}

namespace {
RecordReader::Step need(size_t n) {
  RecordReader::Step s;
  s.need = n;
  return s;
}
}  // namespace

Error RecordReader::fail(Error e) {
  failed_ = true;
  return e;
}

Result<RecordReader::Step> RecordReader::open(uint8_t* buf, size_t avail, DataOpener* data) {
  if (failed_) return make_error(ErrorCode::kInternal, "record stream already failed");
  if (avail == 0) return need(wire::kRecordHeaderSize);
  // An unauthenticated alert can only come from a peer that rejected us.
  if (avail >= 4 && wire::magic_of(buf) == wire::kAlertMagic) {
    if (avail < wire::kAlertSize) return need(wire::kAlertSize);
    auto a = wire::decode_alert(buf);
    return fail(make_error(ErrorCode::kPeerAlert, std::string(error_code_name(a->code)) + " (" + a->text + ")"));
  }
  if (avail < wire::kRecordHeaderSize) return need(wire::kRecordHeaderSize);
  auto h = wire::decode_record_header(buf);
  if (!h) return fail(h.error());
  const bool is_data = h->type == RecordType::kData;
  // Order, still on the header alone: START first; DATA only once the
  // peer's START named its stream; after the FIN only ACK and ERROR.
  if (!started_ && h->type != RecordType::kStart && h->type != RecordType::kError)
    return fail(make_error(ErrorCode::kResumeRefused, std::string(wire::record_type_name(h->type)) +
                                                          " before START: a connection starts with START"));
  if (started_ && h->type == RecordType::kStart)
    return fail(make_error(ErrorCode::kResumeRefused, "START in the middle of a connection"));
  if (fin_ && h->type != RecordType::kAck && h->type != RecordType::kError)
    return fail(make_error(ErrorCode::kDataAfterFin, std::string(wire::record_type_name(h->type)) + " after FIN"));
  if (is_data && !data) return fail(make_error(ErrorCode::kInternal, "DATA with no stream to open it"));
  const uint64_t expected = is_data ? data->records() : counter_;
  if (ErrorCode c = check_counter(expected, h->counter); c != ErrorCode::kOk)
    return fail(make_error(c, std::string(is_data ? "DATA record " : "control record ") + "expected " +
                                  std::to_string(expected) + ", got " + std::to_string(h->counter)));
  const size_t total = wire::kRecordOverhead + h->length;
  if (avail < total) return need(total);

  uint8_t* payload = buf + wire::kRecordHeaderSize;
  Step s;
  s.consumed = total;
  s.type = h->type;
  if (is_data) {
    s.position = data->position();
    s.number = data->records();
    if (auto st = data->open(h.value(), buf); !st) return fail(st.error());
    s.payload = payload;
    s.length = h->length;
    s.tag = payload + h->length;
    return s;
  }
  if (auto st = keys_.open(counter_, buf, wire::kRecordHeaderSize, payload, h->length, payload + h->length); !st)
    return fail(make_error(st.error().code, "control record " + std::to_string(counter_)));
  counter_++;
  switch (h->type) {
    case RecordType::kStart:
      started_ = true;
      s.start.position = wire::get64(payload);
      std::memcpy(s.start.salt.data(), payload + 8, wire::kSaltSize);
      return s;
    case RecordType::kAck:
      s.position = wire::get64(payload);
      return s;
    case RecordType::kFin:
      s.fin.total = wire::get64(payload);
      s.fin.records = wire::get64(payload + 8);
      std::memcpy(s.fin.digest.data(), payload + 16, wire::kDigestSize);
      if (!data) return fail(make_error(ErrorCode::kInternal, "FIN with no stream"));
      if (s.fin.total != data->position() || s.fin.records != data->records())
        return fail(make_error(ErrorCode::kBadFin, "the peer sent " + std::to_string(s.fin.total) + " bytes in " +
                                                        std::to_string(s.fin.records) + " records, received " +
                                                        std::to_string(data->position()) + " in " +
                                                        std::to_string(data->records())));
      fin_ = true;
      return s;
    case RecordType::kError: {
      auto code = ErrorCode(wire::get16(payload));
      std::string text;
      for (uint32_t i = wire::kMinErrorPayload; i < h->length; i++) {
        char c = char(payload[i]);
        text.push_back(c >= 0x20 && c < 0x7f ? c : '?');
      }
      return fail(make_error(ErrorCode::kPeerError, std::string(error_code_name(code)) + ": " + text));
    }
    case RecordType::kData:
      break;
  }
  return fail(make_error(ErrorCode::kBadRecordType));
}

}  // namespace encmig
