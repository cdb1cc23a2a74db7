// The relay: one stream's two directions between its local QEMU socket and
// the peer daemon, across broken connections (docs/protocol.md, sections 15
// to 17).
//
// The receiver acknowledges what it has delivered to its local QEMU (ACK).
// The sender keeps the DATA records it sealed until they are acknowledged
// (the resend log), never lets more than the window stay unacknowledged (so
// QEMU waits, and neither its view of the bandwidth nor the data still on the
// way at switch-over is inflated), and when a connection breaks, resumes the
// stream on a new one from exactly where the peer's QEMU stopped taking data.
// QEMU sees a pause.
//
// Threads, and who may do what:
//   R, the receiving thread (the caller of run()): the only one that reads a
//     connection, opens records, writes to the local socket, counts what was
//     delivered, and changes the connection (sending START on it): it alone
//     installs one (on the client after reconnecting, on the server after
//     taking the newest offer()), one at a time, so two installs cannot
//     overlap, and the position it announces is its own delivered count,
//     which nothing else changes.
//   S, the sending thread (started by run()): the only one that writes DATA
//     and FIN to an installed connection (and the ACKs R hands over, and the
//     keepalive), and the only one that reads the local socket, seals DATA
//     and appends to the resend log. R writes to an installed connection
//     only an ACK, and only without waiting (try_send_ack: when no other
//     thread holds the socket and the kernel takes it at once; otherwise S
//     sends it, or finishes it). So R never waits behind a full socket and
//     always drains the peer: two links whose sockets are full both ways
//     cannot deadlock.
//   Anyone else: offer() (the data plane, on the server), abort(),
//     settle_at_end(), counters(). They never touch a connection's
//     descriptor except to shut it down, under mu_, while the link owns it.
// Every field shared by R and S is under mu_; S sleeps on an eventfd (with
// QEMU's socket), R on cv_.
//
// The link's life (one field, phase_):
//   kRelaying --(a connection breaks: broken())--> kRecovering
//   kRecovering --(R installs a connection)--> kRelaying
//   kRelaying --(both directions' FINs delivered and acknowledged)--> kDone
//   any --(a fatal error, abort())--> kFailed
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "migration/buffer_pool.h"
#include "migration/channel.h"
#include "migration/session.h"

namespace encmig {

// Local UNIX socket buffers: large enough that one read drains what QEMU
// queued, so records grow under load and stay small when little is queued.
// The link sets them on the stream's local socket.
constexpr int kLocalSocketBuffer = 4 << 20;

struct LinkOptions {
  size_t min_window = 2 << 20;     // bytes the window never shrinks below
  size_t max_window = 256 << 20;   // nor grows above: also the resend log's bound
  int keepalive_ms = 1000;         // an ACK at least this often, even with nothing to acknowledge
  int silence_ms = 5000;           // nothing received for this long: the connection is broken
  std::chrono::milliseconds outage_budget{60000};  // how long a stream may go without a connection
  int max_resumes = 100;           // per stream, counted by each side; beyond, the migration fails
  // For encmig's own tests only (encmigd --test-fault): deliver the DATA
  // record with this number twice, or not at all, after it was authenticated
  // and checked, as a bug in the delivery would. The integrity checks must
  // then fail the stream.
  enum class Fault { kNone, kRepeatRecord, kSkipRecord };
  Fault fault = Fault::kNone;
  uint64_t fault_record = 0;
};

// Sealed DATA records not yet acknowledged, in chunks from the daemon's
// BufferPool; addressed by stream position. Records are contiguous within a
// chunk and never span two. Owned by the sending thread; its bookkeeping is
// read by the receiving thread under the link's lock (boundary()).
class ResendLog {
 public:
  explicit ResendLog(BufferPool& pool) : pool_(pool) {}
  ~ResendLog();
  ResendLog(const ResendLog&) = delete;
  ResendLog& operator=(const ResendLog&) = delete;

  // Takes the stream's guaranteed chunks; false if the budget is spent.
  bool reserve_minimum();
  // Room for the next record: the payload (up to *cap bytes) goes at
  // p + kRecordHeaderSize. Null when the budget allows no further chunk.
  uint8_t* reserve(uint32_t* cap);
  void commit(uint32_t payload_len);   // the record just sealed at reserve()
  void release_to(uint64_t position);  // drops the records wholly before position
  // A record starts at `position`, or it is end().
  bool boundary(uint64_t position) const;
  // Records from `position` (a boundary below end()) on, contiguous, at most about a MiB.
  struct Run {
    const uint8_t* p = nullptr;
    size_t bytes = 0;      // on the wire
    uint64_t payload = 0;  // stream positions covered
  };
  Result<Run> run_from(uint64_t position) const;
  uint64_t begin() const { return begin_; }
  uint64_t end() const { return end_; }

 private:
  struct Chunk {
    LockedRegion mem;
    size_t fill = 0;
    size_t live = 0;  // records in it not yet released
  };
  struct Rec {
    uint64_t position;
    uint32_t len;  // payload
    uint32_t offset;
    Chunk* chunk;
  };
  std::unique_ptr<Chunk> new_chunk();
  BufferPool& pool_;
  std::deque<std::unique_ptr<Chunk>> chunks_;  // in use, oldest first; back() is being filled
  std::vector<std::unique_ptr<Chunk>> spares_;
  std::deque<Rec> recs_;
  size_t owned_ = 0;  // chunks taken from the pool (in use and spare)
  uint64_t begin_ = 0, end_ = 0;
};

class StreamLink {
 public:
  // Makes (client) a new authenticated connection that resumes this stream.
  using Reconnect = std::function<Result<std::unique_ptr<EncryptedChannel>>()>;
  // The secret of one direction of this stream's DATA (derive_stream_secret,
  // from the migration's key); fails once the migration ended.
  using StreamSecret = std::function<Result<Secret>(Direction, const wire::Salt&)>;

