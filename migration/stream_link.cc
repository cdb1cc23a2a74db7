#include "migration/stream_link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <thread>

#include "crypto/ct.h"
#include "crypto/random.h"
#include "migration/log.h"

namespace encmig {

namespace {

// Acknowledge once at least this much more was delivered (checked after each
// batch), the FIN at once, and at least every keepalive. Each ACK costs a
// seal and a send here and a wake-up and an open at the peer: 1 MiB rather
// than 256 KiB took 9-10% off both daemons' CPU per GiB and 16% off the time
// on loopback (bench/ab.py, 5 interleaved runs, issue 22).
constexpr uint64_t kAckEvery = 1 << 20;
// Before the first rate estimate, the window starts here.
constexpr size_t kInitialWindow = 16 << 20;
// A chunk's tail shorter than this takes no new record: the next one starts a chunk.
constexpr size_t kMinRecordRoom = wire::kRecordOverhead + (64 << 10);
// A run of records written with one call, at most (then R's ACKs get the socket).
constexpr size_t kMaxRun = 1 << 20;

bool peer_broke_protocol(ErrorCode c) {
  switch (c) {
    case ErrorCode::kRecordTooLarge: case ErrorCode::kBadRecordType: case ErrorCode::kCounterMismatch:
    case ErrorCode::kAuthFailed: case ErrorCode::kDataAfterFin: case ErrorCode::kBadFin: case ErrorCode::kRecordLimit:
    case ErrorCode::kResumeRefused: case ErrorCode::kBadAck: case ErrorCode::kBadReserved: case ErrorCode::kIntegrity:
      return true;
    default:
      return false;
  }
}

// A connection that broke, as networks break connections (reset, closed
// without a FIN, silence): the stream resumes. Anything that could be an
// attack on the records themselves fails it.
bool resumable(ErrorCode c) { return c == ErrorCode::kTruncated || c == ErrorCode::kIo || c == ErrorCode::kTimeout; }

std::string pos(uint64_t p) { return std::to_string(p); }

}  // namespace

// ---- ResendLog ----

ResendLog::~ResendLog() { pool_.give_back(owned_); }

bool ResendLog::reserve_minimum() {
  if (!pool_.take(BufferPool::kMinChunks)) return false;
  owned_ += BufferPool::kMinChunks;
  for (size_t i = 0; i < BufferPool::kMinChunks; i++) {
    auto c = std::make_unique<Chunk>();
    c->mem = LockedRegion::allocate(BufferPool::kChunk);
    if (!c->mem.valid()) return false;
    spares_.push_back(std::move(c));
  }
  return true;
}

std::unique_ptr<ResendLog::Chunk> ResendLog::new_chunk() {
  if (!spares_.empty()) {
    auto c = std::move(spares_.back());
    spares_.pop_back();
    return c;
  }
  if (!pool_.take(1)) {
    pool_.count_capped();
    return nullptr;
  }
  auto c = std::make_unique<Chunk>();
  c->mem = LockedRegion::allocate(BufferPool::kChunk);
  if (!c->mem.valid()) {
    pool_.give_back(1);
    return nullptr;
  }
  owned_++;
  return c;
}

uint8_t* ResendLog::reserve(uint32_t* cap) {
  if (chunks_.empty() || BufferPool::kChunk - chunks_.back()->fill < kMinRecordRoom) {
    auto c = new_chunk();
    if (!c) return nullptr;
    c->fill = 0;
    c->live = 0;
    chunks_.push_back(std::move(c));
  }
  Chunk& c = *chunks_.back();
  *cap = uint32_t(std::min<size_t>(wire::kMaxRecordPayload, BufferPool::kChunk - c.fill - wire::kRecordOverhead));
  return c.mem.data() + c.fill;
}

void ResendLog::commit(uint32_t len) {
  Chunk& c = *chunks_.back();
  recs_.push_back(Rec{end_, len, uint32_t(c.fill), &c});
  c.fill += wire::kRecordOverhead + len;
  c.live++;
  end_ += len;
}

void ResendLog::release_to(uint64_t position) {
  while (!recs_.empty() && recs_.front().position + recs_.front().len <= position) {
    recs_.front().chunk->live--;
    begin_ = recs_.front().position + recs_.front().len;
    recs_.pop_front();
  }
  // Chunks with nothing live, except the one being filled, go back.
  while (chunks_.size() > 1 && chunks_.front()->live == 0) {
    auto c = std::move(chunks_.front());
    chunks_.pop_front();
    if (spares_.size() < BufferPool::kMinChunks + 2) {
      spares_.push_back(std::move(c));
    } else {
      owned_--;
      pool_.give_back(1);
    }
  }
}

bool ResendLog::boundary(uint64_t position) const {
  if (position == end_) return true;
  auto it = std::lower_bound(recs_.begin(), recs_.end(), position,
                             [](const Rec& r, uint64_t p) { return r.position < p; });
  return it != recs_.end() && it->position == position;
}

Result<ResendLog::Run> ResendLog::run_from(uint64_t position) const {
  auto it = std::lower_bound(recs_.begin(), recs_.end(), position,
                             [](const Rec& r, uint64_t p) { return r.position < p; });
  // Never a silent move: a start below what is kept, or inside a record, is a bug or a lie.
  if (it == recs_.end() || it->position != position)
    return make_error(ErrorCode::kInternal, "no record starts at stream position " + pos(position) + " (kept: [" +
                                                pos(begin_) + ", " + pos(end_) + "))");
  Run r;
  const Chunk* c = it->chunk;
  r.p = c->mem.data() + it->offset;
  for (; it != recs_.end() && it->chunk == c && r.bytes < kMaxRun; ++it) {
    r.bytes += wire::kRecordOverhead + it->len;
    r.payload += it->len;
  }
  return r;
}

// ---- StreamLink ----

StreamLink::StreamLink(Stream& stream, MigrationRole role, LinkOptions options, StreamSecret secret, BufferPool& pool)
    : s_(stream), role_(role), o_(options), secret_(std::move(secret)), pool_(pool),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), log_(pool) {}

