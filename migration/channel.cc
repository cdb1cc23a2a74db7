#include "migration/channel.h"

#include <netinet/in.h>
#include <linux/tcp.h>  // tcpi_min_rtt (glibc's tcp_info stops before it)
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace encmig {

namespace {
constexpr size_t kMaxRecord = wire::kMaxRecordPayload + wire::kRecordOverhead;
}

Result<std::unique_ptr<EncryptedChannel>> EncryptedChannel::create(Fd&& sock, SessionKeys keys, std::string name) {
  auto tx = ControlSealer::create(std::move(keys.tx));
  if (!tx) return tx.error();
  auto rx = RecordReader::create(std::move(keys.rx));
  if (!rx) return rx.error();
  std::unique_ptr<EncryptedChannel> c(new EncryptedChannel());
  c->fd_ = std::move(sock);
  c->name_ = std::move(name);
  c->kind_ = keys.client_hello.kind;
  c->index_ = keys.client_hello.stream_index;
  c->flags_ = keys.client_hello.flags;
  c->tx_ = std::move(tx.value());
  c->rx_ = std::move(rx.value());
  return c;
}

void EncryptedChannel::shutdown() const { ::shutdown(fd_.get(), SHUT_RDWR); }

Status EncryptedChannel::send_records(const uint8_t* p, size_t n) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  if (auto st = send_control(nullptr, 0); !st) return st;
  return write_all(fd_.get(), p, n);
}

// tx_mu_ held: what try_send_ack() queued goes first, then `rec`.
Status EncryptedChannel::send_control(const uint8_t* rec, size_t n) {
  if (!queued_.empty()) {
    if (auto st = write_all(fd_.get(), queued_.data(), queued_.size()); !st) return st;
    queued_.clear();
  }
  return n ? write_all(fd_.get(), rec, n) : Status{};
}

Status EncryptedChannel::flush() {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  return send_control(nullptr, 0);
}

Result<EncryptedChannel::TrySend> EncryptedChannel::try_send_ack(uint64_t position) {
  std::unique_lock<std::timed_mutex> l(tx_mu_, std::try_to_lock);
  if (!l.owns_lock() || !queued_.empty()) return TrySend::kBusy;
  position = ack_floor_ = std::max(ack_floor_, position);
  uint8_t rec[wire::kAckRecordSize];
  if (auto st = tx_.seal_ack(position, rec); !st) return st.error();
  ssize_t n = ::send(fd_.get(), rec, sizeof rec, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == ssize_t(sizeof rec)) return TrySend::kSent;
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    return make_error(ErrorCode::kIo, "write: " + errno_text(errno));
  // Sealed, so it must go out, after what already went: the next sender's job.
  queued_.assign(rec + std::max<ssize_t>(n, 0), rec + sizeof rec);
  return TrySend::kQueued;
}

Status EncryptedChannel::send_start(const wire::Start& s) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  ack_floor_ = s.position;
  uint8_t rec[wire::kStartRecordSize];
  if (auto st = tx_.seal_start(s, rec); !st) return st;
  return send_control(rec, sizeof rec);
}

Status EncryptedChannel::send_ack(uint64_t position) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  // Two threads acknowledge (the receiving one, and the sending one for the
  // keepalive); each read its position before it got the socket. Positions
  // never go down on the wire: the later write says at least as much.
  position = ack_floor_ = std::max(ack_floor_, position);
  uint8_t rec[wire::kAckRecordSize];
  if (auto st = tx_.seal_ack(position, rec); !st) return st;
  return send_control(rec, sizeof rec);
}

Status EncryptedChannel::send_fin(const wire::Fin& f) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  uint8_t rec[wire::kFinRecordSize];
  if (auto st = tx_.seal_fin(f, rec); !st) return st;
  return send_control(rec, sizeof rec);
}

