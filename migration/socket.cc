#include "migration/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace encmig {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

Fd::~Fd() { reset(); }

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string errno_text(int err) { return std::strerror(err); }

Result<HostPort> HostPort::parse(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 >= s.size())
    return make_error(ErrorCode::kInvalidArgument, "expected HOST:PORT, got '" + s + "'");
  HostPort hp;
  hp.host = s.substr(0, colon);
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') hp.host = hp.host.substr(1, hp.host.size() - 2);
  char* end = nullptr;
  long p = std::strtol(s.c_str() + colon + 1, &end, 10);
  if (*end || p < 0 || p > 65535) return make_error(ErrorCode::kInvalidArgument, "bad port in '" + s + "'");
  hp.port = uint16_t(p);
  return hp;
}

std::string HostPort::str() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

void apply_socket_options(int fd, const SocketOptions& opts) {
  int one = 1;
  if (opts.nodelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opts.notsent_lowat > 0) setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &opts.notsent_lowat, sizeof opts.notsent_lowat);
  if (opts.user_timeout_ms > 0) setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &opts.user_timeout_ms, sizeof opts.user_timeout_ms);
  if (opts.mark) setsockopt(fd, SOL_SOCKET, SO_MARK, &opts.mark, sizeof opts.mark);
  if (opts.buffer_bytes > 0) {
    int b = opts.buffer_bytes;
    // The FORCE variants bypass net.core.[rw]mem_max. size_socket_buffers()
    // checked at start that they work; if one fails now, autotuning stays.
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &b, sizeof b);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b);
  }
}

namespace {
// The third field of a "min default max" sysctl such as net.ipv4.tcp_rmem.
int sysctl_max(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  long a = 0, b = 0, c = 0;
  int n = std::fscanf(f, "%ld %ld %ld", &a, &b, &c);
  std::fclose(f);
  return n == 3 && c > 0 && c < (1L << 31) ? int(c) : 0;
}
}  // namespace

SocketSizing size_socket_buffers(int want) {
  SocketSizing z;
  z.want = want;
  z.autotune_rcv_max = sysctl_max("/proc/sys/net/ipv4/tcp_rmem");
  z.autotune_snd_max = sysctl_max("/proc/sys/net/ipv4/tcp_wmem");
  if (want <= 0) return z;
  if (z.autotune_rcv_max >= want && z.autotune_snd_max >= want) return z;  // autotuning reaches it
  int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int b = want;
  bool ok = probe >= 0 && setsockopt(probe, SOL_SOCKET, SO_SNDBUFFORCE, &b, sizeof b) == 0 &&
            setsockopt(probe, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) == 0;
  int err = errno;
  if (probe >= 0) ::close(probe);
  if (ok) {
    z.forced = true;
    return z;
  }
  int limit = std::min(z.autotune_rcv_max, z.autotune_snd_max);
  double mbps_150 = limit > 0 ? double(limit) * 8 / 0.150 / 1e6 : 0;
  z.note = "socket buffers: cannot force " + std::to_string(want >> 20) + " MiB (" + errno_text(err) +
           ": CAP_NET_ADMIN missing from the capability bounding set?); using the kernel's autotuning up to " +
           std::to_string(z.autotune_rcv_max >> 10) + " KiB receive / " + std::to_string(z.autotune_snd_max >> 10) +
           " KiB send, which limits one stream to about " + std::to_string(int(mbps_150)) +
           " Mb/s at 150 ms RTT. Fix: grant CAP_NET_ADMIN (the shipped unit does), or raise the third field of "
           "net.ipv4.tcp_rmem and net.ipv4.tcp_wmem to at least " + std::to_string(want) + ".";
  return z;
}

void set_recv_timeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

namespace {
Result<addrinfo*> resolve(const HostPort& hp, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port = std::to_string(hp.port);
  int rc = getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return make_error(ErrorCode::kIo, "resolve " + hp.str() + ": " + gai_strerror(rc));
  return res;
}
}  // namespace