StreamLink::~StreamLink() = default;

StreamLink::Counters StreamLink::counters() const {
  std::lock_guard<std::mutex> g(mu_);
  Counters c = counters_;
  c.window = window_locked();
  c.unacked = sent_ - std::min(acked_, sent_);
  c.in_flight = c.unacked - std::min<uint64_t>(c.unacked, kAckEvery);
  c.reconnecting = phase_ == Phase::kRecovering;
  return c;
}

void StreamLink::wake_sender() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void StreamLink::abort() {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (phase_ != Phase::kDone) phase_ = Phase::kFailed;
    for (auto* c : {&conn_, &installing_, &offered_})
      if (*c) (*c)->shutdown();
    cv_.notify_all();
  }
  wake_sender();
}

bool StreamLink::settle_at_end() {
  std::lock_guard<std::mutex> g(mu_);
  // Both FINs are through, all our DATA acknowledged; only the ACK of our
  // FIN (or our ACK of the peer's) was lost with a connection. The
  // controller has ended the migration (both QEMUs are done): nothing is left
  // to deliver, and the peer may have closed for good.
  if (phase_ != Phase::kRecovering || ended_ || !local_eof_ || !fin_written_ || !peer_fin_ || acked_ < sent_)
    return false;
  acked_ = sent_ + 1;
  final_ack_sent_ = true;
  cv_.notify_all();
  return true;
}

void StreamLink::broken(uint64_t gen, const Error& why) {
  bool changed;
  {
    std::lock_guard<std::mutex> g(mu_);
    changed = broken_locked(gen, why);
  }
  if (changed) wake_sender();
}

bool StreamLink::broken_locked(uint64_t gen, const Error& why) {
  if (gen != gen_ || !conn_ || phase_ != Phase::kRelaying) return false;
  conn_->shutdown();  // unblocks whoever is on it; it closes when its last holder lets go
  conn_.reset();
  last_break_ = why;
  if (outage_since_ == Clock::time_point{}) outage_since_ = Clock::now();
  phase_ = Phase::kRecovering;
  s_.state = StreamState::kReconnecting;
  cv_.notify_all();
  return true;
}

size_t StreamLink::window_locked() const {
  if (rate_ <= 0) return std::clamp(kInitialWindow, o_.min_window, o_.max_window);
  // Four times what the peer's QEMU takes in one round trip of the empty
  // path, plus the ACK granularity. The loop from our write to its ACK is
  // longer than that round trip by the queues on the way (TCP keeps up to
  // about a BDP queued at the bottleneck), so two would stop the window from
  // growing; four lets it double per round trip. And it bounds what sits in
  // socket buffers, which a broken connection loses and a resume sends again.
  double w = 4 * rate_ * (double(rtt_us_) / 1e6) + 4 * double(kAckEvery);
  return std::clamp(size_t(w), o_.min_window, o_.max_window);
}

