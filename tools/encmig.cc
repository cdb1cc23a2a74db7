// encmig: starts encrypted live migrations (libvirt or QMP-direct), sets the
// per-VM policy, and picks capable destinations. Only main() and option
// parsing live here; the work is in cli/.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/libvirt_migrate.h"
#include "cli/place.h"
#include "cli/qmp_direct.h"
#include "cli/summary.h"
#include "common/args.h"
#include "cli/status.h"
#include "migration/handshake_io.h"

using namespace encmig;
using nlohmann::json;

static const char kUsage[] =
    "usage: encmig migrate [virsh migrate options] [--encrypted[=MODE]] DOMAIN DESTURI\n"
    "       encmig migrate --src-qmp PATH --dst-qmp PATH [options]   (QMP-direct, no libvirt)\n"
    "       encmig policy [-c URI] DOMAIN [disabled|opportunistic|required]\n"
    "       encmig place [-c URI] [--encrypted[=MODE]] [--json] DOMAIN DESTURI...\n"
    "       encmig migrate-postcopy [-c URI] DOMAIN   (switch a running migration to postcopy)\n"
    "       encmig probe HOST:PORT\n"
    "       encmig status [--control PATH] [--json]   (migrations in flight on this host; root)\n"
    "\n"
    "migrate (libvirt) options, as in virsh migrate:\n"
    "  -c, --connect URI       source libvirt URI (default: libvirt's default)\n"
    "  --domain NAME, --desturi URI   or give them as the first two arguments\n"
    "  --live, --offline, --p2p, --persistent, --undefinesource, --suspend\n"
    "  --copy-storage-all, --copy-storage-inc, --change-protection, --unsafe\n"
    "  --auto-converge, --compressed, --abort-on-error, --postcopy\n"
    "  --parallel              multifd; --parallel-connections N (default 2)\n"
    "  --dname NAME            rename on the destination\n"
    "  --timeout S             suspend the guest if the migration runs longer than S seconds\n"
    "                          (virsh's --timeout-suspend meaning)\n"
    "  --bandwidth MIB         cap the migration at MIB MiB/s\n"
    "  --postcopy-after-precopy   with --postcopy: switch to postcopy after the first pass\n"
    "  --postcopy-bandwidth MIB   cap the postcopy phase at MIB MiB/s\n"
    "  --migrateuri URI        only for unencrypted runs\n"
    "  --verbose               progress bar (percent, rate, ETA)\n"
    "  --tunnelled, --direct, --tls, --disks-uri and --listen-address are refused:\n"
    "                          encmig chooses the transport\n"
    "encmig options:\n"
    "  --encrypted[=MODE]      disabled | opportunistic | required; overrides the VM's policy\n"
    "                          for this run; bare --encrypted means required\n"
    "  --data-addr HOST[:PORT] destination encmigd's data address (default: DESTURI's host, port 16520)\n"
    "  --handoff-timeout MS    how long to wait for each host's encmigd (default 3000)\n"
    "  --allow-insecure-handoff  hand the key over libvirt connections that are not secure\n"
    "                          (plain qemu+tcp://): anyone on that network can read it; labs only\n"
    "  --json                  print one JSON summary on stdout\n"
    "\n"
    "migrate (QMP-direct) options:\n"
    "  --src-qmp PATH, --dst-qmp PATH   the QEMU monitors (destination started with -incoming defer)\n"
    "  --src-encmigd PATH, --dst-encmigd PATH   the daemons' control sockets\n"
    "                          (default /run/encmig/encmigd.sock)\n"
    "  --dst-addr HOST:PORT    destination encmigd data port as seen from the source\n"
    "  --plain-listen HOST:PORT, --plain-connect HOST:PORT   where unencrypted runs go\n"
    "  --run-dir DIR           per-migration UNIX sockets (default /run/encmig)\n"
    "  --parallel, --parallel-connections N, --bandwidth MIB, --encrypted[=MODE], --json\n"
    "  --postcopy, --postcopy-after-precopy, --postcopy-bandwidth MIB   as for libvirt\n"
    "  --postcopy-preempt      with --postcopy: QEMU's preempt channel, carried as one more stream\n"
    "                          (libvirt turns it on by itself where both QEMUs have it)\n"
    "  --downtime-limit MS     QEMU's downtime-limit\n"
    "  --abort-after S         cancel the migration after S seconds\n"
    "  --no-progress           no progress line\n"
    "\n"
    "On failure encmig names the cause and exits 1; the VM keeps running on the source.\n"
    "A refused migration (policy required, a host cannot encrypt) exits 3.\n";

