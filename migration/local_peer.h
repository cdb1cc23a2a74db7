// The QEMU side of a migration: who may use its UNIX sockets, and how they
// are made and reached without trusting anything another tenant could plant.
//
// Every QEMU on a host runs as the same user and group, so file permissions
// cannot tell one tenant's QEMU from another's. The kernel can: SO_PEERCRED
// names the process at the other end. A migration's sockets serve only the
// migrating domain's own QEMU (by pid) and, on the source under libvirt, the
// local libvirtd, which connects on QEMU's behalf and hands it the fd.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "migration/socket.h"

namespace encmig {

struct LocalPeerPolicy {
  pid_t qemu_pid = 0;            // the domain's QEMU, when known at arm time (QMP-direct)
  std::string libvirt_domain;    // else: its libvirt name, looked up when a socket is used
  bool allow_libvirtd = false;   // source under libvirt: libvirtd may connect for QEMU
  std::string libvirt_run_dir = "/run/libvirt";         // <dir>/qemu/<domain>.pid
  // The daemon that connects for QEMU: libvirtd (Debian 12), or virqemud
  // on hosts with libvirt's modular daemons.
  std::vector<std::string> libvirtd_pid_files{"/run/libvirtd.pid", "/run/virtqemud.pid"};
  // Nothing to check against (a QMP-direct controller that did not say).
  bool unchecked() const { return qemu_pid == 0 && libvirt_domain.empty(); }
};

// A pid from a root-written pid file, or 0.
pid_t read_pid_file(const std::string& path);

// Checks the process at the other end of a connected UNIX socket. On success,
// `qemu` (if given) is the domain's QEMU pid, when known.
Status check_local_peer(int fd, const LocalPeerPolicy& policy, pid_t* qemu = nullptr);

// Whether a QEMU that closed its socket has exited (killed, crashed) rather
// than closed the stream because the migration was over. Holds a pidfd from
// the moment the stream is accepted, so a reused pid cannot mislead it.
class ProcessWatch {
 public:
  ProcessWatch() = default;
  static ProcessWatch of(pid_t pid);
  bool valid() const { return fd_.valid(); }
  // True if the process exits within `ms` (an exiting process closes its
  // sockets a moment before it is reported as exited).
  bool exited_within(int ms) const;
  pid_t pid() const { return pid_; }

 private:
  Fd fd_;
  pid_t pid_ = 0;
};

// Connects to the UNIX socket at `path` without following a symlink at its
// last component (the directories above it belong to root), then checks the
// listener with check_local_peer.
Result<Fd> connect_local(const std::string& path, const LocalPeerPolicy& policy, pid_t* qemu = nullptr);

// A listening socket that encmigd made, and the file it made for it.
struct LocalListener {
  Fd fd;
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  // Removes the socket file if it is still the one we made.
  void remove_file() const;
};
// Creates a fresh UNIX socket at `path` (never replacing an existing file),
// with `mode`, and group `gid` unless it is -1. The directory must not be
// writable by anyone the socket's users do not trust.
Result<LocalListener> listen_local_socket(const std::string& path, mode_t mode, int gid);

// A per-migration directory under `parent`, made fresh: mode and group are
// set through its file descriptor, so nothing is followed or raced.
Status make_private_dir(const std::string& parent, const std::string& name, mode_t mode, int gid);
// Removes `names` from the directory and the directory itself, never
// following a symlink.
void remove_private_dir(const std::string& parent, const std::string& name, std::initializer_list<const char*> names);

}  // namespace encmig
