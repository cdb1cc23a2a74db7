// wanem: a packet-level WAN emulator for benchmarks (this kernel has no netem).
//
// It creates one TUN device in each of two network namespaces and moves every
// IP packet between them through a model of one link per direction: a
// drop-tail queue, serialization at --rate-mbit, then --delay-ms of
// propagation (RTT/2). Real TCP on either side therefore sees the RTT, the
// bottleneck rate and queue drops.
//
//   ns A: tun (10.x.0.1) --read--> [queue | rate | delay] --write--> tun (10.x.0.2): ns B
//                       <--write-- [queue | rate | delay] <--read--
//
// Usage: wanem --ns-a PATH --ns-b PATH --dev NAME --rate-mbit R --delay-ms D
//              [--queue-bytes N]
// Prints "ready" once both devices exist; addresses are set by the caller.
// Stops on SIGTERM/SIGINT; prints per-direction packet and drop counts.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kMaxPacket = 65536;
std::atomic<bool> g_stop{false};

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int open_tun_in(const std::string& ns_path, const std::string& name) {
  int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  int ns = open(ns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (self < 0 || ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
    std::perror(("wanem: enter " + ns_path).c_str());
    std::exit(1);
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) != 0) {
    std::perror("wanem: TUNSETIFF");
    std::exit(1);
  }
  setns(self, CLONE_NEWNET);
  close(self);
  close(ns);
  return fd;
}

struct Packet {
  int64_t deliver_at;
  std::vector<uint8_t> data;
};

// One direction of the link.
class Link {
 public:
  Link(int in, int out, double rate_bps, int64_t delay_ns, size_t queue_bytes, const char* name)
      : in_(in), out_(out), ns_per_byte_(8e9 / rate_bps), delay_ns_(delay_ns), queue_bytes_(queue_bytes), name_(name) {}

  void start() {
    reader_ = std::thread([this] { read_loop(); });
    writer_ = std::thread([this] { write_loop(); });
  }
  void join() {
    {
      std::lock_guard<std::mutex> g(mu_);
      cv_.notify_all();
    }
    reader_.detach();  // blocked in read(); the process is exiting
    writer_.join();
  }
  void report() const {
    std::fprintf(stderr, "wanem: %s: %llu packets, %llu bytes, %llu dropped\n", name_,
                 (unsigned long long)packets_.load(), (unsigned long long)bytes_.load(),
                 (unsigned long long)drops_.load());
  }

 private:
  void read_loop() {
    std::vector<uint8_t> buf(kMaxPacket);
    while (!g_stop) {
      ssize_t n = read(in_, buf.data(), buf.size());
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return;
      }
      int64_t now = now_ns();
      // Drop-tail: the backlog still waiting for the wire, in bytes.
      int64_t backlog_ns = link_free_ > now ? link_free_ - now : 0;
      if (double(backlog_ns) / ns_per_byte_ > double(queue_bytes_)) {
        drops_++;
        continue;
      }
      int64_t start = link_free_ > now ? link_free_ : now;
      link_free_ = start + int64_t(double(n) * ns_per_byte_);
      Packet p{link_free_ + delay_ns_, std::vector<uint8_t>(buf.begin(), buf.begin() + n)};
      {
        std::lock_guard<std::mutex> g(mu_);
        q_.push_back(std::move(p));
      }
      cv_.notify_one();
    }
  }

  void write_loop() {
    for (;;) {
      Packet p;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !q_.empty() || g_stop; });
        if (g_stop) return;
        p = std::move(q_.front());
        q_.pop_front();
      }
      timespec ts{time_t(p.deliver_at / 1000000000), long(p.deliver_at % 1000000000)};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
      if (write(out_, p.data.data(), p.data.size()) == ssize_t(p.data.size())) {
        packets_++;
        bytes_ += p.data.size();
      }
    }
  }

  int in_, out_;
  double ns_per_byte_;
  int64_t delay_ns_;
  size_t queue_bytes_;
  const char* name_;
  int64_t link_free_ = 0;  // reader thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Packet> q_;
  std::thread reader_, writer_;
  std::atomic<uint64_t> packets_{0}, bytes_{0}, drops_{0};
};

}  // namespace

int main(int argc, char** argv) {
  std::string ns_a, ns_b, dev = "wan0";
  double rate_mbit = 1000, delay_ms = 0;
  long long queue = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--ns-a") ns_a = v;
    else if (k == "--ns-b") ns_b = v;
    else if (k == "--dev") dev = v;
    else if (k == "--rate-mbit") rate_mbit = std::atof(v.c_str());
    else if (k == "--delay-ms") delay_ms = std::atof(v.c_str());
    else if (k == "--queue-bytes") queue = std::atoll(v.c_str());
    else {
      std::fprintf(stderr, "wanem: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (ns_a.empty() || ns_b.empty()) {
    std::fprintf(stderr, "usage: wanem --ns-a PATH --ns-b PATH [--dev NAME] --rate-mbit R --delay-ms D [--queue-bytes N]\n");
    return 2;
  }
  // Router buffer: one bandwidth-delay product (RTT = 2 x delay), at least 1 MB.
  double rate_bps = rate_mbit * 1e6;
  if (queue < 0) queue = std::max<long long>(1 << 20, (long long)(rate_bps / 8 * 2 * delay_ms / 1000));
  prctl(PR_SET_TIMERSLACK, 1UL);
  int a = open_tun_in(ns_a, dev), b = open_tun_in(ns_b, dev);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = true; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  int64_t delay_ns = int64_t(delay_ms * 1e6);
  Link ab(a, b, rate_bps, delay_ns, size_t(queue), "a->b"), ba(b, a, rate_bps, delay_ns, size_t(queue), "b->a");
  ab.start();
  ba.start();
  std::printf("ready\n");
  std::fflush(stdout);
  while (!g_stop) pause();
  ab.join();
  ba.join();
  ab.report();
  ba.report();
  return 0;
}