static std::atomic<bool> g_interrupted{false};

static void on_signals() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_interrupted = true; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

[[noreturn]] static void usage_error(const std::string& msg) {
  std::fprintf(stderr, "encmig: %s\n(see encmig --help)\n", msg.c_str());
  std::exit(2);
}

// The value of option `name`, an integer in [min, max], or a usage error.
static int64_t int_option(const std::string& name, const std::string& value, int64_t min, int64_t max) {
  auto v = parse_integer(value, min, max);
  if (!v) usage_error(name + ": " + v.error().text());
  return v.value();
}

// --encrypted (= required) or --encrypted=MODE; false if `a` is neither.
static bool encrypted_option(const std::string& a, EncryptMode* mode) {
  if (a == "--encrypted") {
    *mode = EncryptMode::kRequired;
    return true;
  }
  if (a.rfind("--encrypted=", 0) != 0) return false;
  auto m = parse_encrypt_mode(a.substr(12));
  if (!m) usage_error(m.error().text());
  *mode = m.value();
  return true;
}

static int cmd_probe(int argc, char** argv) {
  if (argc < 3) usage_error("probe needs HOST:PORT");
  auto hp = HostPort::parse(argv[2]);
  if (!hp) return std::fprintf(stderr, "encmig: %s\n", hp.error().text().c_str()), 2;
  auto r = probe_daemon(hp.value(), 3000);
  if (!r) return std::fprintf(stderr, "encmig: probe %s: %s\n", argv[2], r.error().text().c_str()), 1;
  std::printf("%s: %s, protocol %u..%u, ciphers%s, max record %u\n", argv[2], r->software.c_str(), r->version_min,
              r->version_max, (r->ciphers & wire::kCipherAes256Gcm) ? " aes-256-gcm" : " none", r->max_record);
  return 0;
}

static int finish(const json& s, bool as_json) {
  if (as_json) std::printf("%s\n", s.dump(2).c_str());
  else print_summary(s);
  return summary_exit_code(s);
}

static int cmd_migrate_direct(int argc, char** argv) {
  DirectOptions o;
  o.src_encmigd = o.dst_encmigd = "/run/encmig/encmigd.sock";
  bool parallel = false;
  int channels = 0;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
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
    else if (a == "--parallel-connections") channels = int(int_option(a, next(), 1, 255));
    else if (a == "--abort-after") o.timeout_s = int(int_option(a, next(), 0, 1 << 30));
    else if (a == "--downtime-limit") o.downtime_limit_ms = int(int_option(a, next(), 0, 1 << 30));
    else if (a == "--bandwidth") o.bandwidth_mib = int(int_option(a, next(), 0, 1 << 30));
    else if (a == "--postcopy") o.postcopy = true;
    else if (a == "--postcopy-after-precopy") o.postcopy_after_precopy = true;
    else if (a == "--postcopy-preempt") o.postcopy_preempt = true;
    else if (a == "--postcopy-bandwidth") o.postcopy_bandwidth_mib = int(int_option(a, next(), 1, 1 << 30));
    else if (a == "--json") o.json = true;
    else if (a == "--no-progress") o.progress = false;
    else if (encrypted_option(a, &o.mode)) continue;
    else usage_error("unknown QMP-direct option " + a);
  }
  if (o.src_qmp.empty() || o.dst_qmp.empty()) usage_error("--src-qmp and --dst-qmp are required");
  if ((o.postcopy_after_precopy || o.postcopy_bandwidth_mib || o.postcopy_preempt) && !o.postcopy)
    usage_error("--postcopy-after-precopy, --postcopy-bandwidth and --postcopy-preempt need --postcopy");
  if (o.postcopy_preempt && parallel) usage_error("--postcopy-preempt cannot be combined with --parallel (QEMU refuses multifd with postcopy)");
  o.multifd = parallel ? (channels > 0 ? channels : 2) : 0;
  on_signals();
  return finish(migrate_direct(o, g_interrupted), o.json);
}

