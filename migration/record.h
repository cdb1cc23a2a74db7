// Records: seal and open in place, with no socket and no allocation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "migration/key_schedule.h"
#include "migration/wire.h"

namespace encmig {

class RecordSealer {
 public:
  static Result<RecordSealer> create(TrafficKeys keys);
  RecordSealer() = default;

  // Encrypts payload[0..len) in place; writes header and tag. DATA records
  // need 1 <= len <= kMaxRecordPayload.
  Status seal_data(uint8_t* payload, uint32_t len, uint8_t header[wire::kRecordHeaderSize],
                   uint8_t tag[wire::kTagSize]);
  // The end-of-stream record, whole: header + 8-byte total + tag.
  Status seal_fin(uint8_t out[wire::kFinRecordSize]);
  // An ERROR record (code + text), whole; returns its size in `out_len`.
  Status seal_error(ErrorCode code, const std::string& text, uint8_t out[wire::kMaxErrorRecordSize], size_t* out_len);

  // Records of every type sealed so far (the next counter).
  uint64_t records() const { return counter_; }
  uint64_t payload_bytes() const { return bytes_; }
  bool finished() const { return finished_; }

 private:
  Status seal(wire::RecordType type, uint8_t* payload, uint32_t len, uint8_t* header, uint8_t* tag);
  TrafficKeys keys_;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  bool finished_ = false;
};

class RecordOpener {
 public:
  static Result<RecordOpener> create(TrafficKeys keys);
  RecordOpener() = default;

  struct Step {
    // consumed == 0: need `need` more bytes in total from buf (need > avail).
    size_t consumed = 0;
    size_t need = 0;
    wire::RecordType type = wire::RecordType::kData;
    uint8_t* payload = nullptr;  // plaintext, in place; only for authenticated DATA
    uint32_t length = 0;
  };

  // Opens the record at the start of buf[0..avail). Checks the header, the
  // length limit and the counter before any decryption. An ALERT from the
  // peer, an ERROR record, a bad tag or a bad counter is a final error; the
  // opener then refuses all further input.
  Result<Step> open(uint8_t* buf, size_t avail);

  bool finished() const { return finished_; }
  // Records of every type opened so far (the next expected counter).
  uint64_t records() const { return counter_; }
  uint64_t payload_bytes() const { return bytes_; }

 private:
  Error fail(Error e);
  TrafficKeys keys_;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace encmig