  StreamLink(Stream& stream, MigrationRole role, LinkOptions options, StreamSecret secret, BufferPool& pool);
  ~StreamLink();

  // Relays both directions on `first`, and on the connections that replace
  // it, until the stream is done or fails. The server passes the client's
  // START on `first` (the data plane read it to find the stream); the client
  // passes null, and `reconnect`. Returns the first error; whichever side
  // fails first tells the peer why in an ERROR record.
  Status run(std::unique_ptr<EncryptedChannel> first, const wire::Start* peer_start, Reconnect reconnect);

  // Server: the client resumed this stream on `ch`, whose first record was
  // `start` (key confirmation done). The newest offer wins: an older one
  // waiting, or being installed, is closed. The receiving thread installs it,
  // or refuses it with ERROR 24 and waits on for another.
  void offer(std::unique_ptr<EncryptedChannel> ch, const wire::Start& start);

  // Fails the link from outside (the migration failed): unblocks everything.
  void abort();

  // The controller ended the migration while this stream was reconnecting
  // with both FINs through and only an acknowledgement outstanding: the
  // stream is complete. Returns whether it was.
  bool settle_at_end();

  struct Counters {
    uint64_t resumes = 0, resent_bytes = 0, window = 0, unacked = 0, refused_resumes = 0;
    // Unacknowledged beyond one ACK step: what may not have reached the
    // peer yet (the peer acknowledges only every step, section 15.2).
    uint64_t in_flight = 0;
    bool reconnecting = false;
  };
  Counters counters() const;

 private:
  using Clock = std::chrono::steady_clock;
  enum class Phase { kRelaying, kRecovering, kDone, kFailed };
  struct Outcome {
    Status status;
    bool tell_peer = false;
  };
  Outcome pump_out();
  Outcome receive_loop(Reconnect& reconnect);
  Outcome recover(Reconnect& reconnect);
  Outcome deliver(EncryptedChannel::Batch& b, bool& local_gone);
  Outcome on_peer_fin(const wire::Fin& f);
  Status check_peer_start(const wire::Start& s);  // mu_ held
  Status learn_peer_salt(const wire::Salt& salt);  // R only
  Status install(std::shared_ptr<EncryptedChannel> ch, uint64_t peer_position);
  void broken(uint64_t gen, const Error& why);
  bool broken_locked(uint64_t gen, const Error& why);  // true if it broke the connection (then wake S)
  void wake_sender();
  size_t window_locked() const;
  uint64_t ack_limit_locked() const { return sent_ + (fin_written_ ? 1 : 0); }
  void on_ack_locked(uint64_t position, Clock::time_point now);
  // Done: the peer acknowledged our FIN (position sent + 1), and we its.
  bool done_locked() const { return local_eof_ && acked_ == sent_ + 1 && peer_fin_ && final_ack_sent_; }

  Stream& s_;
  const MigrationRole role_;
  const LinkOptions o_;
  const StreamSecret secret_;
  BufferPool& pool_;
  Fd wake_;  // eventfd: wakes S out of its wait for QEMU

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Phase phase_ = Phase::kRelaying;
  bool ended_ = false;                    // run() has returned: nothing to resume
  std::shared_ptr<EncryptedChannel> conn_;  // the installed connection; null while recovering
  uint64_t gen_ = 0;                      // bumps with every install
  std::shared_ptr<EncryptedChannel> offered_, installing_;  // server: the newest offer, and the one R works on
  wire::Start offered_start_;
  Error last_break_ = make_error(ErrorCode::kIo, "connection broke");
  std::string failure_;  // why the link failed, for a resume that comes after
  Clock::time_point outage_since_{};

  // Our direction. S: sealer_, the log's contents; under mu_: the rest.
  wire::Salt my_salt_{};
  DataSealer sealer_;
  ResendLog log_;
  uint64_t sent_ = 0, acked_ = 0;  // stream positions of our DATA
  bool local_eof_ = false;         // QEMU closed: fin_ is the stream's FIN
  bool fin_written_ = false;       // the FIN went out on some connection
  wire::Fin fin_;
  uint64_t resend_from_ = 0;       // where S starts on connection gen_
  bool sender_waits_ = false;      // S sleeps until an ACK opens the window (or more)
  bool ack_due_ = false;           // R asks S to send an ACK now
  bool flush_due_ = false;         // R sealed an ACK the socket took only part of: S writes the rest
  std::chrono::steady_clock::time_point last_ack_at_ = std::chrono::steady_clock::now();  // for the keepalive
  bool sender_done_ = false;       // S has returned

  // The peer's direction. R only; under mu_ for readers.
  bool have_peer_ = false;
  wire::Salt peer_salt_{};
  DataOpener opener_;
  Sha256 delivered_digest_;
  uint64_t delivered_ = 0, delivered_records_ = 0, ack_sent_ = 0;
  bool peer_fin_ = false, final_ack_sent_ = false;

  double rate_ = 0;  // bytes/s the peer's QEMU takes (from ACKs)
  uint64_t rate_mark_pos_ = 0;
  Clock::time_point rate_mark_{};
  uint32_t rtt_us_ = 0;
  Clock::time_point rtt_at_{};
  Counters counters_;
};

}  // namespace encmig
