#include "migration/tcp_owner.h"

#include "migration/local_peer.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace encmig {

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// `n` hex digits as a number; false if any is not one.
bool hex_number(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 16) return false;
  out = 0;
  for (char c : s) {
    int d = hex_digit(c);
    if (d < 0) return false;
    out = out << 4 | uint64_t(d);
  }
  return true;
}

// "0100007F:0016" (v4) or 32 hex digits ":" port (v6). The kernel prints each
// 32-bit word of the address as the number it is in memory (%08X).
bool parse_endpoint(std::string_view s, bool v6, TcpEndpoint& e) {
  const size_t words = v6 ? 4 : 1;
  if (s.size() != words * 8 + 5 || s[words * 8] != ':') return false;
  uint8_t raw[16] = {};
  for (size_t w = 0; w < words; w++) {
    uint64_t v;
    if (!hex_number(s.substr(w * 8, 8), v)) return false;
    uint32_t word = uint32_t(v);
    std::memcpy(raw + w * 4, &word, 4);
  }
  uint64_t port;
  if (!hex_number(s.substr(words * 8 + 1, 4), port)) return false;
  e = TcpEndpoint{};
  if (v6) {
    std::memcpy(e.addr.data(), raw, 16);
  } else {
    e.addr[10] = e.addr[11] = 0xff;
    std::memcpy(e.addr.data() + 12, raw, 4);
  }
  e.port = uint16_t(port);
  return true;
}

bool decimal(std::string_view s, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') j++;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool v4_mapped(const std::array<uint8_t, 16>& a) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a.data(), prefix, 12) == 0;
}

}  // namespace

bool TcpEndpoint::is_any() const {
  static const std::array<uint8_t, 16> zero{};
  std::array<uint8_t, 16> v4any{};
  v4any[10] = v4any[11] = 0xff;
  return addr == zero || addr == v4any;
}

std::string TcpEndpoint::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (v4_mapped(addr)) {
    inet_ntop(AF_INET, addr.data() + 12, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  inet_ntop(AF_INET6, addr.data(), buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

HostPort TcpEndpoint::host_port() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (v4_mapped(addr)) inet_ntop(AF_INET, addr.data() + 12, buf, sizeof buf);
  else inet_ntop(AF_INET6, addr.data(), buf, sizeof buf);
  return HostPort{buf, port};
}

TcpEndpoint TcpEndpoint::from_sockaddr(const sockaddr* sa) {
  TcpEndpoint e;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    e.addr[10] = e.addr[11] = 0xff;
    std::memcpy(e.addr.data() + 12, &in->sin_addr, 4);
    e.port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::memcpy(e.addr.data(), &in6->sin6_addr, 16);
    e.port = ntohs(in6->sin6_port);
  }
  return e;
}

std::vector<TcpSocketEntry> parse_proc_net_tcp(std::string_view text, bool v6) {
  std::vector<TcpSocketEntry> out;
  size_t pos = 0;
  bool header = true;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (header) {  // "  sl  local_address rem_address   st ..."
      header = false;
      continue;
    }
    auto f = fields(line);
    // sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...
    if (f.size() < 10) continue;
    TcpSocketEntry e;
    uint64_t st, uid, inode;
    if (!parse_endpoint(f[1], v6, e.local) || !parse_endpoint(f[2], v6, e.remote)) continue;
    if (f[3].size() != 2 || !hex_number(f[3], st)) continue;
    if (!decimal(f[7], uid) || !decimal(f[9], inode) || uid > 0xffffffffull) continue;
    e.state = int(st);
    e.uid = uid_t(uid);
    e.inode = inode;
    out.push_back(e);
  }
  return out;
}

std::vector<TcpSocketEntry> read_tcp_table() {
  auto out = parse_proc_net_tcp(slurp("/proc/net/tcp"), false);
  auto v6 = parse_proc_net_tcp(slurp("/proc/net/tcp6"), true);
  out.insert(out.end(), v6.begin(), v6.end());
  return out;
}

TcpSocketEntry find_tcp_socket(const TcpEndpoint& local, const TcpEndpoint& remote) {
  for (auto& e : read_tcp_table())
    if (e.inode && e.local == local && e.remote == remote) return e;
  return {};
}

TcpSocketEntry find_tcp_listener(const TcpEndpoint& at) {
  TcpSocketEntry wildcard;
  for (auto& e : read_tcp_table()) {
    if (e.state != kTcpListen || !e.inode || e.local.port != at.port) continue;
    if (e.local.addr == at.addr) return e;
    // A v6 wildcard listener takes IPv4 too (unless V6ONLY, which /proc does not say).
    if (e.local.is_any() && (v4_mapped(e.local.addr) == v4_mapped(at.addr) || !v4_mapped(e.local.addr)))
      wildcard = e;
  }
  return wildcard;
}

