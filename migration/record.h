// Records: seal and open in place, with no socket and no allocation
// (docs/protocol.md, section 6).
//
// Two kinds of records share one layout. DATA records belong to a stream:
// each direction of a stream has one DataSealer at its sender and one
// DataOpener at its receiver, kept across every connection the stream uses,
// under the stream's own keys. A DATA record is sealed exactly once; after a
// resume the same bytes are sent again, so no nonce ever protects two
// different plaintexts. Control records (START, ACK, FIN, ERROR) belong to a
// connection, under its keys: a ControlSealer sends them, and a RecordReader
// reads everything that arrives on a connection, both kinds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "crypto/digest.h"
#include "migration/key_schedule.h"
#include "migration/wire.h"

namespace encmig {

class DataSealer {
 public:
  static Result<DataSealer> create(Secret stream_secret);
  DataSealer() = default;

  // rec[0, 16) is room for the header, rec[16, 16 + len) the payload
  // (1 <= len <= kMaxRecordPayload), rec[16 + len, 32 + len) room for the
  // tag: sealed in place, the whole record is then rec[0, len + 32).
  Status seal(uint8_t* rec, uint32_t len);
  // The stream's end: its totals and the digest of every tag sealed. Nothing
  // may be sealed after it.
  wire::Fin finish();

  uint64_t records() const { return records_; }    // DATA records sealed: the next counter
  uint64_t position() const { return position_; }  // DATA payload bytes sealed
  bool finished() const { return finished_; }

 private:
  TrafficKeys keys_;
  Sha256 digest_;
  uint64_t records_ = 0, position_ = 0;
  bool finished_ = false;
  wire::Fin fin_;
};

class DataOpener {
 public:
  static Result<DataOpener> create(Secret stream_secret);
  DataOpener() = default;

  uint64_t records() const { return records_; }    // DATA records opened: the next expected counter
  uint64_t position() const { return position_; }  // DATA payload bytes opened

 private:
  friend class RecordReader;
  // The DATA record at rec, whose header `h` was checked: counter, then tag
  // (AAD = header || be64(position)). Decrypts in place.
  Status open(const wire::RecordHeader& h, uint8_t* rec);
  TrafficKeys keys_;
  uint64_t records_ = 0, position_ = 0;
};

class ControlSealer {
 public:
  static Result<ControlSealer> create(TrafficKeys keys);
  ControlSealer() = default;

  // Whole records. START must come first; after the FIN only ACK and ERROR;
  // after an ERROR nothing.
  Status seal_start(const wire::Start& s, uint8_t out[wire::kStartRecordSize]);
  Status seal_ack(uint64_t position, uint8_t out[wire::kAckRecordSize]);
  Status seal_fin(const wire::Fin& f, uint8_t out[wire::kFinRecordSize]);
  Status seal_error(ErrorCode code, const std::string& text, uint8_t out[wire::kMaxErrorRecordSize], size_t* out_len);

  uint64_t records() const { return counter_; }
  bool finished() const { return finished_; }  // an ERROR was sealed

 private:
  Status seal(wire::RecordType type, uint8_t* out, uint32_t len);
  TrafficKeys keys_;
  uint64_t counter_ = 0;
  bool started_ = false, fin_ = false, finished_ = false;
};

class RecordReader {
 public:
  static Result<RecordReader> create(TrafficKeys control_keys);
  RecordReader() = default;

  struct Step {
    // consumed == 0: `need` bytes in all are needed at buf (need > avail).
    size_t consumed = 0;
    size_t need = 0;
    wire::RecordType type = wire::RecordType::kData;
    // DATA: the plaintext in place, its tag, its stream position and number.
    uint8_t* payload = nullptr;
    uint32_t length = 0;
    const uint8_t* tag = nullptr;
    uint64_t position = 0;  // DATA: of its first byte; ACK: the acknowledged position
    uint64_t number = 0;
    wire::Start start;
    wire::Fin fin;
  };

  // Opens the record at buf[0, avail). Header, length and counter are checked
  // before anything is decrypted. `data` opens the peer's DATA: null until
  // the peer's START named its salt (a DATA record then is out of order).
  // The first record must be START (or an ERROR); after the FIN only ACK and
  // ERROR. An Alert, an ERROR record, a bad tag or counter is final: the
  // reader refuses all further input.
  Result<Step> open(uint8_t* buf, size_t avail, DataOpener* data);

  uint64_t records() const { return counter_; }  // control records opened
  bool fin_received() const { return fin_; }

 private:
  Error fail(Error e);
  TrafficKeys keys_;
  uint64_t counter_ = 0;
  bool started_ = false, fin_ = false, failed_ = false;
};

}  // namespace encmig