void StreamLink::on_ack_locked(uint64_t position, Clock::time_point now) {
  if (position <= acked_) return;
  if (rate_mark_ == Clock::time_point{}) {
    rate_mark_ = now;
    rate_mark_pos_ = acked_;
  }
  double dt = std::chrono::duration<double>(now - rate_mark_).count();
  // Measured over at least one round trip: ACKs come in bursts (the peer
  // delivers what queued during a stall at once), and a burst's rate is not
  // the path's.
  if (dt >= std::max(0.02, double(rtt_us_) / 1e6)) {
    double inst = double(position - rate_mark_pos_) / dt;
    rate_ = std::max(inst, rate_ * std::exp(-dt));  // keeps a recent peak for about a second
    rate_mark_ = now;
    rate_mark_pos_ = position;
  }
  acked_ = position;
  if (conn_ && now - rtt_at_ > std::chrono::milliseconds(100)) {
    rtt_us_ = conn_->min_rtt_us();
    rtt_at_ = now;
  }
  if (sender_waits_) {
    sender_waits_ = false;
    wake_sender();
  }
}

Status StreamLink::learn_peer_salt(const wire::Salt& salt) {
  if (have_peer_) {
    // A stream's salt never changes: a different one is another stream's, or a forgery.
    if (!ct_equal(salt.data(), peer_salt_.data(), salt.size()))
      return make_error(ErrorCode::kResumeRefused, "START names another salt than the stream's");
    return {};
  }
  const Direction rx = role_ == MigrationRole::kSource ? Direction::kServerToClient : Direction::kClientToServer;
  auto secret = secret_(rx, salt);
  if (!secret) return secret.error();
  auto opener = DataOpener::create(std::move(secret.value()));
  if (!opener) return opener.error();
  std::lock_guard<std::mutex> g(mu_);
  opener_ = std::move(opener.value());
  peer_salt_ = salt;
  have_peer_ = true;
  return {};
}

// The peer says it has delivered `s.position` of our stream: that must lie
// between what it acknowledged and what we sent, at a record boundary.
Status StreamLink::check_peer_start(const wire::Start& s) {
  const uint64_t limit = ack_limit_locked();
  if (s.position < acked_ || s.position > limit || (s.position <= sent_ && !log_.boundary(s.position)))
    return make_error(ErrorCode::kResumeRefused, "START position " + pos(s.position) + " outside [" + pos(acked_) +
                                                     ", " + pos(limit) + "] or inside a record");
  return {};
}