std::vector<LibvirtQemu> libvirt_qemus(const std::string& libvirt_run_dir) {
  std::vector<LibvirtQemu> out;
  std::string dir = libvirt_run_dir + "/qemu";
  // libvirtd's own pid files (its QEMU driver's lock is qemu/driver.pid):
  // libvirtd is never a domain's QEMU, even while it holds the socket it
  // connected for one.
  std::vector<pid_t> libvirtd;
  for (const std::string& f : {dir + "/driver.pid", libvirt_run_dir + "/../libvirtd.pid", libvirt_run_dir + "/../virtqemud.pid"})
    if (pid_t p = read_pid_file(f)) libvirtd.push_back(p);
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* de = readdir(d)) {
    std::string n = de->d_name;
    if (n.size() <= 4 || n.compare(n.size() - 4, 4, ".pid") != 0 || n[0] == '.') continue;
    // A running domain has its status XML next to its pid file; libvirt's
    // helpers (virtiofsd, passt, swtpm...) have pid files there but are not
    // domains.
    if (access((dir + "/" + n.substr(0, n.size() - 4) + ".xml").c_str(), F_OK) != 0) continue;
    pid_t p = read_pid_file(dir + "/" + n);
    if (!p || std::find(libvirtd.begin(), libvirtd.end(), p) != libvirtd.end()) continue;
    out.push_back({n.substr(0, n.size() - 4), p});
  }
  closedir(d);
  return out;
}

bool holds_socket(pid_t pid, uint64_t inode) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return false;
  const std::string want = "socket:[" + std::to_string(inode) + "]";
  bool found = false;
  char buf[64];
  while (!found) {
    dirent* de = readdir(d);
    if (!de) break;
    if (de->d_name[0] == '.') continue;
    ssize_t n = readlinkat(dirfd(d), de->d_name, buf, sizeof buf);
    found = n == ssize_t(want.size()) && std::memcmp(buf, want.data(), want.size()) == 0;
  }
  closedir(d);
  return found;
}

LibvirtQemu qemu_holding(uint64_t inode, const std::string& libvirt_run_dir) {
  if (!inode) return {};
  for (auto& q : libvirt_qemus(libvirt_run_dir))
    if (holds_socket(q.pid, inode)) return q;
  return {};
}

bool libvirtd_holding(uint64_t inode, const std::string& libvirt_run_dir) {
  for (const std::string& f : {libvirt_run_dir + "/qemu/driver.pid", libvirt_run_dir + "/../libvirtd.pid",
                               libvirt_run_dir + "/../virtqemud.pid"})
    if (pid_t p = read_pid_file(f); p && holds_socket(p, inode)) return true;
  return false;
}

bool is_local_address(const TcpEndpoint& a) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
    found = TcpEndpoint::from_sockaddr(i->ifa_addr).addr == a.addr;
  }
  freeifaddrs(list);
  return found;
}

Result<Fd> connect_qemu_listener(const HostPort& at, const std::string& domain, const std::string& libvirt_run_dir,
                                 int timeout_ms, pid_t* qemu) {
  TcpEndpoint ep;
  ep.port = at.port;
  in_addr a4{};
  if (inet_pton(AF_INET, at.host.c_str(), &a4) == 1) {
    ep.addr[10] = ep.addr[11] = 0xff;
    std::memcpy(ep.addr.data() + 12, &a4, 4);
  } else if (inet_pton(AF_INET6, at.host.c_str(), ep.addr.data()) != 1) {
    return make_error(ErrorCode::kInvalidArgument, "QEMU's address " + at.str() + " is not an IP address");
  }
  const std::string where = "QEMU's incoming migration listener at " + at.str();
  if (!is_local_address(ep)) return make_error(ErrorCode::kPolicy, at.str() + " is not an address of this host");
  auto l = find_tcp_listener(ep);
  if (!l.inode) return make_error(ErrorCode::kPolicy, "nothing listens at " + at.str() + " on this host");
  pid_t want = 0;
  for (auto& q : libvirt_qemus(libvirt_run_dir))
    if (q.domain == domain) want = q.pid;
  if (!want) return make_error(ErrorCode::kPolicy, "domain '" + domain + "' has no running QEMU on this host");
  if (!holds_socket(want, l.inode))
    return make_error(ErrorCode::kPolicy, "the listener at " + at.str() + " is not domain '" + domain + "''s QEMU (pid " +
                                              std::to_string(want) + "): refusing to relay its migration there");
  SocketOptions so;
  so.nodelay = true;
  auto fd = tcp_connect(at, so, timeout_ms);
  if (!fd) return make_error(fd.error().code, where + ": " + fd.error().text());
  // Who accepted it? The accepted socket gets its inode when QEMU accept()s it.
  sockaddr_storage mine{};
  socklen_t ml = sizeof mine;
  if (getsockname(fd->get(), reinterpret_cast<sockaddr*>(&mine), &ml) != 0)
    return make_error(ErrorCode::kIo, where + ": getsockname: " + errno_text(errno));
  const TcpEndpoint me = TcpEndpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&mine));
  for (int i = 0;; i++) {
    auto peer = find_tcp_socket(ep, me);
    if (peer.inode && holds_socket(want, peer.inode)) break;
    if (i >= 500)  // 5 s
      return make_error(ErrorCode::kPolicy, "the connection to " + at.str() + " was not accepted by domain '" + domain +
                                                "''s QEMU (pid " + std::to_string(want) + "): refusing to relay its migration there");
    usleep(10000);
  }
  if (qemu) *qemu = want;
  return fd;
}

}  // namespace encmig
