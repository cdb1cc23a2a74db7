// Records: round trips, and every kind of damage rejected without releasing
// plaintext. DATA records belong to the stream (sealed once, opened on any
// connection of it, bound to their position); control records to a connection.
#include <gtest/gtest.h>

#include <random>

#include "tests/protocol_helpers.h"

using namespace encmig;
using namespace encmig::test;
using wire::RecordType;

namespace {

wire::Salt salt(uint8_t b) {
  wire::Salt s;
  s.fill(b);
  return s;
}

Secret stream_secret(uint8_t salt_byte = 0x30, Direction d = Direction::kClientToServer) {
  return derive_stream_secret(fixed_secrets(), wire::Kind::kMigration, 1, d, salt(salt_byte)).value();
}

// The client's side of one connection and stream, and the server's.
struct Link {
  ControlSealer ctl;
  DataSealer data;
  RecordReader rx;
  DataOpener opener;
};

std::vector<uint8_t> start_record(ControlSealer& c, uint64_t position = 0) {
  std::vector<uint8_t> out(wire::kStartRecordSize);
  EXPECT_TRUE(c.seal_start({position, salt(0x30)}, out.data()).ok());
  return out;
}

// With the client's START already read, so DATA may come.
Link make_link() {
  auto p = handshake_pair(fixed_secrets());
  Link l{std::move(ControlSealer::create(std::move(p.client.tx)).value()),
         std::move(DataSealer::create(stream_secret()).value()),
         std::move(RecordReader::create(std::move(p.server.rx)).value()),
         std::move(DataOpener::create(stream_secret()).value())};
  auto s = start_record(l.ctl);
  auto st = l.rx.open(s.data(), s.size(), &l.opener);
  EXPECT_TRUE(st.ok() && st->type == RecordType::kStart);
  return l;
}

std::vector<uint8_t> seal(DataSealer& s, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out(wire::kRecordOverhead + payload.size());
  std::memcpy(out.data() + wire::kRecordHeaderSize, payload.data(), payload.size());
  EXPECT_TRUE(s.seal(out.data(), uint32_t(payload.size())).ok());
  return out;
}

std::vector<uint8_t> fin(Link& l) {
  std::vector<uint8_t> out(wire::kFinRecordSize);
  EXPECT_TRUE(l.ctl.seal_fin(l.data.finish(), out.data()).ok());
  return out;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(seed + i * 7);
  return v;
}

}  // namespace

TEST(Record, RoundTripAndFin) {
  auto l = make_link();
  uint64_t position = 0;
  for (size_t n : {1u, 100u, 4096u, 65536u, wire::kMaxRecordPayload}) {
    auto p = pattern(n, uint8_t(n));
    auto rec = seal(l.data, p);
    auto st = l.rx.open(rec.data(), rec.size(), &l.opener);
    ASSERT_TRUE(st.ok()) << st.error().message();
    ASSERT_EQ(st->consumed, rec.size());
    ASSERT_EQ(st->type, RecordType::kData);
    ASSERT_EQ(st->position, position);
    ASSERT_EQ(std::vector<uint8_t>(st->payload, st->payload + st->length), p);
    ASSERT_EQ(std::memcmp(st->tag, rec.data() + rec.size() - wire::kTagSize, wire::kTagSize), 0);
    position += n;
  }
  auto f = fin(l);
  auto st = l.rx.open(f.data(), f.size(), &l.opener);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->type, RecordType::kFin);
  EXPECT_EQ(st->fin.total, position);
  EXPECT_EQ(st->fin.records, 5u);
  EXPECT_TRUE(l.rx.fin_received());
}

// The FIN's digest is SHA-256 over the DATA tags in order.
TEST(Record, FinDigestCoversEveryTag) {
  auto l = make_link();
  std::vector<uint8_t> tags;
  for (int i = 0; i < 3; i++) {
    auto rec = seal(l.data, pattern(50 + i, uint8_t(i)));
    tags.insert(tags.end(), rec.end() - wire::kTagSize, rec.end());
  }
  wire::Digest want;
  ASSERT_TRUE(sha256(tags, want.data()).ok());
  EXPECT_EQ(l.data.finish().digest, want);
}