Status StreamLink::run(std::unique_ptr<EncryptedChannel> first_ch, const wire::Start* peer_start, Reconnect reconnect) {
  std::shared_ptr<EncryptedChannel> first(std::move(first_ch));
  // Our direction's stream keys, from a salt of our own: fresh for every stream.
  const Direction tx = role_ == MigrationRole::kSource ? Direction::kClientToServer : Direction::kServerToClient;
  if (auto st = random_nonce_bytes(my_salt_.data(), my_salt_.size()); !st) return st;
  auto secret = secret_(tx, my_salt_);
  if (!secret) return secret.error();
  auto sealer = DataSealer::create(std::move(secret.value()));
  if (!sealer) return sealer.error();
  sealer_ = std::move(sealer.value());
  auto digest = Sha256::create();
  if (!digest) return digest.error();
  delivered_digest_ = std::move(digest.value());
  if (!log_.reserve_minimum())
    return make_error(ErrorCode::kLimit, "stream " + s_.name + ": the daemon's resend budget (" +
                                             std::to_string(pool_.budget() >> 20) + " MiB) is spent");
  if (peer_start) {
    if (auto st = learn_peer_salt(peer_start->salt); !st) return st;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    if (phase_ == Phase::kFailed) return make_error(ErrorCode::kCancelled, "stream aborted");
    conn_ = first;
    gen_ = 1;
  }
  int local = s_.local.get();
  int size = kLocalSocketBuffer;
  setsockopt(local, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(local, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  s_.state = StreamState::kRelaying;
  // Our START opens our direction; on a fresh stream both positions are 0,
  // so the client sends DATA without waiting for the server's START.
  if (auto st = first->send_start({0, my_salt_}); !st) broken(1, st.error());

  // Whichever direction fails first names the cause and, when the cause is
  // ours or a protocol violation, tells the peer in an ERROR record, so its
  // log names the cause, not a broken connection.
  std::atomic<int> first_fail{0};
  auto failed = [&](int who, const Outcome& o) {
    int none = 0;
    if (first_fail.compare_exchange_strong(none, who) && o.tell_peer) {
      std::shared_ptr<EncryptedChannel> ch;
      {
        std::lock_guard<std::mutex> g(mu_);
        ch = conn_ ? conn_ : installing_;
      }
      if (ch && ch->send_error(o.status.error().code, ch->name() + ": " + o.status.error().text())) ch->linger(200);
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (failure_.empty()) failure_ = o.status.error().message();
    }
    abort();
    ::shutdown(s_.local.get(), SHUT_RDWR);
  };
  Outcome out;
  std::thread t([&] {
    out = pump_out();
    {
      std::lock_guard<std::mutex> g(mu_);
      sender_done_ = true;
      cv_.notify_all();
    }
    if (!out.status.ok()) failed(2, out);
  });
  Outcome in = receive_loop(reconnect);
  if (!in.status.ok()) failed(1, in);
  t.join();
  std::shared_ptr<EncryptedChannel> late;
  {
    std::lock_guard<std::mutex> g(mu_);
    ended_ = true;
    late = std::move(offered_);
  }
  if (late && late->send_error(ErrorCode::kResumeRefused, "stream " + s_.name + " has ended")) late->linger(200);
  const std::string name = s_.name;
  if (!in.status.ok() && in.status.error().code == ErrorCode::kPeerError)
    return Error{ErrorCode::kPeerError, name + "-in: " + in.status.error().message()};
  if (first_fail == 1) return Error{in.status.error().code, name + "-in: " + in.status.error().message()};
  if (first_fail == 2) return Error{out.status.error().code, name + "-out: " + out.status.error().message()};
  s_.state = StreamState::kClosed;
  return {};
}

// ---- S: QEMU to the peer ----

StreamLink::Outcome StreamLink::pump_out() {
  const int local = s_.local.get();
  uint64_t my_gen = 0, cursor = 0;
  bool fin_on_conn = false;
  for (;;) {
    std::shared_ptr<EncryptedChannel> ch;
    ResendLog::Run run;
    bool send_fin = false, want_read = false, send_ack = false, ack_fin = false, flush = false;
    uint64_t ack_position = 0;
    int wait_ms = -1;
    const auto now = Clock::now();
    {
      std::lock_guard<std::mutex> g(mu_);
      if (phase_ == Phase::kFailed) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      if (done_locked() || phase_ == Phase::kDone) return {};
      if (conn_ && gen_ != my_gen) {  // a new connection: start where R installed it
        my_gen = gen_;
        cursor = resend_from_;
        fin_on_conn = false;
        ack_due_ = true;  // tell the peer at once where we stand
      }
      ch = conn_;
      // ACKs first: what R delivered (and the FIN), when R asks, and at least
      // every keepalive, even when R is blocked on QEMU: the peer must not
      // take a slow QEMU for a dead connection.
      const auto keepalive = std::chrono::milliseconds(o_.keepalive_ms);
      flush = ch && flush_due_;
      flush_due_ = false;
      if (ch && (ack_due_ || now - last_ack_at_ >= keepalive)) {
        send_ack = true;
        ack_fin = peer_fin_;
        ack_position = delivered_ + (ack_fin ? 1 : 0);
        ack_due_ = false;
        // Counted before the write: the peer may close as soon as it has
        // this ACK, and R must then see the stream done, not broken. If the
        // write fails, the next connection's START says the same.
        ack_sent_ = ack_position;
        if (ack_fin) final_ack_sent_ = true;
      }
      if (send_ack) last_ack_at_ = now;
      if (ch) wait_ms = int(std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     last_ack_at_ + keepalive - now).count()));
      log_.release_to(std::min(acked_, sent_));
      if (ch && cursor < sent_) {
        auto r = log_.run_from(cursor);
        if (!r) return {Error{r.error().code, "resend: " + r.error().message()}, true};
        run = r.value();
      } else if (ch && local_eof_ && !fin_on_conn && acked_ <= sent_) {
        send_fin = true;
        fin_written_ = true;  // before the write: the peer's ACK of it may come before this thread returns
      }
      want_read = !local_eof_ && sent_ - std::min(acked_, sent_) < window_locked();
      sender_waits_ = !run.bytes && !send_fin && !want_read;
    }
    if (send_ack) {
      if (auto st = ch->send_ack(ack_position); !st) broken(my_gen, st.error());
      continue;
    }
    if (flush) {
      if (auto st = ch->flush(); !st) broken(my_gen, st.error());
      continue;
    }
    if (run.bytes) {
      if (auto st = ch->send_records(run.p, run.bytes); !st)
        broken(my_gen, st.error());
      else
        cursor += run.payload;
      continue;
    }
    if (send_fin) {
      if (auto st = ch->send_fin(fin_); !st) {
        broken(my_gen, st.error());
        continue;
      }
      fin_on_conn = true;
      continue;
    }
    // Wait for QEMU (when the window has room), for R (an ACK to send or
    // one that opened the window, a new connection, the end), or for the
    // next keepalive.
    pollfd pf[2] = {{wake_.get(), POLLIN, 0}, {want_read ? local : -1, POLLIN, 0}};
    if (::poll(pf, 2, wait_ms) < 0 && errno != EINTR) return {make_error(ErrorCode::kIo, "poll: " + errno_text(errno)), true};
    if (pf[0].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    if (!want_read || !(pf[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    uint32_t cap = 0;
    uint8_t* rec;
    {
      std::lock_guard<std::mutex> g(mu_);
      rec = log_.reserve(&cap);
      // The budget is spent: wait for ACKs to free a chunk of our own.
      if (!rec) {
        sender_waits_ = true;
        if (acked_ >= sent_) return {make_error(ErrorCode::kLimit, "the daemon's resend budget is spent"), true};
        continue;
      }
    }
    ssize_t n = ::read(local, rec + wire::kRecordHeaderSize, cap);
    if (n > 0) {
      // Sealed at once, while QEMU's bytes are still in the cache; the log
      // then holds ciphertext only.
      if (auto st = sealer_.seal(rec, uint32_t(n)); !st) return {st, true};
      std::lock_guard<std::mutex> g(mu_);
      log_.commit(uint32_t(n));
      sent_ += uint64_t(n);
      s_.bytes_out.store(sent_, std::memory_order_relaxed);
      s_.records_out.store(sealer_.records(), std::memory_order_relaxed);
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0 && errno != ECONNRESET) return {make_error(ErrorCode::kIo, "local read: " + errno_text(errno)), true};
    // EOF, or a reset because QEMU closed with our data unread: QEMU is done
    // with this stream, and the peer learns it from an authenticated FIN.
    // Except on the destination, when QEMU exited (killed, crashed): that is
    // no end of stream, and the source must not take it for one. (On the
    // source, libvirt may hold the socket and close it as it kills QEMU after
    // a completed migration; there the destination QEMU is the judge.)
    if (role_ == MigrationRole::kDestination && s_.qemu.exited_within(20))
      return {make_error(ErrorCode::kIo, "QEMU (pid " + std::to_string(s_.qemu.pid()) + ") exited with the stream open, after " +
                                             std::to_string(sent_) + " bytes"),
              true};
    wire::Fin fin = sealer_.finish();
    std::lock_guard<std::mutex> g(mu_);
    fin_ = fin;
    local_eof_ = true;
  }
}

// ---- R: the peer to QEMU, and the connection's life ----

StreamLink::Outcome StreamLink::deliver(EncryptedChannel::Batch& b, bool& local_gone) {
  iovec iov[EncryptedChannel::kMaxBatch + 1];
  int n = 0;
  // What has gone to QEMU, counted as it goes: the next record must start exactly there.
  uint64_t at = delivered_, number = delivered_records_;
  for (int i = 0; i < b.count; i++) {
    const auto& d = b.data[i];
    // Defence in depth: every record goes to QEMU exactly where the stream
    // stands, whatever the connections did.
    if (d.position != at || d.number != number)
      return {make_error(ErrorCode::kIntegrity, "DATA record " + pos(d.number) + " at position " + pos(d.position) +
                                                   " would be delivered as record " + pos(number) + " at position " +
                                                   pos(at)),
              true};
    int times = 1;
    if (o_.fault != LinkOptions::Fault::kNone && d.number == o_.fault_record) {
      times = o_.fault == LinkOptions::Fault::kSkipRecord ? 0 : 2;
      log_line("stream " + s_.name + ": test fault: DATA record " + pos(d.number) + (times ? " delivered twice" : " skipped"));
    }
    for (int k = 0; k < times; k++) {
      iov[n++] = iovec{d.payload, d.length};
      delivered_digest_.update({d.tag, wire::kTagSize});
      at += d.length;
      number++;
    }
    if (n >= EncryptedChannel::kMaxBatch || i + 1 == b.count) {
      if (n > 0 && !local_gone) {
        if (auto w = writev_all(s_.local.get(), iov, n); !w) {
          // The destination QEMU must take every byte: if it stopped (it
          // failed, or it died), the migration cannot succeed, and the source
          // must know now.
          if (role_ == MigrationRole::kDestination)
            return {make_error(ErrorCode::kIo, "destination QEMU stopped taking data (" + w.error().detail + ")"), true};
          // The source QEMU may close its end first (after completion): keep
          // authenticating the peer's records to its FIN, and drop the data.
          local_gone = true;
        }
      }
      n = 0;
    }
  }
  std::lock_guard<std::mutex> g(mu_);
  delivered_ = at;
  delivered_records_ = number;
  s_.bytes_in.store(delivered_, std::memory_order_relaxed);
  s_.records_in.store(delivered_records_, std::memory_order_relaxed);
  return {};
}

// The peer's FIN: the reader checked its totals against what was opened;
// here they meet what was delivered, and the digest of every tag delivered.
StreamLink::Outcome StreamLink::on_peer_fin(const wire::Fin& f) {
  wire::Digest mine;
  delivered_digest_.finish(mine.data());
  if (f.total != delivered_ || f.records != delivered_records_ ||
      !ct_equal(f.digest.data(), mine.data(), mine.size()))
    return {make_error(ErrorCode::kIntegrity, "the peer's FIN says " + pos(f.total) + " bytes in " + pos(f.records) +
                                                 " records" + (ct_equal(f.digest.data(), mine.data(), mine.size())
                                                                   ? ""
                                                                   : " with another digest") +
                                                 "; delivered " + pos(delivered_) + " bytes in " +
                                                 pos(delivered_records_) + " records"),
            true};
  std::lock_guard<std::mutex> g(mu_);
  peer_fin_ = true;
  return {};
}

StreamLink::Outcome StreamLink::receive_loop(Reconnect& reconnect) {
  const int local = s_.local.get();
  EncryptedChannel::Batch b;
  bool local_gone = false;
  auto last_rx = Clock::now();
  for (;;) {
    std::shared_ptr<EncryptedChannel> ch;
    uint64_t gen;
    bool done;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (phase_ == Phase::kFailed) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      done = done_locked();
      if (done) phase_ = Phase::kDone;
      ch = conn_;
      gen = gen_;
    }
    if (done) {
      wake_sender();
      if (ch) {
        // S may still be writing the last ACK: half-close only after it left.
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::chrono::seconds(2), [&] { return sender_done_; });
        l.unlock();
        ch->close_gracefully(2000, &opener_);
      }
      return {};
    }
    if (!ch) {
      Outcome r = recover(reconnect);
      if (!r.status.ok()) return r;
      last_rx = Clock::now();
      continue;
    }
    auto st = ch->receive(b, have_peer_ ? &opener_ : nullptr, o_.keepalive_ms);
    auto now = Clock::now();
    if (!st.ok()) {
      {
        std::lock_guard<std::mutex> g(mu_);
        // Done meanwhile (the peer closes once it has our last ACK), broken
        // meanwhile, or superseded by a newer connection.
        if (done_locked() || gen != gen_ || !conn_) continue;
      }
      const ErrorCode code = st.error().code;
      if (code == ErrorCode::kTimeout) {
        if (now - last_rx >= std::chrono::milliseconds(o_.silence_ms))
          broken(gen, make_error(ErrorCode::kTimeout, "no record from the peer for " + std::to_string(o_.silence_ms) + " ms"));
      } else if (resumable(code)) {
        broken(gen, st.error());
        continue;
      } else {
        return {st, peer_broke_protocol(code)};
      }
    } else {
      last_rx = now;
      if (b.start) {
        // The server's START on the client's first connection (on every
        // other connection R read it before installing).
        if (auto s = learn_peer_salt(b.start_info.salt); !s) return {s, true};
        std::lock_guard<std::mutex> g(mu_);
        if (auto s = check_peer_start(b.start_info); !s) return {s, true};
        on_ack_locked(b.start_info.position, now);
        continue;
      }
      if (peer_fin_ && (b.count > 0 || b.fin))  // on a connection after the one that brought the FIN
        return {make_error(ErrorCode::kDataAfterFin, std::string(b.fin ? "FIN" : "DATA") + " after the peer's FIN"), true};
      if (b.count > 0) {
        if (auto o = deliver(b, local_gone); !o.status.ok()) return o;
        // What was delivered is what was opened, or something delivered a
        // byte twice or lost one: never acknowledge that.
        if (opener_.position() != delivered_ || opener_.records() != delivered_records_)
          return {make_error(ErrorCode::kIntegrity, "opened " + pos(opener_.position()) + " bytes in " +
                                                       pos(opener_.records()) + " records, delivered " + pos(delivered_) +
                                                       " in " + pos(delivered_records_)),
                  true};
      }
      if (b.ack) {
        std::lock_guard<std::mutex> g(mu_);
        const uint64_t limit = ack_limit_locked();
        auto is_boundary = [&](uint64_t p) { return p == sent_ + 1 || log_.boundary(p); };
        if (b.ack_first < acked_ || b.ack_last > limit || !is_boundary(b.ack_first) || !is_boundary(b.ack_last))
          return {make_error(ErrorCode::kBadAck, "ACK of " + pos(b.ack_first) + ".." + pos(b.ack_last) + " outside [" +
                                                     pos(acked_) + ", " + pos(limit) + "] or inside a record"),
                  true};
        on_ack_locked(b.ack_last, now);
      }
      if (b.fin) {
        if (auto o = on_peer_fin(b.fin_info); !o.status.ok()) return o;
        ::shutdown(local, SHUT_WR);
      }
    }
    // Acknowledge once kAckEvery more bytes are delivered, and the FIN at
    // once (S also sends one every keepalive by itself). R sends it itself
    // when the socket is free and takes it at once, the usual case where
    // little flows the other way; otherwise S does. R never waits on the
    // socket.
    uint64_t position = 0;
    bool due = false, fin = false;
    {
      std::lock_guard<std::mutex> g(mu_);
      fin = peer_fin_;
      position = delivered_ + (fin ? 1 : 0);
      due = !ack_due_ && (position - ack_sent_ >= kAckEvery || (fin && !final_ack_sent_));
      if (due) {
        // Counted before the write, as S does (the peer may close at once).
        ack_sent_ = position;
        if (fin) final_ack_sent_ = true;
      }
    }
    if (!due) continue;
    auto sent = ch->try_send_ack(position);
    if (!sent) {
      broken(gen, sent.error());
      continue;
    }
    if (sent.value() == EncryptedChannel::TrySend::kSent) {
      std::lock_guard<std::mutex> g(mu_);
      last_ack_at_ = Clock::now();
      continue;
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (sent.value() == EncryptedChannel::TrySend::kQueued) {
        flush_due_ = true;  // sealed and partly sent: S writes the rest
      } else {
        ack_due_ = true;  // S holds the socket: it sends the ACK after its write
      }
    }
    wake_sender();
  }
}

StreamLink::Outcome StreamLink::recover(Reconnect& reconnect) {
  Clock::time_point since;
  std::string why;
  {
    std::lock_guard<std::mutex> g(mu_);
    since = outage_since_ == Clock::time_point{} ? Clock::now() : outage_since_;
    why = last_break_.text();
  }
  log_line("stream " + s_.name + ": connection lost (" + why + "); " +
           (reconnect ? "reconnecting" : "waiting for the source to reconnect") + " for up to " +
           std::to_string(o_.outage_budget.count() / 1000) + " s");
  auto budget_left = [&] {
    return o_.outage_budget - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since);
  };
  auto outage = [&] {
    return make_error(ErrorCode::kTimeout,
                      "no connection to the peer for " +
                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - since).count()) +
                          " s (outage budget " + std::to_string(o_.outage_budget.count() / 1000) + " s; last: " + why + ")");
  };
  auto too_many = [&] {
    return make_error(ErrorCode::kLimit, "stream " + s_.name + " resumed " + std::to_string(o_.max_resumes) +
                                             " times: giving up");
  };
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    std::shared_ptr<EncryptedChannel> ch;
    wire::Start peer;
    {
      std::unique_lock<std::mutex> l(mu_);
      if (phase_ == Phase::kFailed) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      if (done_locked()) return {};
      if (counters_.resumes >= uint64_t(o_.max_resumes)) return {too_many(), true};
      if (budget_left().count() <= 0) return {outage(), true};
      if (!reconnect) {
        // The server: wait for the newest offer.
        cv_.wait_for(l, std::max(budget_left(), std::chrono::milliseconds(0)),
                     [&] { return phase_ == Phase::kFailed || done_locked() || offered_; });
        if (!offered_) continue;
        ch = installing_ = std::move(offered_);
        peer = offered_start_;
      }
    }
    if (reconnect) {
      auto r = reconnect();
      if (!r) {
        const ErrorCode c = r.error().code;
        if (c == ErrorCode::kPeerAlert || c == ErrorCode::kKeyConfirmFailed || c == ErrorCode::kCancelled)
          return {r.error(), false};  // the peer refused, or the migration ended: no point retrying
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::min(backoff, std::max(budget_left(), std::chrono::milliseconds(0))),
                     [&] { return phase_ == Phase::kFailed || done_locked(); });
        // At most a quarter second between tries: a refused try costs a SYN, and
        // every second waited after the path heals is a second of migration lost.
        backoff = std::min(backoff * 2, std::chrono::milliseconds(250));
        continue;
      }
      ch = std::shared_ptr<EncryptedChannel>(std::move(r.value()));
      uint64_t mine;
      {
        std::lock_guard<std::mutex> g(mu_);
        if (phase_ == Phase::kFailed) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
        installing_ = ch;
        mine = delivered_ + (peer_fin_ ? 1 : 0);
      }
      // Our START first, then the server's: it says where our DATA goes on.
      EncryptedChannel::Batch b;
      Status st = ch->send_start({mine, my_salt_});
      if (st) st = ch->receive(b, nullptr, o_.silence_ms);
      if (st && !b.start) st = make_error(ErrorCode::kResumeRefused, "the server's first record is not START");
      if (!st) {
        {
          std::lock_guard<std::mutex> g(mu_);
          installing_.reset();
          // The server completed the stream: it had all of ours, our FIN
          // included, and we have all of its; only an acknowledgement was lost
          // with the connection. Its word is authenticated (an ERROR under
          // this connection's key), and what we hold agrees: done, not failed.
          if (st.error().code == ErrorCode::kPeerError &&
              st.error().detail.find("has completed") != std::string::npos && local_eof_ && fin_written_ &&
              peer_fin_ && acked_ >= sent_) {
            acked_ = sent_ + 1;
            final_ack_sent_ = true;
            log_line("stream " + s_.name + ": the peer completed the stream while only an acknowledgement was lost");
            return {};
          }
        }
        if (resumable(st.error().code)) continue;
        // The server refused the resume (ERROR 24: the stream or the
        // migration is gone there), or broke the protocol: no retry.
        return {st, peer_broke_protocol(st.error().code)};
      }
      if (auto s = learn_peer_salt(b.start_info.salt); !s) return {s, true};
      {
        std::lock_guard<std::mutex> g(mu_);
        if (auto s = check_peer_start(b.start_info); !s) return {s, true};
      }
      if (auto s = install(ch, b.start_info.position); !s) return {s, false};
      return {};
    }
    // The server: check the client's START, answer with ours, install.
    Status st = learn_peer_salt(peer.salt);
    uint64_t mine = 0;
    if (st) {
      std::lock_guard<std::mutex> g(mu_);
      st = check_peer_start(peer);
      mine = delivered_ + (peer_fin_ ? 1 : 0);
    }
    if (!st) {
      {
        std::lock_guard<std::mutex> g(mu_);
        installing_.reset();
        counters_.refused_resumes++;
      }
      // Only a peer that holds the key can send a START, and no honest one
      // sends this one: the migration fails, as for any other violation.
      if (ch->send_error(ErrorCode::kResumeRefused, s_.name + ": " + st.error().message())) ch->linger(200);
      return {Error{st.error().code, "resume refused: " + st.error().message()}, false};
    }
    if (!ch->send_start({mine, my_salt_})) {
      std::lock_guard<std::mutex> g(mu_);
      installing_.reset();  // gone already (or replaced by a newer offer): wait for the next
      continue;
    }
    if (auto s = install(ch, peer.position); !s) return {s, false};
    return {};
  }
}

