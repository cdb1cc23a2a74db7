// encmigd: carries QEMU migration connections to the peer host, encrypted.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "common/args.h"
#include "daemon/daemon.h"
#include "daemon/libvirt_agent.h"

using namespace encmig;

static const char kUsage[] =
    "usage: encmigd [options]\n"
    "  --control PATH        QMP control socket (default /run/encmig/encmigd.sock)\n"
    "  --listen HOST:PORT    data port for peer daemons (default 0.0.0.0:16520; port 0 = any)\n"
    "  --socket-buffer BYTES TCP buffer size; default 201326592 (10 Gb/s x 150 ms)\n"
    "  --notsent-lowat BYTES unsent data the kernel may queue per stream (default 1048576)\n"
    "  --handshake-timeout MS  the whole handshake, from accept to key confirmation (default 10000)\n"
    "  --max-pending N       unauthenticated data connections at once (default 1024)\n"
    "  --max-pending-per-address N   from one address (default 256)\n"
    "  --order-timeout MS    how long the destination waits for a lower stream (default 30000)\n"
    "  --stall-timeout S     fail a migration with no data on any stream for S seconds\n"
    "                        (default 60; 0 = never)\n"
    "  --arm-timeout S       cancel a migration armed and unused for S seconds (default 600)\n"
    "  --max-migrations N    migrations armed at once (default 64)\n"
    "  --outage-budget S     how long a stream may go without a connection before the migration\n"
    "                        fails (default 60)\n"
    "  --keepalive-timeout MS  nothing from the peer for this long: the connection is broken and\n"
    "                        the stream resumes on a new one (default 5000)\n"
    "  --max-window BYTES    unacknowledged data per stream, at most (default 268435456); the\n"
    "                        window adapts to the bandwidth-delay product below that\n"
    "  --max-resumes N       a stream resumed N times fails the migration (default 100)\n"
    "  --resend-budget BYTES unacknowledged data held for resends, all streams together (default:\n"
    "                        an eighth of RAM, at least 256 MiB); locked in memory\n"
    "  --aead-engine NAME    AES-256-GCM implementation: auto (default: the fastest that passes its\n"
    "                        known answers), gnutls, libgcrypt or openssl\n"
    "  --libvirt URI         libvirt connection watched for key hand-offs (default qemu:///system;\n"
    "                        'none' disables it: QMP-direct use only)\n"
    "  --run-dir DIR         per-migration UNIX sockets (default /run/encmig)\n"
    "  --qemu-group GROUP    group allowed to use those sockets (default libvirt-qemu, if it exists)\n"
    "  --metrics-file PATH   write counters in the Prometheus text format to PATH every 10 s, for\n"
    "                        node-exporter's textfile collector (default: off)\n"
    "  --transparent         carry every migration libvirt starts on this host (unchanged virsh\n"
    "                        migrate, Nova, any libvirt client), by each domain's policy: an\n"
    "                        nftables table redirects QEMU's and libvirtd's TCP connections into\n"
    "                        libvirt's migration ports (qemu.conf) to encmigd\n"
    "  --peer-libvirt-uri T  the destination's libvirt for the key hand-off, with this host's\n"
    "                        libvirt client credentials; %s = the destination's address\n"
    "                        (default qemu+tls://%s/system)\n"
    "  --intercept-port N    local port the table redirects to, below 1024 (default 965)\n"
    "  --qemu-conf PATH      where libvirt's migration_port_min/max are (default /etc/libvirt/qemu.conf)\n"
    "  --qemu-user USER      QEMU's user, whose connections are caught besides root's (default libvirt-qemu)\n"
    "  --handoff-timeout MS  transparent: no answer from the destination's encmigd in this long means\n"
    "                        it has none (default 3000)\n"
    "  --allow-insecure-handoff  transparent: hand keys over libvirt connections that are not secure (labs only)\n"
    "  --test-fault KIND:N   for encmig's own tests only: deliver DATA record N of every stream\n"
    "                        twice (repeat-record) or not at all (skip-record)\n"
    "  --help\n";

static Daemon* g_daemon = nullptr;

// Raises the soft fd limit to the hard one: every stream holds three fds, and
// the limits on unauthenticated connections must stay well below it.
static rlim_t raise_fd_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  return r.rlim_cur;
}

