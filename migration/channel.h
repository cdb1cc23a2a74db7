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

  // Takes `sock` only on success.
  static Result<std::unique_ptr<EncryptedChannel>> create(Fd&& sock, SessionKeys keys, std::string name);

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }

  // ---- send side ----
  // rec[kHeadroom .. kHeadroom+n) holds the payload; sealed in place and sent
  // with one write.
  Status send_data(uint8_t* rec, uint32_t n);
  // FIN record, then half-close.
  Status send_fin();
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
  };
  // Blocks until at least one DATA record or the FIN is available. Plaintext
  // spans stay valid until the next receive(). A clean EOF is only a FIN.
  Status receive(Batch& batch);
  // After FIN: waits for the peer's close; any further byte is an error.
  Status expect_eof();

  uint64_t records_sent() const { return tx_.records(); }
  uint64_t records_received() const { return rx_.records(); }

 private:
  EncryptedChannel() = default;
  Fd fd_;
  std::string name_;
  std::timed_mutex tx_mu_;  // the sealer and the socket's write side
  RecordSealer tx_;
  RecordOpener rx_;
  // Received bytes live in rbuf_[rstart_, rend_). The buffer holds two
  // maximal records, so a partial record is moved to the front only when the
  // space after it could not take a whole record.
  std::vector<uint8_t> rbuf_;
  size_t rstart_ = 0, rend_ = 0;
};

}  // namespace encmig