uint32_t EncryptedChannel::min_rtt_us() const {
  struct tcp_info ti {};
  socklen_t len = sizeof ti;
  if (getsockopt(fd_.get(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return 0;
  if (len >= offsetof(struct tcp_info, tcpi_min_rtt) + sizeof ti.tcpi_min_rtt && ti.tcpi_min_rtt != 0 &&
      ti.tcpi_min_rtt != ~0u)
    return ti.tcpi_min_rtt;
  return ti.tcpi_rtt;
}

bool EncryptedChannel::send_error(ErrorCode code, const std::string& text) {
  std::unique_lock<std::timed_mutex> l(tx_mu_, std::chrono::milliseconds(200));
  if (!l.owns_lock() || tx_.finished()) return false;
  uint8_t rec[wire::kMaxErrorRecordSize];
  size_t n = 0;
  // Local codes (64 and up) never go on the wire: they travel as "failure on
  // the sender's side", with their name in the text.
  std::string why = uint16_t(code) > kMaxWireErrorCode ? std::string(error_code_name(code)) + ": " + text : text;
  if (uint16_t(code) > kMaxWireErrorCode) code = ErrorCode::kLocalFailure;
  if (!queued_.empty()) {  // a record's tail goes first, or nothing can follow it
    if (::send(fd_.get(), queued_.data(), queued_.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != ssize_t(queued_.size()))
      return false;
    queued_.clear();
  }
  if (!tx_.seal_error(code, why, rec, &n).ok()) return false;
  bool sent = ::send(fd_.get(), rec, n, MSG_DONTWAIT | MSG_NOSIGNAL) == ssize_t(n);
  ::shutdown(fd_.get(), SHUT_WR);
  return sent;
}

void EncryptedChannel::linger(int ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  static thread_local uint8_t junk[64 * 1024];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, int(left)) <= 0) return;
    if (::recv(fd_.get(), junk, sizeof junk, MSG_DONTWAIT) <= 0) return;  // the peer closed (or failed)
  }
}

Status EncryptedChannel::receive(Batch& b, DataOpener* data, int timeout_ms) {
  b.count = 0;
  b.bytes = 0;
  b.ack = false;
  b.start = false;
  b.fin = false;
  if (!rbuf_.valid()) {
    // Two huge pages: room for whole records after any partial one moved to
    // the front, which happens about once every three maximal records.
    rbuf_ = LockedRegion::allocate(4 * wire::kMaxRecordPayload);
    if (!rbuf_.valid()) return make_error(ErrorCode::kIo, "no memory for a receive buffer");
  }
  // The previous batch is consumed. Move a partial record to the front only
  // when the space after it cannot take a whole record; usually nothing moves.
  if (rstart_ == rend_) {
    rstart_ = rend_ = 0;
  } else if (rbuf_.size() - rend_ < kMaxRecord) {
    std::memmove(rbuf_.data(), rbuf_.data() + rstart_, rend_ - rstart_);
    rend_ -= rstart_;
    rstart_ = 0;
  }
  for (;;) {
    while (b.count < kMaxBatch) {
      auto st = rx_.open(rbuf_.data() + rstart_, rend_ - rstart_, data);
      if (!st) return st.error();
      if (st->consumed == 0) break;
      rstart_ += st->consumed;
      switch (st->type) {
        case wire::RecordType::kData:
          b.data[b.count++] = Data{st->payload, st->length, st->tag, st->position, st->number};
          b.bytes += st->length;
          continue;
        case wire::RecordType::kAck:
          // Positions never go down, not even within one batch.
          if (b.ack && st->position < b.ack_last)
            return make_error(ErrorCode::kBadAck, "ACK of " + std::to_string(st->position) + " after ACK of " +
                                                      std::to_string(b.ack_last));
          if (!b.ack) b.ack_first = st->position;
          b.ack = true;
          b.ack_last = st->position;
          continue;
        case wire::RecordType::kStart:
          b.start = true;
          b.start_info = st->start;
          return {};
        case wire::RecordType::kFin:
          b.fin = true;
          b.fin_info = st->fin;
          return {};
        case wire::RecordType::kError:
          return make_error(ErrorCode::kInternal, "ERROR record returned as a step");  // the reader fails on it
      }
    }
    if (b.count > 0 || b.ack) return {};
    if (timeout_ms >= 0) {
      pollfd p{fd_.get(), POLLIN, 0};
      int pr = ::poll(&p, 1, timeout_ms);
      if (pr == 0) return make_error(ErrorCode::kTimeout, "nothing from the peer for " + std::to_string(timeout_ms) + " ms");
      if (pr < 0 && errno != EINTR) return make_error(ErrorCode::kIo, "poll: " + errno_text(errno));
      if (pr < 0) continue;
    }
    ssize_t r = ::read(fd_.get(), rbuf_.data() + rend_, rbuf_.size() - rend_);
    if (r > 0) {
      rend_ += size_t(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0)
      return make_error(ErrorCode::kTruncated, "peer closed after " + std::to_string(rx_.records()) +
                                                   " control records");
    return make_error(ErrorCode::kIo, "peer read: " + errno_text(errno));
  }
}

void EncryptedChannel::close_gracefully(int ms, DataOpener* data) {
  ::shutdown(fd_.get(), SHUT_WR);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  Batch b;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    // ACKs may still come; anything else, or EOF, ends it.
    if (!receive(b, data, int(left)).ok() || b.count > 0 || b.fin || b.start) return;
  }
}

}  // namespace encmig
