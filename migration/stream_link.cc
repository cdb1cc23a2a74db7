#include "migration/stream_link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <thread>

#include "migration/log.h"

namespace encmig {

namespace {

// Acknowledge at least every this many delivered bytes.
constexpr uint64_t kAckEvery = 256 << 10;
// Before the first rate estimate, the window starts here.
constexpr size_t kInitialWindow = 16 << 20;

bool peer_broke_protocol(ErrorCode c) {
  switch (c) {
    case ErrorCode::kRecordTooLarge: case ErrorCode::kBadRecordType: case ErrorCode::kCounterMismatch:
    case ErrorCode::kAuthFailed: case ErrorCode::kDataAfterFin: case ErrorCode::kBadFin: case ErrorCode::kRecordLimit:
    case ErrorCode::kResumeRefused: case ErrorCode::kBadAck:
      return true;
    default:
      return false;
  }
}

// A connection that broke, as networks break connections (reset, closed
// without a FIN, silence): version 2 resumes the stream. Anything that could
// be an attack on the records themselves fails it.
bool resumable(ErrorCode c) { return c == ErrorCode::kTruncated || c == ErrorCode::kIo || c == ErrorCode::kTimeout; }

}  // namespace

// ---- ResendBuffer ----

uint8_t* ResendBuffer::reserve(size_t max, size_t* len) {
  if (chunks_.empty() || tail_fill_ == kChunk) {
    if (spares_.empty()) {
      chunks_.emplace_back(new uint8_t[kChunk]);
    } else {
      chunks_.push_back(std::move(spares_.back()));
      spares_.pop_back();
    }
    tail_fill_ = 0;
    if (chunks_.size() == 1) head_off_ = 0;
  }
  *len = std::min(max, kChunk - tail_fill_);
  return chunks_.back().get() + tail_fill_;
}

void ResendBuffer::commit(size_t n) {
  tail_fill_ += n;
  end_ += n;
}

void ResendBuffer::release_to(uint64_t position) {
  position = std::min(position, end_);
  while (begin_ < position) {
    const size_t head_end = chunks_.size() == 1 ? tail_fill_ : kChunk;
    const size_t drop = size_t(std::min<uint64_t>(head_end - head_off_, position - begin_));
    begin_ += drop;
    head_off_ += drop;
    if (head_off_ < head_end) break;
    if (chunks_.size() > 1) {
      if (spares_.size() < kSpares) spares_.push_back(std::move(chunks_.front()));
      chunks_.pop_front();
      head_off_ = 0;
    } else if (tail_fill_ == kChunk) {  // the last chunk, full and all released
      if (spares_.size() < kSpares) spares_.push_back(std::move(chunks_.front()));
      chunks_.clear();
      tail_fill_ = head_off_ = 0;
    } else {
      break;  // the last chunk keeps its room; head_off_ == tail_fill_
    }
  }
}

template <class Fn>
void ResendBuffer::for_each_from(uint64_t from, Fn fn) const {
  if (from < begin_) from = begin_;
  uint64_t pos = begin_;
  for (size_t i = 0; i < chunks_.size() && pos < end_; i++) {
    size_t start = i == 0 ? head_off_ : 0;
    size_t stop = i + 1 == chunks_.size() ? tail_fill_ : kChunk;
    uint64_t piece_end = pos + (stop - start);
    if (piece_end > from) {
      size_t skip = from > pos ? size_t(from - pos) : 0;
      fn(chunks_[i].get() + start + skip, stop - start - skip);
    }
    pos = piece_end;
  }
}

// ---- StreamLink ----

StreamLink::StreamLink(Stream& stream, MigrationRole role, LinkOptions options)
    : s_(stream), role_(role), o_(options), wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

StreamLink::~StreamLink() = default;

StreamLink::Counters StreamLink::counters() const {
  std::lock_guard<std::mutex> g(mu_);
  Counters c = counters_;
  c.window = v2() ? window_locked() : 0;
  c.unacked = sent_ - std::min(acked_, sent_);
  c.reconnecting = !ch_ && !failed_ && gen_ > 0;
  return c;
}

void StreamLink::abort() {
  {
    std::lock_guard<std::mutex> g(mu_);
    failed_ = true;
    if (ch_) ::shutdown(ch_->fd(), SHUT_RDWR);
    cv_.notify_all();
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

bool StreamLink::settle_at_end() {
  std::lock_guard<std::mutex> g(mu_);
  // Both FINs are through, all our DATA acknowledged; only the ACK of our
  // FIN (or our ACK of the peer's) was lost with a connection. The
  // controller has ended the migration (both QEMUs are done): nothing is left
  // to deliver, and the peer may have closed for good.
  if (ch_ || failed_ || ended_ || !fin_sent_ || !peer_fin_ || acked_ < sent_) return false;
  acked_ = sent_ + 1;
  final_ack_sent_ = true;
  cv_.notify_all();
  return true;
}

void StreamLink::broken(uint64_t gen) {
  std::lock_guard<std::mutex> g(mu_);
  if (gen != gen_ || !ch_) return;
  ::shutdown(ch_->fd(), SHUT_RDWR);  // unblocks a write stuck on it; the fd stays open (Stream::peer_fd)
  ch_.reset();
  if (outage_since_ == Clock::time_point{}) outage_since_ = Clock::now();
  s_.state = StreamState::kReconnecting;
  cv_.notify_all();
}

size_t StreamLink::window_locked() const {
  if (!v2()) return SIZE_MAX;
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
  if (ch_ && now - rtt_at_ > std::chrono::milliseconds(100)) {
    rtt_us_ = ch_->min_rtt_us();
    rtt_at_ = now;
  }
  cv_.notify_all();
}

Status StreamLink::run(std::unique_ptr<EncryptedChannel> first, Reconnect reconnect) {
  version_ = first->version();
  {
    std::lock_guard<std::mutex> g(mu_);
    ch_ = std::shared_ptr<EncryptedChannel>(std::move(first));
    gen_ = 1;
    s_.peer_fd = ch_->fd();
  }
  if (!v2()) v1buf_.resize(EncryptedChannel::kHeadroom + wire::kMaxRecordPayload + EncryptedChannel::kTailroom);
  int local = s_.local.get();
  int size = kLocalSocketBuffer;
  setsockopt(local, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(local, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  s_.state = StreamState::kRelaying;

  // Whichever direction fails first names the cause and, when the cause is
  // ours or a protocol violation, tells the peer in an ERROR record, so its
  // log names the cause, not a truncation.
  std::atomic<int> first_fail{0};
  auto failed = [&](int who, const Outcome& o) {
    int none = 0;
    if (first_fail.compare_exchange_strong(none, who) && o.tell_peer) {
      std::shared_ptr<EncryptedChannel> ch;
      {
        std::lock_guard<std::mutex> g(mu_);
        ch = ch_;
      }
      if (ch && ch->send_error(o.status.error().code, ch->name() + ": " + o.status.error().text())) ch->linger(200);
    }
    abort();
    ::shutdown(s_.local.get(), SHUT_RDWR);
  };
  Outcome out;
  std::thread t([&] {
    out = pump_local_to_peer();
    if (!out.status.ok()) failed(2, out);
  });
  Outcome in = receive_loop(reconnect);
  if (!in.status.ok()) failed(1, in);
  t.join();
  {
    std::lock_guard<std::mutex> g(mu_);
    ended_ = true;
  }
  const std::string name = s_.name;
  if (!in.status.ok() && in.status.error().code == ErrorCode::kPeerError)
    return Error{ErrorCode::kPeerError, name + "-in: " + in.status.error().message()};
  if (first_fail == 1) return Error{in.status.error().code, name + "-in: " + in.status.error().message()};
  if (first_fail == 2) return Error{out.status.error().code, name + "-out: " + out.status.error().message()};
  return {};
}

// What the peer is missing after a resume goes first, from this thread (the
// only one that sends DATA and FIN), so new data never overtakes it and the
// receiving side keeps reading meanwhile.
void StreamLink::resend_if_pending() {
  std::lock_guard<std::mutex> sg(send_mu_);
  resend_if_pending_locked();
}

void StreamLink::resend_if_pending_locked() {
  std::shared_ptr<EncryptedChannel> ch;
  uint64_t from, gen;
  bool fin;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!resend_pending_ || !ch_) return;
    resend_pending_ = false;
    ch = ch_;
    gen = gen_;
    from = resend_from_;
    fin = fin_sent_ && resend_fin_;
  }
  buf_.release_to(from);
  ch->rebase_sender(from);
  Status st;
  buf_.for_each_from(from, [&](const uint8_t* piece, size_t len) {
    for (size_t off = 0; off < len && st.ok(); off += wire::kMaxRecordPayload)
      st = ch->send_data_from(piece + off, uint32_t(std::min<size_t>(wire::kMaxRecordPayload, len - off)));
  });
  if (st.ok() && fin) st = ch->send_fin();
  if (!st) broken(gen);
}

StreamLink::Outcome StreamLink::pump_local_to_peer() {
  const int local = s_.local.get();
  for (;;) {
    size_t cap = wire::kMaxRecordPayload;
    uint8_t* p = nullptr;
    if (v2()) {
      resend_if_pending();
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return failed_ || resend_pending_ || sent_ - std::min(acked_, sent_) < window_locked(); });
        if (failed_) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
        if (resend_pending_) continue;
      }
      // Wait for QEMU, or for a resume that needs a resend.
      pollfd pf[2] = {{local, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      if (::poll(pf, 2, -1) < 0 && errno != EINTR) return {make_error(ErrorCode::kIo, "poll: " + errno_text(errno)), true};
      if (pf[1].revents & POLLIN) {
        uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      }
      if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      std::lock_guard<std::mutex> g(send_mu_);
      uint64_t acked;
      {
        std::lock_guard<std::mutex> l(mu_);
        acked = std::min(acked_, sent_);
      }
      buf_.release_to(acked);
      p = buf_.reserve(wire::kMaxRecordPayload, &cap);
    } else {
      p = v1buf_.data() + EncryptedChannel::kHeadroom;
    }
    ssize_t n = ::read(local, p, cap);
    if (n > 0) {
      std::lock_guard<std::mutex> g(send_mu_);
      if (v2()) resend_if_pending_locked();  // a resume since the wait: its resend goes first
      std::shared_ptr<EncryptedChannel> ch;
      uint64_t gen;
      {
        std::lock_guard<std::mutex> l(mu_);
        sent_ += uint64_t(n);
        ch = ch_;
        gen = gen_;
      }
      s_.bytes_out.fetch_add(uint64_t(n), std::memory_order_relaxed);
      s_.records_out.fetch_add(1, std::memory_order_relaxed);
      if (!v2()) {
        if (!ch) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
        if (auto st = ch->send_data(v1buf_.data(), uint32_t(n)); !st)
          return {Error{st.error().code, "to peer: " + st.error().message()}, false};
        continue;
      }
      buf_.commit(size_t(n));
      // While reconnecting the bytes wait in the resend buffer; the window
      // stops further reads once it is full.
      if (ch && !ch->send_data_from(p, uint32_t(n)).ok()) broken(gen);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != ECONNRESET) return {make_error(ErrorCode::kIo, "local read: " + errno_text(errno)), true};
    // EOF, or a reset because QEMU closed with our data unread: QEMU is done
    // with this stream, and the peer learns it from an authenticated FIN.
    // Except on the destination, when QEMU exited (killed, crashed): that is
    // no end of stream, and the source must not take it for one. (On the
    // source, libvirt may hold the socket and close it as it kills QEMU after
    // a completed migration; there the destination QEMU is the judge.)
    if (role_ == MigrationRole::kDestination && s_.qemu.exited_within(20))
      return {make_error(ErrorCode::kIo, "QEMU (pid " + std::to_string(s_.qemu.pid()) + ") exited with the stream open, after " +
                                             std::to_string(s_.bytes_out.load()) + " bytes"),
              true};
    {
      std::lock_guard<std::mutex> g(send_mu_);
      if (v2()) resend_if_pending_locked();
      std::shared_ptr<EncryptedChannel> ch;
      uint64_t gen;
      {
        std::lock_guard<std::mutex> l(mu_);
        fin_sent_ = true;
        ch = ch_;
        gen = gen_;
      }
      if (ch) {
        auto st = ch->send_fin();
        if (!st && !v2()) return {st, false};
        if (!st) broken(gen);
      }
    }
    if (!v2()) return {Status{}, false};
    // The stream is done when the peer has everything, our FIN included, and
    // we have its FIN: the receiving side decides that. Until then, resends.
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return failed_ || done_locked() || resend_pending_; });
        if (done_locked()) return {};
        if (failed_) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      }
      resend_if_pending();
    }
  }
}

