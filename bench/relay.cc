// relay: a plain copying relay for benchmarks, the floor of any relay that
// sits where encmigd does (QEMU's unix socket -> TCP -> the peer's unix
// socket) but encrypts nothing: read into a buffer, write it out, one thread
// per direction of each connection. encmig's CPU per GiB minus this one's is
// what the encryption and the protocol cost.
//
// Usage: relay --listen-unix PATH --connect-tcp ADDR:PORT   (the source side)
//        relay --listen-tcp ADDR:PORT --connect-unix PATH   (the destination side)
// Prints "ready PORT" once listening (PORT: the TCP port, 0 for unix), then
// relays every connection it accepts until SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBuffer = 1 << 20;     // as encmigd's largest record
constexpr int kLocalBuffer = 4 << 20;   // as encmigd's local sockets

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "relay: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

sockaddr_in tcp_addr(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) die("ADDR:PORT expected: " + hostport);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::atoi(hostport.c_str() + colon + 1)));
  if (inet_pton(AF_INET, hostport.substr(0, colon).c_str(), &sa.sin_addr) != 1) die("bad address " + hostport);
  return sa;
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) die("path too long: " + path);
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  return sa;
}

int connect_to(bool tcp, const std::string& where) {
  int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int rc;
  if (tcp) {
    auto sa = tcp_addr(where);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  } else {
    auto sa = unix_addr(where);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kLocalBuffer, sizeof kLocalBuffer);
  }
  if (rc != 0) {
    std::fprintf(stderr, "relay: connect %s: %s\n", where.c_str(), std::strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

// One direction: from -> to until EOF or an error, then half-closes `to`.
void pump(int from, int to) {
  std::unique_ptr<char[]> buf(new char[kBuffer]);
  for (;;) {
    ssize_t n = read(from, buf.get(), kBuffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !write_all(to, buf.get(), size_t(n))) break;
  }
  shutdown(to, SHUT_WR);
}

void relay(int a, int b) {
  std::thread t(pump, b, a);
  pump(a, b);
  t.join();
  close(a);
  close(b);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen_unix, listen_tcp, connect_tcp, connect_unix;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--listen-unix") listen_unix = v;
    else if (k == "--listen-tcp") listen_tcp = v;
    else if (k == "--connect-tcp") connect_tcp = v;
    else if (k == "--connect-unix") connect_unix = v;
    else die("unknown option " + k);
  }
  if (listen_unix.empty() == listen_tcp.empty() || connect_tcp.empty() == connect_unix.empty())
    die("one --listen-* and one --connect-* expected");
  signal(SIGPIPE, SIG_IGN);
  const bool tcp_in = !listen_tcp.empty();
  int l = socket(tcp_in ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) die("socket");
  int port = 0;
  if (tcp_in) {
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    auto sa = tcp_addr(listen_tcp);
    if (bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind " + listen_tcp);
    socklen_t len = sizeof sa;
    getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  } else {
    unlink(listen_unix.c_str());
    auto sa = unix_addr(listen_unix);
    if (bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind " + listen_unix);
  }
  if (listen(l, 64) != 0) die("listen");
  std::printf("ready %d\n", port);
  std::fflush(stdout);
  for (;;) {
    int a = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (a < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    if (!tcp_in) setsockopt(a, SOL_SOCKET, SO_SNDBUF, &kLocalBuffer, sizeof kLocalBuffer);
    int b = connect_to(!connect_tcp.empty(), connect_tcp.empty() ? connect_unix : connect_tcp);
    if (b < 0) {
      close(a);
      continue;
    }
    std::thread(relay, a, b).detach();
  }
}
