#include "migration/channel.h"

#include <netinet/in.h>
#include <linux/tcp.h>  // tcpi_min_rtt (glibc's tcp_info stops before it)
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstring>

namespace encmig {

Result<std::unique_ptr<EncryptedChannel>> EncryptedChannel::create(Fd&& sock, SessionKeys keys, std::string name,
                                                                   uint64_t recv_base) {
  const uint16_t version = keys.client_hello.version;
  auto tx = RecordSealer::create(std::move(keys.tx), version);
  if (!tx) return tx.error();
  auto rx = RecordOpener::create(std::move(keys.rx), version, recv_base);
  if (!rx) return rx.error();
  std::unique_ptr<EncryptedChannel> c(new EncryptedChannel());
  c->fd_ = std::move(sock);
  c->name_ = std::move(name);
  c->version_ = version;
  c->flags_ = keys.client_hello.flags;
  c->tx_ = std::move(tx.value());
  c->rx_ = std::move(rx.value());
  c->rbuf_.resize(2 * (wire::kMaxRecordPayload + wire::kRecordOverhead));
  if (version >= wire::kVersion2) c->txbuf_.resize(wire::kMaxRecordPayload + wire::kRecordOverhead);
  return c;
}

Status EncryptedChannel::send_data_from(const uint8_t* src, uint32_t n) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  if (auto st = tx_.seal_data_from(src, n, txbuf_.data()); !st) return st;
  return write_all(fd_.get(), txbuf_.data(), n + wire::kRecordOverhead);
}

Status EncryptedChannel::send_position(wire::RecordType type, uint64_t position) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  uint8_t rec[wire::kAckRecordSize];
  if (auto st = tx_.seal_position(type, position, rec); !st) return st;
  return write_all(fd_.get(), rec, sizeof rec);
}

void EncryptedChannel::rebase_sender(uint64_t base) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  tx_.rebase(base);
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

Status EncryptedChannel::send_data(uint8_t* rec, uint32_t n) {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  if (auto st = tx_.seal_data(rec + kHeadroom, n, rec, rec + kHeadroom + n); !st) return st;
  return write_all(fd_.get(), rec, kHeadroom + n + kTailroom);
}

Status EncryptedChannel::send_fin() {
  std::lock_guard<std::timed_mutex> g(tx_mu_);
  uint8_t fin[wire::kFinRecordSize];
  if (auto st = tx_.seal_fin(fin); !st) return st;
  if (auto st = write_all(fd_.get(), fin, sizeof fin); !st) return st;
  if (version_ < wire::kVersion2) ::shutdown(fd_.get(), SHUT_WR);
  return {};
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

Status EncryptedChannel::receive(Batch& b, int timeout_ms) {
  b.count = 0;
  b.fin = false;
  b.bytes = 0;
  b.ack = false;
  b.resume = false;
  // The previous batch is consumed. Move a partial record to the front only
  // when the space after it cannot take a whole record; usually nothing moves.
  if (rstart_ == rend_) {
    rstart_ = rend_ = 0;
  } else if (rbuf_.size() - rend_ < wire::kMaxRecordPayload + wire::kRecordOverhead) {
    std::memmove(rbuf_.data(), rbuf_.data() + rstart_, rend_ - rstart_);
    rend_ -= rstart_;
    rstart_ = 0;
  }
  for (;;) {
    while (b.count < kMaxBatch) {
      auto st = rx_.open(rbuf_.data() + rstart_, rend_ - rstart_);
      if (!st) return st.error();
      if (st->consumed == 0) break;
      rstart_ += st->consumed;
      if (st->type == wire::RecordType::kFin) {
        b.fin = true;
        return {};
      }
      if (st->type == wire::RecordType::kAck) {
        b.ack = true;
        b.ack_position = std::max(b.ack_position, st->position);
        continue;
      }
      if (st->type == wire::RecordType::kResume) {
        b.resume = true;
        b.resume_position = st->position;
        return {};  // the caller checks it comes first
      }
      b.iov[b.count++] = iovec{st->payload, st->length};
      b.bytes += st->length;
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
      return make_error(ErrorCode::kTruncated, "peer closed after " + std::to_string(rx_.records()) + " records");
    return make_error(ErrorCode::kIo, "peer read: " + errno_text(errno));
  }
}

void EncryptedChannel::close_gracefully(int ms) {
  ::shutdown(fd_.get(), SHUT_WR);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  Batch b;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    // ACKs may still come; anything else, or EOF, ends it.
    if (!receive(b, int(left)).ok() || b.count > 0 || b.fin || b.resume) return;
  }
}

Status EncryptedChannel::expect_eof() {
  if (rend_ > rstart_) return make_error(ErrorCode::kDataAfterFin);
  uint8_t b[64];
  for (;;) {
    ssize_t r = ::read(fd_.get(), b, sizeof b);
    if (r == 0) return {};
    if (r > 0) return make_error(ErrorCode::kDataAfterFin);
    if (errno == EINTR) continue;
    // A reset after the peer's FIN loses nothing: every byte was authenticated.
    return {};
  }
}

}  // namespace encmig