// After a FIN, its sender still acknowledges (ACK) or fails (ERROR); DATA,
// FIN and START are over.
TEST(Record, AcksAfterFin) {
  auto l = make_link();
  auto d = seal(l.data, pattern(100, 3));
  ASSERT_TRUE(l.rx.open(d.data(), d.size(), &l.opener).ok());
  auto f = fin(l);
  auto st = l.rx.open(f.data(), f.size(), &l.opener);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(l.rx.fin_received());
  std::vector<uint8_t> buf(wire::kRecordOverhead + 16);
  EXPECT_EQ(l.data.seal(buf.data(), 8).error().code, ErrorCode::kDataAfterFin);
  uint8_t f2[wire::kFinRecordSize];
  EXPECT_EQ(l.ctl.seal_fin(l.data.finish(), f2).error().code, ErrorCode::kDataAfterFin);
  uint8_t ack[wire::kAckRecordSize];
  for (uint64_t p : {uint64_t(7), uint64_t(9)}) {
    ASSERT_TRUE(l.ctl.seal_ack(p, ack).ok());
    auto a = l.rx.open(ack, sizeof ack, &l.opener);
    ASSERT_TRUE(a.ok()) << a.error().message();
    EXPECT_EQ(a->type, RecordType::kAck);
    EXPECT_EQ(a->position, p);
  }
  EXPECT_EQ(l.rx.open(ack, 0, &l.opener)->consumed, 0u);  // nothing more yet is no error
  uint8_t err[wire::kMaxErrorRecordSize];
  size_t n = 0;
  ASSERT_TRUE(l.ctl.seal_error(ErrorCode::kIo, "late", err, &n).ok());
  EXPECT_EQ(l.rx.open(err, n, &l.opener).error().code, ErrorCode::kPeerError);
  EXPECT_TRUE(l.ctl.finished());
}

TEST(Record, StartComesFirstAndOnce) {
  for (int what = 0; what < 2; what++) {
    auto p = handshake_pair(fixed_secrets());
    auto rx = RecordReader::create(std::move(p.server.rx)).value();
    auto data = DataSealer::create(stream_secret()).value();
    auto opener = DataOpener::create(stream_secret()).value();
    std::vector<uint8_t> first;
    if (what == 0) {
      first = seal(data, pattern(10, 1));  // DATA before START
    } else {
      // A START from another connection: right type, wrong keys.
      auto q = handshake_pair(fixed_secrets());
      auto other = ControlSealer::create(std::move(q.client.tx)).value();
      first = start_record(other);
    }
    auto st = rx.open(first.data(), first.size(), &opener);
    ASSERT_FALSE(st.ok()) << what;
    EXPECT_EQ(st.error().code, what == 0 ? ErrorCode::kResumeRefused : ErrorCode::kAuthFailed) << what;
  }
  // The sealer: START first, and once.
  auto p = handshake_pair(fixed_secrets());
  auto ctl = ControlSealer::create(std::move(p.client.tx)).value();
  uint8_t ack[wire::kAckRecordSize], start[wire::kStartRecordSize];
  EXPECT_FALSE(ctl.seal_ack(1, ack).ok());
  ASSERT_TRUE(ctl.seal_start({0, salt(1)}, start).ok());
  EXPECT_FALSE(ctl.seal_start({0, salt(1)}, start).ok());
}

TEST(Record, CiphertextHidesPlaintext) {
  auto l = make_link();
  std::vector<uint8_t> p(4096, 'A');
  auto rec = seal(l.data, p);
  size_t same = 0;
  for (size_t i = 0; i < p.size(); i++) same += rec[wire::kRecordHeaderSize + i] == 'A';
  EXPECT_LT(same, 64u);
}

TEST(Record, PartialInputAsksForMore) {
  auto l = make_link();
  auto rec = seal(l.data, pattern(300, 1));
  for (size_t n = 0; n < rec.size(); n++) {
    auto copy = rec;
    auto st = l.rx.open(copy.data(), n, &l.opener);
    ASSERT_TRUE(st.ok());
    ASSERT_EQ(st->consumed, 0u);
    ASSERT_GT(st->need, n);
  }
  auto st = l.rx.open(rec.data(), rec.size(), &l.opener);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->consumed, rec.size());
}

TEST(Record, EveryBitFlipIsRejected) {
  // Flip each bit of a DATA record's header, ciphertext and tag in turn, and
  // of a START's and a FIN's: every flip fails, and the plaintext never
  // appears in the buffer.
  auto p = pattern(64, 9);
  for (int which = 0; which < 3; which++) {
    size_t size = which == 0 ? wire::kRecordOverhead + p.size() : which == 1 ? wire::kStartRecordSize : wire::kFinRecordSize;
    for (size_t bit = 0; bit < size * 8; bit++) {
      Link l = make_link();
      std::vector<uint8_t> rec;
      if (which == 0) {
        rec = seal(l.data, p);
      } else if (which == 1) {
        auto q = handshake_pair(fixed_secrets());
        l.ctl = ControlSealer::create(std::move(q.client.tx)).value();
        l.rx = RecordReader::create(std::move(q.server.rx)).value();
        rec = start_record(l.ctl);
      } else {
        rec = fin(l);
      }
      rec[bit / 8] ^= uint8_t(1 << (bit % 8));
      auto st = l.rx.open(rec.data(), rec.size(), &l.opener);
      if (st.ok()) {
        // A flipped length bit can make the record look longer: the reader
        // must then wait for bytes that never come, never release data.
        ASSERT_EQ(st->consumed, 0u) << which << " bit " << bit;
        ASSERT_LT(bit, 8u * 8u) << which << " bit " << bit;
        continue;
      }
      if (which == 0)
        EXPECT_NE(std::vector<uint8_t>(rec.begin() + wire::kRecordHeaderSize, rec.begin() + wire::kRecordHeaderSize + 64), p);
      // The reader stays failed.
      EXPECT_FALSE(l.rx.open(rec.data(), rec.size(), &l.opener).ok());
    }
  }
}

