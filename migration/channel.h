// EncryptedChannel: one authenticated TCP connection, in the manner of QEMU's
// QIOChannel; migration/handshake_io.h makes it, for both roles, and it owns
// the socket from then on (closed when the channel is destroyed).
//
// It speaks the connection's control records (START, ACK, FIN, ERROR) under
// the connection's keys, writes DATA records that the stream sealed (they
// belong to the stream, not to a connection: migration/record.h), and reads
// both kinds. It sets no socket option: the TCP options are applied where the
// socket is made (tcp_connect, or the data listener, whose accepted sockets
// inherit them).
//
// Threads: any thread may send (records never interleave on the socket); one
// thread receives. Whoever shares a channel across threads shares its owner
// (a shared_ptr), so its descriptor is never closed while another thread can
// still reach it; shutting it down (shutdown()) is how another thread stops it.
#pragma once
#include <sys/uio.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "migration/buffer_pool.h"
#include "migration/handshake.h"
#include "migration/record.h"
#include "migration/socket.h"

namespace encmig {

class EncryptedChannel {
 public:
  static constexpr int kMaxBatch = 64;

  // Takes `sock` only on success.
  static Result<std::unique_ptr<EncryptedChannel>> create(Fd&& sock, SessionKeys keys, std::string name);

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }
  wire::Kind kind() const { return kind_; }
  uint32_t index() const { return index_; }
  // The hello said RESUME: this connection resumes a stream.
  bool resumed() const { return (flags_ & wire::kHelloFlagResume) != 0; }
  // Wakes any thread blocked on this socket, from any thread; the descriptor stays open.
  void shutdown() const;

  // ---- send side ----
  // DATA records as the stream's DataSealer sealed them, written as they are.
  Status send_records(const uint8_t* p, size_t n);
  Status send_start(const wire::Start& s);
  Status send_ack(uint64_t position);
  Status send_fin(const wire::Fin& f);
  // For the receiving thread, which must never wait on the socket: an ACK
  // if no other thread is writing. kSent: it went out whole. kQueued: it is
  // sealed, and the part the socket could not take now waits for the next
  // send (or flush()), which a sending thread must then make. kBusy: another
  // thread holds the socket; nothing was sealed.
  enum class TrySend { kSent, kQueued, kBusy };
  Result<TrySend> try_send_ack(uint64_t position);
  // Writes what try_send_ack() queued, if anything.
  Status flush();
  // Best effort: an ERROR record naming why this side is aborting, then
  // half-close (docs/protocol.md, section 10). Gives up rather than block: if
  // another thread is stuck in a write for 200 ms or the socket buffer is
  // full, the peer learns of the failure as a broken connection. Returns
  // whether the record went out. The caller should then linger() so closing
  // with unread input does not reset the connection and discard it.
  bool send_error(ErrorCode code, const std::string& text);
  // Reads and discards input until the peer closes or `ms` pass.
  void linger(int ms);
  // Half-close, then read (and check) what the peer still sends until it
  // closes too, for at most `ms`.
  void close_gracefully(int ms, DataOpener* data);

  // ---- receive side ----
  struct Data {
    uint8_t* payload;
    uint32_t length;
    const uint8_t* tag;
    uint64_t position;  // the stream position of its first byte
    uint64_t number;    // its number among the stream's DATA records
  };
  struct Batch {
    Data data[kMaxBatch];
    int count = 0;
    size_t bytes = 0;
    bool ack = false;  // ACKs in this batch: the first and the last position (never decreasing)
    uint64_t ack_first = 0, ack_last = 0;
    bool start = false;  // the peer's START: ends the batch
    wire::Start start_info;
    bool fin = false;  // the peer's FIN: ends the batch
    wire::Fin fin_info;
  };
  // Blocks until at least one record is available, or `timeout_ms` (-1:
  // none) passes with nothing (kTimeout). `data` opens the peer's DATA (null
  // before its START). Plaintext stays valid until the next receive(). A
  // clean EOF is never an end of stream: kTruncated.
  Status receive(Batch& batch, DataOpener* data, int timeout_ms = -1);

  uint64_t control_records_sent() const { return tx_.records(); }
  uint64_t control_records_received() const { return rx_.records(); }
  // The path's round trip without queueing: the TCP connection's minimum RTT
  // (TCP_INFO), in microseconds (the smoothed RTT if the kernel has none); 0
  // if unknown. The smoothed RTT would include the queue our own window
  // builds, and a window sized by it would grow the queue further.
  uint32_t min_rtt_us() const;

 private:
  EncryptedChannel() = default;
  Status send_control(const uint8_t* rec, size_t n);
  Fd fd_;
  std::string name_;
  wire::Kind kind_ = wire::Kind::kMigration;
  uint32_t index_ = 0;
  uint32_t flags_ = 0;
  std::timed_mutex tx_mu_;  // the control sealer and the socket's write side
  ControlSealer tx_;
  std::vector<uint8_t> queued_;  // the unsent tail of a record try_send_ack() sealed: goes out first
  uint64_t ack_floor_ = 0;       // the highest position sent in START or ACK: ACKs never go below it
  RecordReader rx_;
  // Received bytes live in rbuf_[rstart_, rend_), opened in place: guest
  // plaintext, so locked memory, made at the first receive(). It holds
  // almost four maximal records, and a partial record is moved to the front
  // only when the space after it could not take a whole record.
  LockedRegion rbuf_;
  size_t rstart_ = 0, rend_ = 0;
};

}  // namespace encmig
