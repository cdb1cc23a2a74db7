// encmig: starts encrypted live migrations.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "control/qmp_client.h"
#include "control/qmp_direct.h"

using namespace encmig;

static const char kUsage[] =
    "usage: encmig migrate [options]        migrate a VM (QMP-direct mode, no libvirt)\n"
    "       encmig probe HOST:PORT          ask an encmigd data port what it supports\n"
    "\n"
    "migrate options (QMP-direct):\n"
    "  --src-qmp PATH          source QEMU's QMP socket\n"
    "  --dst-qmp PATH          destination QEMU's QMP socket (started with -incoming defer)\n"
    "  --src-encmigd PATH      source host's encmigd control socket (default /run/encmig/encmigd.sock)\n"
    "  --dst-encmigd PATH      destination host's encmigd control socket\n"
    "  --dst-addr HOST:PORT    destination encmigd data port as seen from the source\n"
    "                          (default 127.0.0.1:<its data port>)\n"
    "  --encrypted[=MODE]      disabled | opportunistic (default) | required; bare --encrypted = required\n"
    "  --parallel              use multifd (QEMU's --parallel)\n"
    "  --parallel-connections N  multifd channels (default 2 with --parallel)\n"
    "  --plain-listen HOST:PORT  plain mode: where the destination QEMU listens\n"
    "  --plain-connect HOST:PORT plain mode: where the source QEMU connects (default --plain-listen)\n"
    "  --run-dir DIR           directory for per-migration UNIX sockets (default /run/encmig)\n"
    "  --timeout S             cancel the migration after S seconds\n"
    "  --downtime-limit MS     QEMU's downtime-limit\n"
    "  --bandwidth MIB         cap the migration at MIB MiB/s (default: unlimited)\n"
    "  --json                  print one JSON summary on stdout, no progress line\n"
    "  --no-progress           no progress line\n"
    "\n"
    "On failure encmig prints the reason and exits 1; the source VM keeps running.\n";

static std::atomic<bool> g_interrupted{false};

static int cmd_probe(int argc, char** argv) {
  if (argc < 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto hp = HostPort::parse(argv[2]);
  if (!hp) return std::fprintf(stderr, "encmig: %s\n", hp.error().message().c_str()), 2;
  auto r = probe_daemon(hp.value(), 3000);
  if (!r) return std::fprintf(stderr, "encmig: probe %s: %s\n", argv[2], r.error().message().c_str()), 1;
  std::printf("%s: %s, protocol %u..%u, ciphers%s, max record %u\n", argv[2], r->software.c_str(), r->version_min,
              r->version_max, (r->ciphers & wire::kCipherAes256Gcm) ? " aes-256-gcm" : " none", r->max_record);
  return 0;
}

static void print_summary(const json& s) {
  if (s.value("result", "") != "completed") {
    std::fprintf(stderr, "encmig: migration failed: %s\n", s.value("error", std::string("unknown error")).c_str());
    if (s.contains("source-state"))
      std::fprintf(stderr, "encmig: source VM is %s\n", s["source-state"].get<std::string>().c_str());
    return;
  }
  std::printf("Migration completed %s\n", s.value("encrypted", false) ? "ENCRYPTED (AES-256-GCM)" : "UNENCRYPTED");
  std::printf("  why:         %s\n", s.value("reason", std::string()).c_str());
  std::printf("  total time:  %d ms (setup %d ms)\n", s.value("total-time-ms", 0), s.value("setup-time-ms", 0));
  std::printf("  downtime:    %d ms\n", s.value("downtime-ms", 0));
  std::printf("  transferred: %.1f MiB at %.1f MB/s\n", s.value("bytes", 0.0) / 1048576.0,
              s.value("throughput-mbytes-per-s", 0.0));
  if (s.contains("source-encmigd")) {
    const json& d = s["source-encmigd"];
    std::printf("  streams:     %zu through encmigd\n", d.contains("streams") ? d["streams"].size() : 0);
  }
  std::printf("  destination: %s\n", s.value("destination-state", std::string()).c_str());
}

static int cmd_migrate(int argc, char** argv) {
  DirectOptions o;
  o.src_encmigd = o.dst_encmigd = "/run/encmig/encmigd.sock";
  bool parallel = false;
  int channels = 0;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "encmig: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--src-qmp") o.src_qmp = next();
    else if (a == "--dst-qmp") o.dst_qmp = next();
    else if (a == "--src-encmigd") o.src_encmigd = next();
    else if (a == "--dst-encmigd") o.dst_encmigd = next();
    else if (a == "--dst-addr") o.dst_addr = next();
    else if (a == "--run-dir") o.run_dir = next();
    else if (a == "--plain-listen") o.plain_listen = next();
    else if (a == "--plain-connect") o.plain_connect = next();
    else if (a == "--parallel") parallel = true;
    else if (a == "--parallel-connections") channels = std::stoi(next());
    else if (a == "--timeout") o.timeout_s = std::stoi(next());
    else if (a == "--downtime-limit") o.downtime_limit_ms = std::stoi(next());
    else if (a == "--bandwidth") o.bandwidth_mib = std::stoi(next());
    else if (a == "--json") o.json = true;
    else if (a == "--no-progress") o.progress = false;
    else if (a == "--encrypted") o.mode = EncryptMode::kRequired;
    else if (a.rfind("--encrypted=", 0) == 0) {
      auto m = parse_encrypt_mode(a.substr(12));
      if (!m) return std::fprintf(stderr, "encmig: %s\n", m.error().message().c_str()), 2;
      o.mode = m.value();
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "encmig: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (o.src_qmp.empty() || o.dst_qmp.empty()) {
    std::fprintf(stderr, "encmig: --src-qmp and --dst-qmp are required\n");
    return 2;
  }
  o.multifd = parallel ? (channels > 0 ? channels : 2) : 0;
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_interrupted = true; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  json s = migrate_direct(o, g_interrupted);
  if (o.json) std::printf("%s\n", s.dump(2).c_str());
  else print_summary(s);
  return s.value("result", "") == "completed" ? 0 : 1;
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "migrate") return cmd_migrate(argc, argv);
  if (cmd == "probe") return cmd_probe(argc, argv);
  std::fprintf(stderr, "encmig: unknown command '%s'\n%s", argv[1], kUsage);
  return 2;
}
