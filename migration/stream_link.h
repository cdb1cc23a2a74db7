// The relay: one stream's two directions between its local QEMU socket and
// the peer daemon, across broken connections.
//
// Protocol version 2 (docs/protocol.md, sections 15 to 17): the receiver
// acknowledges what it has delivered to its local QEMU (ACK records). The
// sender keeps what is not acknowledged yet (the resend buffer), never lets
// more than the window stay unacknowledged (so QEMU waits, and neither its
// view of the bandwidth nor the data still on the way at switch-over is
// inflated), and when a connection breaks, resumes the stream on a new one
// from exactly where the peer's QEMU stopped taking data. QEMU sees a pause.
//
// In version 1 none of this exists: a broken connection fails the stream.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "migration/channel.h"
#include "migration/session.h"

namespace encmig {

// Local UNIX socket buffers: large enough that one read drains what QEMU
// queued, so records grow under load and stay small when little is queued.
// The link sets them on the stream's local socket.
constexpr int kLocalSocketBuffer = 4 << 20;

struct LinkOptions {
  size_t min_window = 2 << 20;     // bytes the window never shrinks below
  size_t max_window = 256 << 20;   // nor grows above: also the resend buffer's bound
  int keepalive_ms = 1000;         // an ACK at least this often, even with nothing to acknowledge
  int silence_ms = 5000;           // nothing received for this long: the connection is broken
  std::chrono::milliseconds outage_budget{60000};  // how long a stream may go without a connection
  int max_resumes = 100;           // per stream; beyond, the migration fails
};

// Plaintext sent but not yet acknowledged, in 1 MiB chunks, addressed by
// stream position (DATA payload bytes since the start of the stream).
// Released chunks are kept for reuse (up to kSpares): a fresh chunk costs
// page faults and zeroing, a reused one is still in the cache.
class ResendBuffer {
 public:
  // Space for the next read: contiguous, at most `max` bytes.
  uint8_t* reserve(size_t max, size_t* len);
  void commit(size_t n);               // the bytes just written at reserve()
  void release_to(uint64_t position);  // forget what the peer has
  // Calls fn(ptr, len) for each contiguous piece of [from, end()).
  template <class Fn>
  void for_each_from(uint64_t from, Fn fn) const;
  uint64_t begin() const { return begin_; }
  uint64_t end() const { return end_; }
  size_t held() const { return size_t(end_ - begin_); }

 private:
  static constexpr size_t kChunk = 1 << 20;
  static constexpr size_t kSpares = 8;
  using Chunk = std::unique_ptr<uint8_t[]>;  // uninitialized: every byte is read into before it is sent
  std::deque<Chunk> chunks_;                 // chunks_[0] starts at begin_ - head_off_
  std::vector<Chunk> spares_;
  size_t head_off_ = 0;                      // offset of begin_ in chunks_[0]
  size_t tail_fill_ = 0;                     // bytes used in chunks_.back()
  uint64_t begin_ = 0, end_ = 0;
};

class StreamLink {
 public:
  // Makes (client) a new authenticated connection that resumes this stream.
  using Reconnect = std::function<Result<std::unique_ptr<EncryptedChannel>>()>;

  StreamLink(Stream& stream, MigrationRole role, LinkOptions options);
  ~StreamLink();

  // Relays both directions on `first` (and, in version 2, on the
  // connections that replace it) until the stream is done or fails. Local to
  // peer runs on a second thread, peer to local on the caller's. The client
  // passes `reconnect`; the server waits for resume(). Returns the first
  // error; whichever side fails first tells the peer why in an ERROR record.
  Status run(std::unique_ptr<EncryptedChannel> first, Reconnect reconnect);

  // Server: the peer resumed this stream on `ch` (key confirmation done).
  // Exchanges RESUME positions, resends what the peer is missing, and hands
  // the connection to run(). Fails with kResumeRefused if this stream cannot
  // be resumed (done, failed, or a position out of range).
  Status resume(std::unique_ptr<EncryptedChannel> ch);

  // Fails the link from outside (the migration failed): unblocks everything.
  void abort();

  // The controller ended the migration while this stream was reconnecting
  // with both FINs through and only an acknowledgement outstanding: the
  // stream is complete. Returns whether it was.
  bool settle_at_end();

  struct Counters {
    uint64_t resumes = 0, resent_bytes = 0, window = 0, unacked = 0;
    bool reconnecting = false;
  };
  Counters counters() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Outcome {
    Status status;
    bool tell_peer = false;
  };
  Outcome pump_local_to_peer();
  void resend_if_pending();
  void resend_if_pending_locked();  // send_mu_ held
  Outcome receive_loop(Reconnect& reconnect);
  Outcome recover(Reconnect& reconnect, uint64_t broken_gen, const Error& why);
  Status install(std::unique_ptr<EncryptedChannel> ch);
  void broken(uint64_t gen);
  size_t window_locked() const;
  void on_ack_locked(uint64_t position, Clock::time_point now);
  // Done: the peer acknowledged our FIN (position sent + 1), and we its.
  bool done_locked() const { return fin_sent_ && acked_ == sent_ + 1 && peer_fin_ && final_ack_sent_; }
  bool v2() const { return version_ >= wire::kVersion2; }

  Stream& s_;
  const MigrationRole role_;
  const LinkOptions o_;
  uint16_t version_ = wire::kVersion;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<EncryptedChannel> ch_;  // null while reconnecting
  uint64_t gen_ = 0;                      // bumps with every connection
  std::mutex send_mu_;                    // orders DATA/FIN: new data never overtakes a resend
  ResendBuffer buf_;
  uint64_t sent_ = 0, acked_ = 0;         // our DATA: stream positions
  uint64_t delivered_ = 0, ack_sent_ = 0; // the peer's DATA we gave QEMU, and acknowledged
  bool fin_sent_ = false, peer_fin_ = false, final_ack_sent_ = false;
  bool failed_ = false;
  bool ended_ = false;  // run() has returned: nothing to resume
  bool resend_pending_ = false, resend_fin_ = false;
  bool receiver_idle_ = false;  // the receiving thread is in recover(): delivered_ is final
  uint64_t resend_from_ = 0;
  Fd wake_;  // eventfd: wakes the sending thread out of its wait for QEMU
  Clock::time_point outage_since_{};
  double rate_ = 0;  // bytes/s the peer's QEMU takes (from ACKs)
  uint64_t rate_mark_pos_ = 0;
  Clock::time_point rate_mark_{};
  uint32_t rtt_us_ = 0;
  Clock::time_point rtt_at_{};
  Counters counters_;
  std::vector<uint8_t> v1buf_;  // version 1: one record, sealed in place
};

}  // namespace encmig