int main(int argc, char** argv) {
  DaemonOptions o;
  bool pending_set = false, per_address_set = false, transparent = false;
  InterceptOptions t;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "encmigd: %s needs a value\n%s", a.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](int64_t min, int64_t max) -> int {
      auto v = parse_integer(next(), min, max);
      if (!v) {
        std::fprintf(stderr, "encmigd: %s: %s\n", a.c_str(), v.error().text().c_str());
        std::exit(2);
      }
      return int(v.value());
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--control") {
      o.control_path = next();
    } else if (a == "--listen") {
      auto hp = HostPort::parse(next());
      if (!hp) {
        std::fprintf(stderr, "encmigd: %s\n", hp.error().message().c_str());
        return 2;
      }
      o.data.listen = hp.value();
    } else if (a == "--socket-buffer") {
      o.data.socket.buffer_bytes = number(0, 1 << 30);
    } else if (a == "--notsent-lowat") {
      o.data.socket.notsent_lowat = number(0, 1 << 30);
    } else if (a == "--handshake-timeout") {
      o.data.acceptor.handshake_timeout_ms = number(1, 1 << 30);
    } else if (a == "--max-pending") {
      o.data.acceptor.max_pending = number(1, 1 << 20);
      pending_set = true;
    } else if (a == "--max-pending-per-address") {
      o.data.acceptor.max_pending_per_address = number(1, 1 << 20);
      per_address_set = true;
    } else if (a == "--order-timeout") {
      o.data.order_timeout_ms = number(1, 1 << 30);
    } else if (a == "--stall-timeout") {
      o.data.timeouts.stall = std::chrono::seconds(number(0, 1 << 24));
    } else if (a == "--arm-timeout") {
      o.data.timeouts.armed_unused = std::chrono::seconds(number(1, 1 << 24));
    } else if (a == "--max-migrations") {
      o.data.max_migrations = number(1, 4096);
    } else if (a == "--outage-budget") {
      o.data.link.outage_budget = std::chrono::seconds(number(1, 86400));
    } else if (a == "--keepalive-timeout") {
      o.data.link.silence_ms = number(500, 600000);
      o.data.link.keepalive_ms = std::max(100, o.data.link.silence_ms / 5);
    } else if (a == "--max-window") {
      o.data.link.max_window = size_t(number(4 << 20, 1 << 30));
    } else if (a == "--max-resumes") {
      o.data.link.max_resumes = number(1, 1000000);
    } else if (a == "--resend-budget") {
      auto v = parse_integer(next(), 64ll << 20, 1ll << 50);
      if (!v) {
        std::fprintf(stderr, "encmigd: --resend-budget: %s\n", v.error().text().c_str());
        return 2;
      }
      o.data.resend_budget = uint64_t(v.value());
    } else if (a == "--test-fault") {
      std::string f = next();
      auto colon = f.find(':');
      auto n = parse_integer(colon == std::string::npos ? "" : f.substr(colon + 1), 0, 1ll << 48);
      std::string kind = f.substr(0, colon);
      if (!n || (kind != "repeat-record" && kind != "skip-record")) {
        std::fprintf(stderr, "encmigd: --test-fault: repeat-record:N or skip-record:N\n");
        return 2;
      }
      o.data.link.fault = kind == "repeat-record" ? LinkOptions::Fault::kRepeatRecord : LinkOptions::Fault::kSkipRecord;
      o.data.link.fault_record = uint64_t(n.value());
    } else if (a == "--aead-engine") {
      std::string n = next();
      if (n == "auto") {
        o.aead_engine.reset();
      } else if (auto id = aead_engine_from_name(n)) {
        o.aead_engine = *id;
      } else {
        std::fprintf(stderr, "encmigd: --aead-engine: unknown engine %s (auto, gnutls, libgcrypt, openssl)\n", n.c_str());
        return 2;
      }
    } else if (a == "--libvirt") {
      o.libvirt_uri = next();
      if (o.libvirt_uri == "none") o.libvirt_uri.clear();
    } else if (a == "--run-dir") {
      o.run_dir = next();
    } else if (a == "--qemu-group") {
      o.qemu_group = next();
    } else if (a == "--metrics-file") {
      o.metrics_file = next();
    } else if (a == "--transparent") {
      transparent = true;
    } else if (a == "--peer-libvirt-uri" || a == "--intercept-port" || a == "--qemu-conf" || a == "--qemu-user" ||
               a == "--handoff-timeout" || a == "--allow-insecure-handoff") {
      if (a == "--peer-libvirt-uri") t.peer_uri = next();
      else if (a == "--intercept-port") t.port = uint16_t(number(1, 65535));
      else if (a == "--qemu-conf") t.qemu_conf = o.qemu_conf = next();
      else if (a == "--qemu-user") t.qemu_user = next();
      else if (a == "--handoff-timeout") t.handoff_timeout_ms = number(100, 600000);
      else t.allow_insecure_handoff = true;
    } else {
      std::fprintf(stderr, "encmigd: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (transparent) {
    if (o.libvirt_uri.empty()) {
      std::fprintf(stderr, "encmigd: --transparent needs libvirt (--libvirt)\n");
      return 2;
    }
    t.libvirt_uri = o.libvirt_uri;
    o.intercept = t;
  }
  // Key hygiene: no core dumps, no ptrace by other users.
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0);
  signal(SIGPIPE, SIG_IGN);
  umask(077);
  // Unauthenticated connections may use at most a quarter of the fds.
  rlim_t fds = raise_fd_limit();
  int budget = int(std::min<rlim_t>(fds / 4, 1 << 20));
  if (!pending_set) o.data.acceptor.max_pending = std::max(16, std::min(o.data.acceptor.max_pending, budget));
  if (!per_address_set)
    o.data.acceptor.max_pending_per_address = std::max(4, std::min(o.data.acceptor.max_pending_per_address, o.data.acceptor.max_pending / 2));

  auto d = Daemon::create(o);
  if (!d) {
    std::fprintf(stderr, "encmigd: %s\n", d.error().message().c_str());
    return 1;
  }
  g_daemon = d.value().get();
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_daemon->request_stop(); };  // async-signal-safe
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::unique_ptr<LibvirtAgent> agent;
  if (!o.libvirt_uri.empty()) {
    auto a = LibvirtAgent::create(*d.value());
    if (!a) {
      std::fprintf(stderr, "encmigd: %s\n", a.error().message().c_str());
      return 1;
    }
    agent = std::move(a.value());
    std::thread([&agent] { agent->run(); }).detach();
  }
  d.value()->run();
  if (agent) agent->stop();
  std::fprintf(stderr, "encmigd: stopped\n");
  return 0;
}