static int cmd_migrate(int argc, char** argv) {
  for (int i = 2; i < argc; i++)
    if (!std::strcmp(argv[i], "--src-qmp") || !std::strcmp(argv[i], "--dst-qmp")) return cmd_migrate_direct(argc, argv);
  LibvirtMigrateOptions o;
  bool as_json = false;
  std::vector<std::string> pos;
  static const std::pair<const char*, unsigned long> kFlags[] = {
      {"--live", VIR_MIGRATE_LIVE},
      {"--offline", VIR_MIGRATE_OFFLINE},
      {"--p2p", VIR_MIGRATE_PEER2PEER},
      {"--persistent", VIR_MIGRATE_PERSIST_DEST},
      {"--undefinesource", VIR_MIGRATE_UNDEFINE_SOURCE},
      {"--suspend", VIR_MIGRATE_PAUSED},
      {"--copy-storage-all", VIR_MIGRATE_NON_SHARED_DISK},
      {"--copy-storage-inc", VIR_MIGRATE_NON_SHARED_INC},
      {"--change-protection", VIR_MIGRATE_CHANGE_PROTECTION},
      {"--unsafe", VIR_MIGRATE_UNSAFE},
      {"--compressed", VIR_MIGRATE_COMPRESSED},
      {"--auto-converge", VIR_MIGRATE_AUTO_CONVERGE},
      {"--abort-on-error", VIR_MIGRATE_ABORT_ON_ERROR},
      {"--postcopy", VIR_MIGRATE_POSTCOPY},
      {"--parallel", VIR_MIGRATE_PARALLEL},
  };
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    bool flag = false;
    for (auto& [name, f] : kFlags)
      if (a == name) o.flags |= f, flag = true;
    if (flag) continue;
    if (a == "-c" || a == "--connect") o.connect_uri = next();
    else if (a == "--domain") o.domain = next();
    else if (a == "--desturi") o.desturi = next();
    else if (a == "--migrateuri") o.migrateuri = next();
    else if (a == "--dname") o.dname = next();
    else if (a == "--data-addr") o.data_addr = next();
    else if (a == "--parallel-connections") o.parallel_connections = int(int_option(a, next(), 1, 255));
    else if (a == "--timeout") o.timeout_s = int(int_option(a, next(), 0, 1 << 30));
    else if (a == "--timeout-suspend") continue;  // virsh's default meaning of --timeout
    else if (a == "--bandwidth") o.bandwidth_mib = (unsigned long)int_option(a, next(), 0, int64_t(1) << 40);
    else if (a == "--postcopy-after-precopy") o.postcopy_after_precopy = true;
    else if (a == "--postcopy-bandwidth") o.postcopy_bandwidth_mib = (unsigned long)int_option(a, next(), 1, int64_t(1) << 40);
    else if (a == "--handoff-timeout") o.handoff_timeout_ms = int(int_option(a, next(), 1, 1 << 30));
    else if (a == "--verbose") o.progress = true;
    else if (a == "--allow-insecure-handoff") o.allow_insecure_handoff = true;
    else if (a == "--json") as_json = true;
    else if (EncryptMode m; encrypted_option(a, &m)) o.mode = m;
    else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--tunnelled" || a == "--direct" || a == "--tls" || a == "--disks-uri" || a == "--listen-address") {
      usage_error(a + " is not supported: encmig chooses the transport (UNIX sockets through encmigd)");
    } else if (!a.empty() && a[0] == '-') {
      usage_error("unknown option " + a);
    } else {
      pos.push_back(a);
    }
  }
  size_t p = 0;
  if (o.domain.empty() && p < pos.size()) o.domain = pos[p++];
  if (o.desturi.empty() && p < pos.size()) o.desturi = pos[p++];
  if (o.migrateuri.empty() && p < pos.size()) o.migrateuri = pos[p++];
  if (p < pos.size()) usage_error("unexpected argument " + pos[p]);
  if (o.domain.empty() || o.desturi.empty()) usage_error("migrate needs DOMAIN and DESTURI");
  if ((o.postcopy_after_precopy || o.postcopy_bandwidth_mib) && !(o.flags & VIR_MIGRATE_POSTCOPY))
    usage_error("--postcopy-after-precopy and --postcopy-bandwidth need --postcopy");
  if (as_json) o.progress = false;
  on_signals();
  return finish(migrate_libvirt(o, g_interrupted), as_json);
}

