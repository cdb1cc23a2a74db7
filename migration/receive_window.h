// Receive-window sizing for one relayed stream.
//
// Like the kernel's dynamic right-sizing, but capped by our own (large) socket
// buffer instead of net.ipv4.tcp_rmem: after each round trip the TCP window is
// clamped to twice what was actually handed to QEMU in that round trip. A fast
// long link still grows the window to its bandwidth-delay product, doubling per
// RTT as slow start does; a slow consumer (a busy destination QEMU) no longer
// lets up to the whole buffer pile up unread at the destination, where it would
// all have to drain while the VM is stopped.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace encmig {

class ReceiveWindow {
 public:
  static constexpr int kMinWindow = 4 << 20;
  ReceiveWindow(int fd, int max_window) : fd_(fd), max_(max_window) {}
  // After each batch written to QEMU.
  void delivered(size_t bytes);
  int window() const { return clamp_; }

 private:
  int fd_, max_;
  int clamp_ = 0;  // 0: not clamped yet
  uint64_t since_ = 0;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace encmig