TEST(Record, RandomMultiBitFlipsAreRejected) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 500; round++) {
    auto l = make_link();
    auto p = pattern(1 + rng() % 2000, uint8_t(round));
    auto rec = seal(l.data, p);
    int flips = 1 + int(rng() % 8);
    for (int f = 0; f < flips; f++) {
      size_t bit = rng() % (rec.size() * 8);
      // Keep the length field intact so the record is complete.
      if (bit / 8 >= 4 && bit / 8 < 8) continue;
      rec[bit / 8] ^= uint8_t(1 << (bit % 8));
    }
    auto st = l.rx.open(rec.data(), rec.size(), &l.opener);
    if (st.ok() && st->consumed == rec.size()) {
      // Possible only when every flip cancelled out; then data must match.
      ASSERT_EQ(std::vector<uint8_t>(st->payload, st->payload + st->length), p);
    }
  }
}

TEST(Record, TruncatedStreamNeverReleasesPartialRecord) {
  auto l = make_link();
  auto rec = seal(l.data, pattern(5000, 3));
  for (size_t n = 0; n < rec.size(); n++) {
    auto st = l.rx.open(rec.data(), n, &l.opener);
    ASSERT_TRUE(st.ok());
    ASSERT_EQ(st->consumed, 0u);
    ASSERT_EQ(st->payload, nullptr);
  }
}

TEST(Record, ReplayReorderDrop) {
  {  // replay
    auto l = make_link();
    auto r0 = seal(l.data, pattern(10, 0));
    auto copy = r0;
    ASSERT_TRUE(l.rx.open(r0.data(), r0.size(), &l.opener).ok());
    EXPECT_EQ(l.rx.open(copy.data(), copy.size(), &l.opener).error().code, ErrorCode::kCounterMismatch);
  }
  {  // reorder
    auto l = make_link();
    auto r0 = seal(l.data, pattern(10, 0));
    auto r1 = seal(l.data, pattern(10, 1));
    EXPECT_EQ(l.rx.open(r1.data(), r1.size(), &l.opener).error().code, ErrorCode::kCounterMismatch);
  }
  {  // drop
    auto l = make_link();
    auto r0 = seal(l.data, pattern(10, 0));
    auto r1 = seal(l.data, pattern(10, 1));
    auto r2 = seal(l.data, pattern(10, 2));
    ASSERT_TRUE(l.rx.open(r0.data(), r0.size(), &l.opener).ok());
    EXPECT_EQ(l.rx.open(r2.data(), r2.size(), &l.opener).error().code, ErrorCode::kCounterMismatch);
  }
  {  // counter rewritten to look in order: the tag catches it
    auto l = make_link();
    auto r0 = seal(l.data, pattern(10, 0));
    auto r1 = seal(l.data, pattern(10, 1));
    wire::put64(r1.data() + 8, 0);
    EXPECT_EQ(l.rx.open(r1.data(), r1.size(), &l.opener).error().code, ErrorCode::kAuthFailed);
  }
}

// A DATA record is bound to its stream position: with the right number but
// another position (another history of record lengths), its tag fails.
TEST(Record, DataIsBoundToItsPosition) {
  auto l = make_link();
  auto other = DataSealer::create(stream_secret()).value();  // the same stream key, another history
  auto a0 = seal(l.data, pattern(10, 0));
  (void)seal(other, pattern(15, 0));
  auto b1 = seal(other, pattern(20, 1));  // record 1 at position 15
  ASSERT_TRUE(l.rx.open(a0.data(), a0.size(), &l.opener).ok());
  EXPECT_EQ(l.rx.open(b1.data(), b1.size(), &l.opener).error().code, ErrorCode::kAuthFailed);
}

