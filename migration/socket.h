// File descriptors and sockets: RAII, connect/listen helpers, exact I/O.
#pragma once
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "migration/wire.h"  // ErrorCode

namespace encmig {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

struct HostPort {
  std::string host;
  uint16_t port = 0;
  static Result<HostPort> parse(const std::string& s);  // "host:port" or "[v6]:port"
  // The one formatter: "host:port", "[v6]:port".
  std::string str() const;
};

// A point in time by which a whole exchange (not each read) must be done.
using Deadline = std::chrono::steady_clock::time_point;
inline Deadline deadline_in(int ms) { return std::chrono::steady_clock::now() + std::chrono::milliseconds(ms); }

struct SocketOptions {
  // SO_SNDBUFFORCE/SO_RCVBUFFORCE (needs CAP_NET_ADMIN); 0 = the kernel's
  // autotuning. Never the clamped SO_SNDBUF/SO_RCVBUF: a buffer capped at
  // net.core.[rw]mem_max is smaller than what autotuning reaches, and setting
  // one turns autotuning off.
  int buffer_bytes = 0;
  bool nodelay = true;
  // TCP_NOTSENT_LOWAT: how much not-yet-sent data the kernel may hold. The
  // buffer stays large for in-flight data (long fat links), but what QEMU has
  // "written" is never far ahead of the wire, so its switchover decision and
  // the downtime are not inflated by data waiting in our queues. 0 = unset.
  int notsent_lowat = 0;
  // TCP_USER_TIMEOUT: data left unacknowledged by the peer's kernel this long
  // breaks the connection (a black hole is noticed, and the stream resumes). 0 = unset.
  int user_timeout_ms = 0;
  // SO_MARK (needs CAP_NET_ADMIN): encmigd's own plain connections into the
  // migration port range carry it, so its interception rule lets them pass. 0 = unset.
  uint32_t mark = 0;
};

// How TCP buffers will be sized, decided once at start from what the kernel
// and our capabilities allow (see size_socket_buffers).
struct SocketSizing {
  bool forced = false;               // buffers of `want` bytes, forced
  int want = 0;                      // what was asked for (--socket-buffer)
  int autotune_rcv_max = 0, autotune_snd_max = 0;  // net.ipv4.tcp_rmem[2], tcp_wmem[2]
  std::string note;                  // a limit that costs throughput, and its fix; "" if none
};
// Prefers the kernel's autotuning when its limits reach `want`; otherwise
// forces `want` when allowed (CAP_NET_ADMIN); otherwise autotuning, with a
// note saying what that costs and how to lift it.
SocketSizing size_socket_buffers(int want);

Result<Fd> tcp_connect(const HostPort& to, const SocketOptions& opts, int timeout_ms);
Result<Fd> tcp_listen(const HostPort& at, const SocketOptions& opts);
Result<Fd> unix_listen(const std::string& path, int mode);
Result<Fd> unix_connect(const std::string& path);
void apply_socket_options(int fd, const SocketOptions& opts);
void set_recv_timeout(int fd, int ms);  // 0 = none

// Blocking helpers that retry on EINTR and short transfers.
// read_exact returns kTruncated on EOF before n bytes, and kTimeout once
// `deadline` has passed, however the bytes trickle in.
Status read_exact(int fd, uint8_t* buf, size_t n, Deadline deadline);
Status write_all(int fd, const uint8_t* buf, size_t n);
Status writev_all(int fd, struct iovec* iov, int iovcnt);

std::string errno_text(int err);

}  // namespace encmig