StreamLink::Outcome StreamLink::receive_loop(Reconnect& reconnect) {
  const int local = s_.local.get();
  EncryptedChannel::Batch b;
  bool local_gone = false;
  Error last = make_error(ErrorCode::kIo, "connection broke");
  auto last_rx = Clock::now(), last_ack = Clock::now();
  for (;;) {
    std::shared_ptr<EncryptedChannel> ch;
    uint64_t gen;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (failed_) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      ch = ch_;
      gen = gen_;
      if (done_locked()) {
        if (ch) ch->close_gracefully(2000);
        return {};
      }
    }
    if (!ch) {
      {
        std::lock_guard<std::mutex> g(mu_);
        receiver_idle_ = true;  // delivered_ and peer_fin_ are final until a resume
        cv_.notify_all();
      }
      Outcome r = recover(reconnect, gen, last);
      {
        std::lock_guard<std::mutex> g(mu_);
        receiver_idle_ = false;
      }
      if (!r.status.ok()) return r;
      last_rx = last_ack = Clock::now();
      continue;
    }
    auto st = ch->receive(b, v2() ? o_.keepalive_ms : -1);
    auto now = Clock::now();
    if (!st.ok()) {
      {
        std::lock_guard<std::mutex> g(mu_);
        if (gen != gen_) continue;  // superseded by a resumed connection
      }
      const ErrorCode code = st.error().code;
      if (v2() && code == ErrorCode::kTimeout) {
        if (now - last_rx >= std::chrono::milliseconds(o_.silence_ms)) {
          last = make_error(ErrorCode::kTimeout, "no record from the peer for " + std::to_string(o_.silence_ms) + " ms");
          broken(gen);
          continue;
        }
      } else if (v2() && resumable(code)) {
        last = st.error();
        broken(gen);
        continue;
      } else {
        return {st, peer_broke_protocol(code)};
      }
    } else {
      last_rx = now;
      if (b.resume) return {make_error(ErrorCode::kResumeRefused, "RESUME record in the middle of a connection"), true};
      if (b.count > 0 && !local_gone) {
        if (auto w = writev_all(local, b.iov, b.count); !w) {
          // The destination QEMU must take every byte: if it stopped (it
          // failed, or it died), the migration cannot succeed, and the source
          // must know now.
          if (role_ == MigrationRole::kDestination)
            return {make_error(ErrorCode::kIo, "destination QEMU stopped taking data (" + w.error().detail + "), " +
                                                   std::to_string(b.bytes) + " bytes undelivered"),
                    true};
          // The source QEMU may close its end first (after completion): keep
          // authenticating the peer's records to its FIN, and drop the data.
          local_gone = true;
        }
      }
      s_.bytes_in.fetch_add(b.bytes, std::memory_order_relaxed);
      s_.records_in.fetch_add(uint64_t(b.count), std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> g(mu_);
        delivered_ += b.bytes;
        if (b.ack) {
          const uint64_t limit = sent_ + (fin_sent_ ? 1 : 0);
          if (b.ack_position > limit || b.ack_position < acked_)
            return {make_error(ErrorCode::kBadAck, "ACK of " + std::to_string(b.ack_position) + " outside [" +
                                                       std::to_string(acked_) + ", " + std::to_string(limit) + "]"),
                    true};
          on_ack_locked(b.ack_position, now);
        }
        if (b.fin) peer_fin_ = true;
      }
      if (b.fin) {
        ::shutdown(local, SHUT_WR);
        if (!v2()) return {ch->expect_eof(), false};
      }
    }
    if (!v2()) continue;
    // Acknowledge: every kAckEvery bytes, the FIN at once, and at least every
    // keepalive interval (the peer detects silence by it).
    uint64_t pos;
    bool fin;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (done_locked()) continue;  // nothing more to say: the top of the loop closes
      fin = peer_fin_;
      pos = delivered_ + (fin ? 1 : 0);
      if (pos - ack_sent_ < kAckEvery && !(fin && !final_ack_sent_) &&
          now - last_ack < std::chrono::milliseconds(o_.keepalive_ms))
        continue;
    }
    if (!ch->send_position(wire::RecordType::kAck, pos).ok()) {
      broken(gen);
      continue;
    }
    last_ack = now;
    std::lock_guard<std::mutex> g(mu_);
    ack_sent_ = pos;
    if (fin) final_ack_sent_ = true;
    cv_.notify_all();
  }
}

