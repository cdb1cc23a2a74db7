#include "migration/local_peer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace encmig {

pid_t read_pid_file(const std::string& path) {
  std::ifstream in(path);
  long v = 0;
  if (!(in >> v) || v <= 0 || v > (1L << 22)) return 0;
  return pid_t(v);
}

namespace {

bool safe_name(const std::string& n) {
  if (n.empty() || n.size() > 200 || n == "." || n == "..") return false;
  for (char c : n)
    if (c == '/' || c == '\0') return false;
  return true;
}

}  // namespace

Status check_local_peer(int fd, const LocalPeerPolicy& p, pid_t* qemu_out) {
  if (p.unchecked()) return {};
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return make_error(ErrorCode::kIo, "SO_PEERCRED: " + errno_text(errno));
  pid_t qemu = p.qemu_pid;
  if (!qemu && safe_name(p.libvirt_domain)) qemu = read_pid_file(p.libvirt_run_dir + "/qemu/" + p.libvirt_domain + ".pid");
  if (qemu_out) *qemu_out = qemu;
  if (qemu && cred.pid == qemu) return {};
  if (p.allow_libvirtd && cred.uid == 0)
    for (const auto& f : p.libvirtd_pid_files)
      if (pid_t libvirtd = read_pid_file(f); libvirtd && cred.pid == libvirtd) return {};
  std::string want = qemu ? "the domain's QEMU (pid " + std::to_string(qemu) + ")"
                          : "the domain's QEMU (" + (p.libvirt_domain.empty() ? std::string("unknown") : "no pid for domain '" + p.libvirt_domain + "'") + ")";
  return make_error(ErrorCode::kPolicy, "local peer pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid) +
                                            " is not " + want + (p.allow_libvirtd ? " or libvirtd" : ""));
}

ProcessWatch ProcessWatch::of(pid_t pid) {
  ProcessWatch w;
  if (pid <= 0) return w;
  w.fd_ = Fd(int(syscall(SYS_pidfd_open, pid, 0)));
  w.pid_ = pid;
  return w;
}

bool ProcessWatch::exited_within(int ms) const {
  if (!fd_.valid()) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

Result<Fd> connect_local(const std::string& path, const LocalPeerPolicy& policy, pid_t* qemu) {
  // Open the socket's inode itself, refusing a symlink, then connect through
  // /proc/self/fd: nobody can swap what we connect to after the check.
  Fd node(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!node.valid()) return make_error(ErrorCode::kIo, "open " + path + ": " + errno_text(errno));
  struct stat st {};
  if (fstat(node.get(), &st) != 0 || !S_ISSOCK(st.st_mode))
    return make_error(ErrorCode::kPolicy, path + " is not a socket (a symlink or a planted file)");
  auto fd = unix_connect("/proc/self/fd/" + std::to_string(node.get()));
  if (!fd) return make_error(fd.error().code, "connect " + path + ": " + fd.error().detail);
  if (auto st2 = check_local_peer(fd->get(), policy, qemu); !st2) return make_error(st2.error().code, path + ": " + st2.error().detail);
  return fd;
}

void LocalListener::remove_file() const {
  struct stat st {};
  if (!path.empty() && lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) ::unlink(path.c_str());
}

Result<LocalListener> listen_local_socket(const std::string& path, mode_t mode, int gid) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path)
    return make_error(ErrorCode::kInvalidArgument, "socket path too long or empty: " + path);
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  LocalListener l;
  l.fd = Fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l.fd.valid()) return make_error(ErrorCode::kIo, "socket: " + errno_text(errno));
  // bind() never replaces a file: an existing path is an error, not something to unlink.
  if (bind(l.fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    return make_error(ErrorCode::kIo, "bind " + path + ": " + errno_text(errno));
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return make_error(ErrorCode::kIo, "bind " + path + ": socket vanished");
  l.path = path;
  l.dev = st.st_dev;
  l.ino = st.st_ino;
  // Neither call follows a symlink (glibc refuses one for fchmodat).
  if ((gid >= 0 && lchown(path.c_str(), 0, gid_t(gid)) != 0) || fchmodat(AT_FDCWD, path.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
    l.remove_file();
    return make_error(ErrorCode::kIo, "set owner/mode of " + path + ": " + errno_text(errno));
  }
  if (listen(l.fd.get(), 64) != 0) {
    l.remove_file();
    return make_error(ErrorCode::kIo, "listen " + path + ": " + errno_text(errno));
  }
  return l;
}

Status make_private_dir(const std::string& parent, const std::string& name, mode_t mode, int gid) {
  if (!safe_name(name)) return make_error(ErrorCode::kInvalidArgument, "bad directory name '" + name + "'");
  Fd p(::open(parent.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!p.valid()) return make_error(ErrorCode::kIo, "open " + parent + ": " + errno_text(errno));
  if (mkdirat(p.get(), name.c_str(), 0700) != 0)
    return make_error(ErrorCode::kIo, "mkdir " + parent + "/" + name + ": " + errno_text(errno));
  Fd d(::openat(p.get(), name.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d.valid() || (gid >= 0 && fchown(d.get(), 0, gid_t(gid)) != 0) || fchmod(d.get(), mode) != 0) {
    int e = errno;
    unlinkat(p.get(), name.c_str(), AT_REMOVEDIR);
    return make_error(ErrorCode::kIo, "set up " + parent + "/" + name + ": " + errno_text(e));
  }
  return {};
}

void remove_private_dir(const std::string& parent, const std::string& name, std::initializer_list<const char*> names) {
  if (!safe_name(name)) return;
  Fd p(::open(parent.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!p.valid()) return;
  Fd d(::openat(p.get(), name.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (d.valid())
    for (const char* n : names) unlinkat(d.get(), n, 0);  // removes a symlink itself, never its target
  unlinkat(p.get(), name.c_str(), AT_REMOVEDIR);
}

}  // namespace encmig
