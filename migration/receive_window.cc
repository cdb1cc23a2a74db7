#include "migration/receive_window.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

namespace encmig {

void ReceiveWindow::delivered(size_t bytes) {
  since_ += bytes;
  auto now = std::chrono::steady_clock::now();
  auto elapsed_us = std::chrono::duration_cast<std::chrono::microseconds>(now - last_).count();
  if (elapsed_us < 1000) return;  // at most one TCP_INFO per millisecond
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return;
  uint32_t rtt_us = ti.tcpi_rcv_rtt ? ti.tcpi_rcv_rtt : ti.tcpi_rtt;
  if (rtt_us == 0) return;  // no estimate yet: leave the window alone
  if (elapsed_us < int64_t(rtt_us)) return;
  // Per RTT: twice what was delivered, scaled to one RTT if the interval was longer.
  double per_rtt = double(since_) * double(rtt_us) / double(elapsed_us);
  int want = int(std::clamp(2.0 * per_rtt, double(kMinWindow), double(max_)));
  if (want != clamp_) {
    setsockopt(fd_, IPPROTO_TCP, TCP_WINDOW_CLAMP, &want, sizeof want);
    clamp_ = want;
  }
  since_ = 0;
  last_ = now;
}

}  // namespace encmig