StreamLink::Outcome StreamLink::recover(Reconnect& reconnect, uint64_t broken_gen, const Error& why) {
  Clock::time_point since;
  {
    std::lock_guard<std::mutex> g(mu_);
    since = outage_since_ == Clock::time_point{} ? Clock::now() : outage_since_;
  }
  log_line("stream " + s_.name + ": connection lost (" + why.text() + "); " +
           (reconnect ? "reconnecting" : "waiting for the source to reconnect") + " for up to " +
           std::to_string(o_.outage_budget.count() / 1000) + " s");
  auto budget_left = [&] { return o_.outage_budget - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since); };
  auto outage = [&] {
    return make_error(ErrorCode::kTimeout, "no connection to the peer for " +
                                               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - since).count()) +
                                               " s (outage budget " + std::to_string(o_.outage_budget.count() / 1000) +
                                               " s; last: " + why.text() + ")");
  };
  if (!reconnect) {  // the server: the client reconnects, resume() installs
    std::unique_lock<std::mutex> l(mu_);
    bool ok = cv_.wait_for(l, budget_left(), [&] { return failed_ || done_locked() || (ch_ && gen_ != broken_gen); });
    if (failed_) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
    if (done_locked()) return {};
    if (!ok) return {outage(), true};
    return {};
  }
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (failed_) return {make_error(ErrorCode::kCancelled, "stream aborted"), false};
      if (done_locked()) return {};
      if (counters_.resumes >= uint64_t(o_.max_resumes))
        return {make_error(ErrorCode::kLimit, "stream " + s_.name + " resumed " + std::to_string(o_.max_resumes) +
                                                  " times: giving up"),
                true};
    }
    if (budget_left().count() <= 0) return {outage(), true};
    auto r = reconnect();
    if (r) {
      auto st = install(std::move(r.value()));
      if (st) return {};
      if (!resumable(st.error().code)) return {st, false};
    } else if (r.error().code == ErrorCode::kPeerAlert || r.error().code == ErrorCode::kKeyConfirmFailed ||
               r.error().code == ErrorCode::kCancelled) {
      return {r.error(), false};  // the peer refused, or the migration ended: no point retrying
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::min(backoff, std::max(budget_left(), std::chrono::milliseconds(0))),
                 [&] { return failed_ || done_locked(); });
    // At most a quarter second between tries: a refused try costs a SYN, and
    // every second waited after the path heals is a second of migration lost.
    backoff = std::min(backoff * 2, std::chrono::milliseconds(250));
  }
}