// R only: the connection becomes the stream's. Nothing R counts can have
// changed since it announced its position: R is the only one that delivers,
// and it is here, not delivering.
Status StreamLink::install(std::shared_ptr<EncryptedChannel> ch, uint64_t peer_position) {
  uint64_t resend;
  double outage_s;
  {
    std::lock_guard<std::mutex> g(mu_);
    installing_.reset();
    if (phase_ == Phase::kFailed) return make_error(ErrorCode::kCancelled, "stream aborted");
    if (have_peer_ && (opener_.position() != delivered_ || opener_.records() != delivered_records_))
      return make_error(ErrorCode::kIntegrity, "opened " + pos(opener_.position()) + " bytes but delivered " +
                                                   pos(delivered_));
    on_ack_locked(peer_position, Clock::now());  // START(p) acknowledges p
    const uint64_t from = std::min(peer_position, sent_);
    resend = sent_ - from;
    outage_s = std::chrono::duration<double>(Clock::now() - outage_since_).count();
    conn_ = std::move(ch);
    gen_++;
    resend_from_ = from;
    phase_ = Phase::kRelaying;
    s_.state = StreamState::kRelaying;
    outage_since_ = {};
    counters_.resumes++;
    counters_.resent_bytes += resend;
  }
  wake_sender();
  log_line("stream " + s_.name + ": resumed after " + std::to_string(int(outage_s * 1000)) + " ms, resending " +
           std::to_string(resend) + " bytes");
  return {};
}

void StreamLink::offer(std::unique_ptr<EncryptedChannel> ch_in, const wire::Start& start) {
  std::shared_ptr<EncryptedChannel> ch(std::move(ch_in)), older;
  std::string refused;
  bool woke = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (ended_ || phase_ == Phase::kDone || phase_ == Phase::kFailed) {
      refused = "stream " + s_.name + (phase_ == Phase::kFailed ? " has failed" : " has completed") +
                (failure_.empty() ? "" : " (" + failure_ + ")");
    } else {
      // The newest wins: the client gave up on whatever came before, and on
      // the connection we may still believe in.
      older = std::move(offered_);
      if (installing_) installing_->shutdown();
      woke = broken_locked(gen_, make_error(ErrorCode::kIo, "the source resumed on a new connection"));
      offered_ = ch;
      offered_start_ = start;
      cv_.notify_all();
    }
  }
  if (woke) wake_sender();
  if (older) older->shutdown();
  if (!refused.empty()) {
    log_line(refused + ": resume refused");
    if (ch->send_error(ErrorCode::kResumeRefused, refused)) ch->linger(200);
  }
}

}  // namespace encmig