// DATA belongs to the stream: a record sealed once opens on any connection of
// it, and the same record resent is the same bytes. Control records do not
// cross connections.
TEST(Record, DataCrossesConnectionsControlDoesNot) {
  auto l = make_link();
  auto r0 = seal(l.data, pattern(100, 1));
  ASSERT_TRUE(l.rx.open(r0.data(), r0.size(), &l.opener).ok());
  auto r1 = seal(l.data, pattern(100, 2));
  // The connection breaks; a new one resumes.
  auto q = handshake_pair(fixed_secrets());
  auto ctl2 = ControlSealer::create(std::move(q.client.tx)).value();
  auto rx2 = RecordReader::create(std::move(q.server.rx)).value();
  auto s = start_record(ctl2, 0);
  ASSERT_TRUE(rx2.open(s.data(), s.size(), &l.opener).ok());
  auto copy = r1;
  auto st = rx2.open(copy.data(), copy.size(), &l.opener);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_EQ(st->number, 1u);
  EXPECT_EQ(st->position, 100u);
  // The old connection's FIN does not open on the new one.
  auto f = fin(l);
  EXPECT_EQ(rx2.open(f.data(), f.size(), &l.opener).error().code, ErrorCode::kAuthFailed);
}

TEST(Record, OversizedLengthRejectedFromHeaderAlone) {
  for (uint32_t len : {wire::kMaxRecordPayload + 1, 0xffffffffu}) {
    auto l = make_link();
    uint8_t hdr[wire::kRecordHeaderSize];
    wire::encode_record_header({RecordType::kData, len, 0}, hdr);
    EXPECT_EQ(l.rx.open(hdr, sizeof hdr, &l.opener).error().code, ErrorCode::kRecordTooLarge);
  }
}

TEST(Record, OtherStreamOrDirectionRejected) {
  for (int which = 0; which < 2; which++) {
    auto l = make_link();
    auto tx = DataSealer::create(which == 0 ? stream_secret(0x31) : stream_secret(0x30, Direction::kServerToClient))
                  .value();
    auto rec = seal(tx, pattern(100, 1));
    EXPECT_EQ(l.rx.open(rec.data(), rec.size(), &l.opener).error().code, ErrorCode::kAuthFailed) << which;
  }
}

TEST(Record, FinRules) {
  {  // DATA after FIN
    auto l = make_link();
    auto r = seal(l.data, pattern(10, 0));
    ASSERT_TRUE(l.rx.open(r.data(), r.size(), &l.opener).ok());
    auto other = make_link();  // a second stream, so its sealer can still seal
    auto f = fin(l);
    ASSERT_TRUE(l.rx.open(f.data(), f.size(), &l.opener).ok());
    auto r2 = seal(other.data, pattern(10, 1));
    EXPECT_EQ(l.rx.open(r2.data(), r2.size(), &l.opener).error().code, ErrorCode::kDataAfterFin);
  }
  {  // a FIN whose totals disagree with what was opened
    auto l = make_link();
    auto r0 = seal(l.data, pattern(10, 0));
    auto f = fin(l);  // says 10 bytes in 1 record; none was opened
    EXPECT_EQ(l.rx.open(f.data(), f.size(), &l.opener).error().code, ErrorCode::kBadFin);
  }
}

TEST(Record, ErrorRecordIsReported) {
  auto l = make_link();
  std::vector<uint8_t> out(wire::kMaxErrorRecordSize);
  size_t n = 0;
  ASSERT_TRUE(l.ctl.seal_error(ErrorCode::kCancelled, "operator cancelled", out.data(), &n).ok());
  auto st = l.rx.open(out.data(), n, &l.opener);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kPeerError);
  EXPECT_NE(st.error().message().find("operator cancelled"), std::string::npos);
}

TEST(Record, AlertInsteadOfRecord) {
  auto l = make_link();
  uint8_t a[wire::kAlertSize];
  wire::encode_alert({wire::kVersion, ErrorCode::kKeyConfirmFailed, "bad confirm"}, a);
  auto st = l.rx.open(a, 10, &l.opener);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->need, wire::kAlertSize);
  EXPECT_EQ(l.rx.open(a, sizeof a, &l.opener).error().code, ErrorCode::kPeerAlert);
}

TEST(Record, RekeysAcrossEpochs) {
  // 2^16 + 10 records cross one epoch boundary; all open in order.
  auto l = make_link();
  std::vector<uint8_t> buf(wire::kRecordOverhead + 16);
  for (uint64_t i = 0; i < (1u << wire::kEpochShift) + 10; i++) {
    auto p = pattern(16, uint8_t(i));
    std::memcpy(buf.data() + 16, p.data(), 16);
    ASSERT_TRUE(l.data.seal(buf.data(), 16).ok());
    auto st = l.rx.open(buf.data(), buf.size(), &l.opener);
    ASSERT_TRUE(st.ok()) << i;
    ASSERT_EQ(std::memcmp(st->payload, p.data(), 16), 0);
  }
  EXPECT_EQ(l.opener.records(), (1u << wire::kEpochShift) + 10);
}
