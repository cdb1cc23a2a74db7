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
  // `version` decides what may follow a FIN: nothing in version 1; ACK and
  // ERROR records in version 2. `base`: the stream position (DATA payload
  // bytes) this connection starts at; 0 except for a resumed version-2
  // stream. FIN carries base + bytes sent.
  static Result<RecordSealer> create(TrafficKeys keys, uint16_t version = wire::kVersion, uint64_t base = 0);
  RecordSealer() = default;

  // Encrypts payload[0..len) in place; writes header and tag. DATA records
  // need 1 <= len <= kMaxRecordPayload.
  Status seal_data(uint8_t* payload, uint32_t len, uint8_t header[wire::kRecordHeaderSize],
                   uint8_t tag[wire::kTagSize]);
  // The same from a buffer kept intact (the resend buffer): the whole record,
  // header || ciphertext || tag, into `out` (len + kRecordOverhead bytes).
  Status seal_data_from(const uint8_t* src, uint32_t len, uint8_t* out);
  // Version 2, before the first DATA of a resumed connection: the stream
  // position this side's DATA continues at.
  void rebase(uint64_t base) { bytes_ = base; }
  // Version 2: an ACK or RESUME record carrying `position`, whole.
  Status seal_position(wire::RecordType type, uint64_t position, uint8_t out[wire::kAckRecordSize]);
  // The end-of-stream record, whole: header + 8-byte total + tag.
  Status seal_fin(uint8_t out[wire::kFinRecordSize]);
  // An ERROR record (code + text), whole; returns its size in `out_len`.
  Status seal_error(ErrorCode code, const std::string& text, uint8_t out[wire::kMaxErrorRecordSize], size_t* out_len);

  // Records of every type sealed so far (the next counter).
  uint64_t records() const { return counter_; }
  // The stream position: base + DATA payload bytes sealed.
  uint64_t payload_bytes() const { return bytes_; }
  bool finished() const { return finished_; }

 private:
  Status seal(wire::RecordType type, uint8_t* payload, uint32_t len, uint8_t* header, uint8_t* tag);
  Status check_next(wire::RecordType type) const;
  TrafficKeys keys_;
  uint16_t version_ = wire::kVersion;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  bool fin_ = false;       // FIN sealed: no more DATA, FIN or RESUME
  bool finished_ = false;  // nothing at all may follow (version 1 FIN, ERROR)
};

class RecordOpener {
 public:
  // `version` decides which record types exist; `base` as for RecordSealer.
  static Result<RecordOpener> create(TrafficKeys keys, uint16_t version = wire::kVersion, uint64_t base = 0);
  RecordOpener() = default;

  struct Step {
    // consumed == 0: need `need` more bytes in total from buf (need > avail).
    size_t consumed = 0;
    size_t need = 0;
    wire::RecordType type = wire::RecordType::kData;
    uint8_t* payload = nullptr;  // plaintext, in place; only for authenticated DATA
    uint32_t length = 0;
    uint64_t position = 0;       // ACK and RESUME (version 2)
  };

  // Opens the record at the start of buf[0..avail). Checks the header, the
  // length limit and the counter before any decryption. An ALERT from the
  // peer, an ERROR record, a bad tag or a bad counter is a final error; the
  // opener then refuses all further input.
  Result<Step> open(uint8_t* buf, size_t avail);

  // Nothing may follow (version 1: the FIN; any version: an ERROR).
  bool finished() const { return finished_; }
  // The peer's FIN has been opened (in version 2 ACKs may still follow).
  bool fin_received() const { return fin_; }
  // Version 2, before the first record of a resumed connection.
  void rebase(uint64_t base) { bytes_ = base; }
  // Records of every type opened so far (the next expected counter).
  uint64_t records() const { return counter_; }
  // The stream position: base + DATA payload bytes opened.
  uint64_t payload_bytes() const { return bytes_; }

 private:
  Error fail(Error e);
  TrafficKeys keys_;
  uint16_t version_ = wire::kVersion;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  bool fin_ = false;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace encmig