Result<Fd> tcp_connect(const HostPort& to, const SocketOptions& opts, int timeout_ms) {
  auto res = resolve(to, false);
  if (!res) return res.error();
  std::string last = "no address";
  for (addrinfo* ai = res.value(); ai; ai = ai->ai_next) {
    Fd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) continue;
    apply_socket_options(fd.get(), opts);  // before connect: window scaling
    int rc = connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      rc = poll(&p, 1, timeout_ms);
      int err = 0;
      socklen_t len = sizeof err;
      if (rc == 1) getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      else err = rc == 0 ? ETIMEDOUT : errno;
      rc = err ? -1 : 0;
      errno = err;
    }
    if (rc != 0) {
      last = errno_text(errno);
      continue;
    }
    fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    freeaddrinfo(res.value());
    return fd;
  }
  freeaddrinfo(res.value());
  return make_error(ErrorCode::kIo, "connect " + to.str() + ": " + last);
}

Result<Fd> tcp_listen(const HostPort& at, const SocketOptions& opts) {
  auto res = resolve(at, true);
  if (!res) return res.error();
  std::string last = "no address";
  for (addrinfo* ai = res.value(); ai; ai = ai->ai_next) {
    Fd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    apply_socket_options(fd.get(), opts);  // inherited by accepted sockets
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd.get(), 128) != 0) {
      last = errno_text(errno);
      continue;
    }
    freeaddrinfo(res.value());
    return fd;
  }
  freeaddrinfo(res.value());
  return make_error(ErrorCode::kIo, "listen " + at.str() + ": " + last);
}

namespace {
// A UNIX stream socket plus the address for `path`.
Result<Fd> unix_socket(const std::string& path, sockaddr_un* sa) {
  *sa = sockaddr_un{};
  sa->sun_family = AF_UNIX;
  if (path.size() >= sizeof sa->sun_path) return make_error(ErrorCode::kInvalidArgument, "socket path too long: " + path);
  std::memcpy(sa->sun_path, path.c_str(), path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return make_error(ErrorCode::kIo, "socket: " + errno_text(errno));
  return fd;
}
}  // namespace

Result<Fd> unix_listen(const std::string& path, int mode) {
  sockaddr_un sa;
  auto fd = unix_socket(path, &sa);
  if (!fd) return fd;
  ::unlink(path.c_str());
  if (bind(fd->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    return make_error(ErrorCode::kIo, "bind " + path + ": " + errno_text(errno));
  chmod(path.c_str(), mode);
  if (listen(fd->get(), 64) != 0) return make_error(ErrorCode::kIo, "listen " + path + ": " + errno_text(errno));
  return fd;
}

Result<Fd> unix_connect(const std::string& path) {
  sockaddr_un sa;
  auto fd = unix_socket(path, &sa);
  if (!fd) return fd;
  if (connect(fd->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    return make_error(ErrorCode::kIo, "connect " + path + ": " + errno_text(errno));
  return fd;
}

Status read_exact(int fd, uint8_t* buf, size_t n, Deadline deadline) {
  size_t got = 0;
  while (got < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return make_error(ErrorCode::kTimeout, "read timed out after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, int(std::min<long long>(left, 1 << 30)));
    if (pr < 0 && errno != EINTR) return make_error(ErrorCode::kIo, "poll: " + errno_text(errno));
    if (pr <= 0) continue;
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r > 0) {
      got += size_t(r);
      continue;
    }
    if (r == 0) return make_error(ErrorCode::kTruncated, "connection closed after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return make_error(ErrorCode::kIo, "read: " + errno_text(errno));
  }
  return {};
}

Status write_all(int fd, const uint8_t* buf, size_t n) {
  while (n) {
    ssize_t w = ::send(fd, buf, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = ::write(fd, buf, n);
    if (w > 0) {
      buf += w;
      n -= size_t(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    return make_error(ErrorCode::kIo, "write: " + errno_text(errno));
  }
  return {};
}

Status writev_all(int fd, struct iovec* iov, int iovcnt) {
  while (iovcnt > 0) {
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = size_t(iovcnt);
    ssize_t w = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return make_error(ErrorCode::kIo, "write: " + errno_text(errno));
    }
    size_t left = size_t(w);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return {};
}

}  // namespace encmig
