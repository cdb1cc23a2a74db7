// EncryptedChannel: wraps one TCP socket after the handshake, in the manner
// of QEMU's QIOChannel; migration/handshake_io.h makes it, for both roles. It
// can hold opened plaintext that the socket no longer shows as readable:
// receive() returns every complete record already buffered before it reads
// again.
//
// The channel owns the socket and closes it when destroyed. It sets no socket
// option: the TCP options are applied where the socket is made (tcp_connect,
// or the data listener, whose accepted sockets inherit them). To abort a
// stream, the migration shuts the socket down by its number (Stream::peer_fd)
// while the handler that owns the channel still holds it open.
//
// One thread may send and another receive at the same time.
#pragma once
#include <sys/uio.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "migration/handshake.h"
#include "migration/record.h"
#include "migration/socket.h"

namespace encmig {

class EncryptedChannel {
 public:
  // Send buffers carry room for the header before and the tag after the payload.
  static constexpr size_t kHeadroom = wire::kRecordHeaderSize;
  static constexpr size_t kTailroom = wire::kTagSize;
  static constexpr int kMaxBatch = 64;

  // Takes `sock` only on success. The version is the hellos'. `recv_base`:
  // the stream position the peer's DATA continues from on this connection
  // (0, or for a resumed stream what this side has delivered).
  static Result<std::unique_ptr<EncryptedChannel>> create(Fd&& sock, SessionKeys keys, std::string name,
                                                          uint64_t recv_base = 0);

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }
  uint16_t version() const { return version_; }
  uint32_t hello_flags() const { return flags_; }

  // ---- send side ----
  // rec[kHeadroom .. kHeadroom+n) holds the payload; sealed in place and sent
  // with one write.
  Status send_data(uint8_t* rec, uint32_t n);
  // Version 2, for the resend buffer: DATA from src[0..n), which stays intact.
  Status send_data_from(const uint8_t* src, uint32_t n);
  // Version 2: an ACK or RESUME record.
  Status send_position(wire::RecordType type, uint64_t position);
  // Version 2, on a resumed connection before the first DATA: this side's
  // DATA continues at stream position `base`.
  void rebase_sender(uint64_t base);
  // The same for the peer's DATA, before the first record is received.
  void rebase_receiver(uint64_t base) { rx_.rebase(base); }
  // FIN record; in version 1 then half-close (in version 2 ACKs still follow,
  // and close() half-closes once both directions are done).
  Status send_fin();
  // Version 2: half-close, then read (and check) what the peer still sends
  // until it closes too, for at most `ms`.
  void close_gracefully(int ms);
  // Best effort, from any thread: an ERROR record naming why this side is
  // aborting, then half-close (docs/protocol.md, section 10). Gives up rather
  // than block: if the sending thread is stuck in a write for 200 ms or the
  // socket buffer is full, the peer learns of the failure as a truncation.
  // Returns whether the record went out. The caller should then linger() so
  // closing with unread input does not reset the connection and discard it.
  bool send_error(ErrorCode code, const std::string& text);
  // Reads and discards input until the peer closes or `ms` pass.
  void linger(int ms);

  // ---- receive side ----
  struct Batch {
    iovec iov[kMaxBatch];
    int count = 0;
    bool fin = false;  // the peer's authenticated end of stream
    size_t bytes = 0;
    bool ack = false;  // version 2: the highest ACK position in this batch
    uint64_t ack_position = 0;
    bool resume = false;  // version 2: a RESUME record (only valid first on a resumed connection)
    uint64_t resume_position = 0;
  };
  // Blocks until at least one DATA, ACK, RESUME or FIN record is available,
  // or `timeout_ms` (-1: none) passes with nothing (kTimeout). Plaintext spans
  // stay valid until the next receive(). A clean EOF is only a FIN.
  Status receive(Batch& batch, int timeout_ms = -1);
  // After FIN: waits for the peer's close; any further byte is an error.
  Status expect_eof();

  uint64_t records_sent() const { return tx_.records(); }
  uint64_t records_received() const { return rx_.records(); }
  // The path's round trip without queueing: the TCP connection's minimum RTT
  // (TCP_INFO), in microseconds (the smoothed RTT if the kernel has none); 0
  // if unknown. The smoothed RTT would include the queue our own window
  // builds, and a window sized by it would grow the queue further.
  uint32_t min_rtt_us() const;

 private:
  EncryptedChannel() = default;
  Fd fd_;
  std::string name_;
  uint16_t version_ = wire::kVersion;
  uint32_t flags_ = 0;
  std::timed_mutex tx_mu_;  // the sealer and the socket's write side
  RecordSealer tx_;
  std::vector<uint8_t> txbuf_;  // version 2: one sealed record from the resend buffer
  RecordOpener rx_;
  // Received bytes live in rbuf_[rstart_, rend_). The buffer holds two
  // maximal records, so a partial record is moved to the front only when the
  // space after it could not take a whole record.
  std::vector<uint8_t> rbuf_;
  size_t rstart_ = 0, rend_ = 0;
};

}  // namespace encmig