Status StreamLink::resume(std::unique_ptr<EncryptedChannel> ch) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (ended_ || done_locked())
      return make_error(ErrorCode::kResumeRefused, "stream " + s_.name + " has completed");
    if (failed_ || gen_ == 0 || !v2())
      return make_error(ErrorCode::kResumeRefused, "stream " + s_.name + " cannot be resumed");
  }
  broken(gen_);  // whatever connection we still believed in is superseded
  {
    // What we tell the peer we have delivered must be final: wait for the
    // receiving thread to finish with the old connection.
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, std::chrono::milliseconds(o_.silence_ms), [&] { return failed_ || receiver_idle_; }))
      return make_error(ErrorCode::kResumeRefused, "stream " + s_.name + " is busy with its old connection");
    if (failed_) return make_error(ErrorCode::kResumeRefused, "stream " + s_.name + " has failed");
  }
  return install(std::move(ch));
}

// Both sides send RESUME(what they have delivered of the peer's DATA, plus
// one for its FIN), then read the peer's: the peer's position is where our
// DATA continues on the new connection.
Status StreamLink::install(std::unique_ptr<EncryptedChannel> ch) {
  uint64_t mine;
  {
    std::lock_guard<std::mutex> g(mu_);
    mine = delivered_ + (peer_fin_ ? 1 : 0);
    ch->rebase_receiver(delivered_);
  }
  if (auto st = ch->send_position(wire::RecordType::kResume, mine); !st) return st;
  EncryptedChannel::Batch b;
  auto got = ch->receive(b, o_.silence_ms);
  if (!got) return got;
  if (!b.resume || b.count > 0 || b.fin) {
    ch->send_error(ErrorCode::kResumeRefused, "a resumed connection must start with RESUME");
    return make_error(ErrorCode::kResumeRefused, "the peer's first record on a resumed connection is not RESUME");
  }
  const uint64_t p = b.resume_position;
  std::unique_lock<std::mutex> l(mu_);
  const uint64_t limit = sent_ + (fin_sent_ ? 1 : 0);
  if (p < acked_ || p > limit) {
    l.unlock();
    const std::string why = "resume position " + std::to_string(p) + " outside [" + std::to_string(acked_) + ", " +
                            std::to_string(limit) + "]";
    ch->send_error(ErrorCode::kResumeRefused, why);
    return make_error(ErrorCode::kResumeRefused, why);
  }
  on_ack_locked(p, Clock::now());
  const uint64_t from = std::min(p, sent_);
  const uint64_t resend = sent_ - from;
  double outage_s = std::chrono::duration<double>(Clock::now() - outage_since_).count();
  if (failed_) return make_error(ErrorCode::kCancelled, "stream aborted");
  ch_ = std::shared_ptr<EncryptedChannel>(std::move(ch));
  gen_++;
  s_.peer_fd = ch_->fd();
  s_.state = StreamState::kRelaying;
  outage_since_ = {};
  // The sending thread resends [from, sent) (and the FIN, if the peer lacks
  // it) before anything new.
  resend_pending_ = true;
  resend_from_ = from;
  resend_fin_ = p <= sent_;
  counters_.resumes++;
  counters_.resent_bytes += resend;
  cv_.notify_all();
  l.unlock();
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  log_line("stream " + s_.name + ": resumed after " + std::to_string(int(outage_s * 1000)) + " ms, resending " +
           std::to_string(resend) + " bytes");
  return {};
}

}  // namespace encmig