static int cmd_migrate_postcopy(int argc, char** argv) {
  std::string uri;
  std::vector<std::string> pos;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--connect") && i + 1 < argc) uri = argv[++i];
    else if (a == "--help" || a == "-h") return std::fputs(kUsage, stdout), 0;
    else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() != 1) usage_error("migrate-postcopy needs DOMAIN");
  if (auto st = start_postcopy(uri, pos[0]); !st) return std::fprintf(stderr, "encmig: %s\n", st.error().text().c_str()), 1;
  std::printf("%s: switched to postcopy\n", pos[0].c_str());
  return 0;
}

static int cmd_policy(int argc, char** argv) {
  std::string uri;
  std::vector<std::string> pos;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--connect") && i + 1 < argc) uri = argv[++i];
    else if (a == "--help" || a == "-h") return std::fputs(kUsage, stdout), 0;
    else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.empty() || pos.size() > 2) usage_error("policy needs DOMAIN [MODE]");
  std::optional<EncryptMode> mode;
  if (pos.size() == 2) {
    auto m = parse_encrypt_mode(pos[1]);
    if (!m || pos[1].empty()) usage_error(m ? "empty mode" : m.error().text());
    mode = m.value();
  }
  auto p = domain_policy(uri, pos[0], mode);
  if (!p) return std::fprintf(stderr, "encmig: %s\n", p.error().text().c_str()), 1;
  std::printf("%s: encrypted migration %s%s\n", pos[0].c_str(), encrypt_mode_name(p->mode),
              p->explicit_set ? "" : " (default)");
  return 0;
}

static int cmd_place(int argc, char** argv) {
  PlaceOptions o;
  bool as_json = false;
  std::vector<std::string> pos;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--connect") && i + 1 < argc) o.connect_uri = argv[++i];
    else if (a == "--json") as_json = true;
    else if (EncryptMode m; encrypted_option(a, &m)) o.mode = m;
    else if (a == "--help" || a == "-h") return std::fputs(kUsage, stdout), 0;
    else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() < 2) usage_error("place needs DOMAIN and at least one DESTURI");
  o.domain = pos[0];
  o.candidates.assign(pos.begin() + 1, pos.end());
  json r = place_domain(o);
  if (as_json) std::printf("%s\n", r.dump(2).c_str());
  else print_placement(r);
  if (r.contains("error")) return 1;
  return r.contains("chosen") ? 0 : 3;
}

// The migrations in flight on this host, from the local encmigd.
static int cmd_status(int argc, char** argv) {
  std::string control = "/run/encmig/encmigd.sock";
  bool as_json = false;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--json") as_json = true;
    else if (a == "--control" && i + 1 < argc) control = argv[++i];
    else usage_error("status: unknown option " + a);
  }
  auto st = daemon_status(control);
  if (!st) {
    std::fprintf(stderr, "encmig: %s\n", st.error().text().c_str());
    return 1;
  }
  if (as_json) std::printf("%s\n", st->dump(2).c_str());
  else std::fputs(format_status(st.value()).c_str(), stdout);
  return 0;
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  // Key hygiene: encmig holds migration keys too; no core dumps, no ptrace by others.
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "migrate") return cmd_migrate(argc, argv);
  if (cmd == "migrate-postcopy") return cmd_migrate_postcopy(argc, argv);
  if (cmd == "policy") return cmd_policy(argc, argv);
  if (cmd == "place") return cmd_place(argc, argv);
  if (cmd == "probe") return cmd_probe(argc, argv);
  if (cmd == "status") return cmd_status(argc, argv);
  usage_error("unknown command '" + cmd + "'");
}
