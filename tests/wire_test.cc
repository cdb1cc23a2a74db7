// Encoding round trips and header validation.
#include <gtest/gtest.h>

#include "migration/wire.h"

using namespace encmig;
using namespace encmig::wire;

TEST(Wire, HelloRoundTrip) {
  Hello h;
  h.kind = Kind::kNbd;
  h.stream_index = 0x01020304;
  for (size_t i = 0; i < h.migration_id.size(); i++) h.migration_id[i] = uint8_t(i);
  for (size_t i = 0; i < h.random.size(); i++) h.random[i] = uint8_t(100 + i);
  uint8_t raw[kHelloSize];
  encode_hello(h, raw);
  EXPECT_EQ(raw[0], 'E');
  EXPECT_EQ(raw[3], 'G');
  auto back = decode_hello(raw, Role::kClient);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->stream_index, h.stream_index);
  EXPECT_EQ(back->kind, Kind::kNbd);
  EXPECT_EQ(back->migration_id, h.migration_id);
  EXPECT_EQ(back->random, h.random);
  EXPECT_EQ(decode_hello(raw, Role::kServer).error().code, ErrorCode::kBadRole);
}

TEST(Wire, RecordHeaderLimits) {
  struct Row {
    uint8_t type;
    uint32_t len;
    ErrorCode want;
  } rows[] = {
      {1, 1, ErrorCode::kOk},
      {1, kMaxRecordPayload, ErrorCode::kOk},
      {1, kMaxRecordPayload + 1, ErrorCode::kRecordTooLarge},
      {1, 0, ErrorCode::kBadRecordType},
      {2, 48, ErrorCode::kOk},
      {2, 8, ErrorCode::kBadFin},
      {2, 49, ErrorCode::kBadFin},
      {3, 2, ErrorCode::kOk},
      {3, 1, ErrorCode::kRecordTooLarge},
      {3, kMaxErrorPayload + 1, ErrorCode::kRecordTooLarge},
      {4, 8, ErrorCode::kOk},
      {4, 7, ErrorCode::kRecordTooLarge},
      {5, 40, ErrorCode::kOk},
      {5, 8, ErrorCode::kRecordTooLarge},
      {0, 8, ErrorCode::kBadRecordType},
      {6, 8, ErrorCode::kBadRecordType},
      {'E', 8, ErrorCode::kBadRecordType},
  };
  for (const auto& r : rows) {
    uint8_t raw[kRecordHeaderSize] = {};
    raw[0] = r.type;
    put32(raw + 4, r.len);
    auto h = decode_record_header(raw);
    EXPECT_EQ(h.ok() ? ErrorCode::kOk : h.error().code, r.want) << int(r.type) << " " << r.len;
  }
  uint8_t raw[kRecordHeaderSize] = {1, 1, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(decode_record_header(raw).error().code, ErrorCode::kBadReserved);
}

// One version is spoken: a hello of any other is refused, and so is an unknown flag.
TEST(Wire, HelloVersionAndFlags) {
  Hello h;
  uint8_t raw[kHelloSize];
  encode_hello(h, raw);
  ASSERT_TRUE(decode_hello(raw, Role::kClient).ok());
  for (uint16_t v : {0, 1, 2, 4, 0xffff}) {
    put16(raw + 4, v);
    EXPECT_EQ(decode_hello(raw, Role::kClient).error().code, ErrorCode::kBadVersion) << v;
  }
  put16(raw + 4, kVersion);
  put32(raw + 60, kHelloFlagResume);
  EXPECT_TRUE(decode_hello(raw, Role::kClient).ok());
  put32(raw + 60, 2);
  EXPECT_EQ(decode_hello(raw, Role::kClient).error().code, ErrorCode::kBadReserved);
}

TEST(Wire, AlertTextIsSanitizedAndBounded) {
  Alert a;
  a.code = ErrorCode::kDuplicateStream;
  a.text = std::string("bad\n\x01text") + std::string(100, 'x');
  uint8_t raw[kAlertSize];
  encode_alert(a, raw);
  auto b = decode_alert(raw);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->code, ErrorCode::kDuplicateStream);
  EXPECT_EQ(b->text.size(), kAlertTextSize);
  EXPECT_EQ(b->text.substr(0, 9), "bad??text");
}
