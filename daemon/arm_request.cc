#include "daemon/arm_request.h"

#include <cctype>
#include <cstring>

#include "common/handoff.h"
#include "crypto/encoding.h"

namespace encmig {

using nlohmann::json;

const ArmArgument kArmArguments[] = {
    {"id", "string: 32 lower-case hex digits", "both", true, false, true,
     "the migration id (libvirt: from the secret's usage name)"},
    {"role", "string: \"source\" or \"destination\"", "both", true, true, true, "this host's side"},
    {"key", "string: base64 of 32 bytes, not all zero", "both", true, false, true,
     "the migration key (libvirt: the secret's value); wiped from the request"},
    {"nonce", "string: 16 lower-case hex digits", "both", true, false, true,
     "the migration nonce, salt for the key derivation (libvirt: the secret's value)"},
    {"streams", "integer: 1 to 256", "both", true, true, false,
     "migration streams: 1 + multifd channels (+ 1 with postcopy-preempt); when all have closed, the migration is complete"},
    {"postcopy-preempt", "boolean", "both", true, true, false,
     "the last of the streams is QEMU's postcopy preempt channel: it opens only if postcopy starts"},
    {"peer", "string: HOST:PORT", "source", true, true, true, "the destination daemon's data port"},
    {"peer-protocol", "integer: 1 or more", "source", true, true, false,
     "the newest record protocol version the destination daemon speaks, from its own authenticated answer; "
     "without it the source learns it from the first connection (an unauthenticated 'unsupported version' alert)"},
    {"listen-path", "string: path", "source", true, false, false,
     "UNIX socket QEMU connects to for the migration streams (one of the two paths is required)"},
    {"nbd-listen-path", "string: path", "source", true, false, false, "UNIX socket QEMU connects to for NBD"},
    {"qemu-path", "string: path", "destination", true, false, false,
     "QEMU's incoming migration socket (one of the two paths is required)"},
    {"qemu-nbd-path", "string: path", "destination", true, false, false, "QEMU's NBD server socket"},
    {"qemu-pid", "integer: a pid", "both", true, false, false,
     "the migrating QEMU's pid: only it may use the sockets (libvirt: found by domain name)"},
    {"nbd", "boolean", "both", false, true, false, "libvirt: also carry NBD storage connections"},
    {"domain", "string: a libvirt domain name", "both", false, true, true,
     "libvirt: the domain's name on this host; only its QEMU (and the source's libvirtd) may use the sockets"},
    {"encmig", "integer: 1", "both", false, true, true, "libvirt: the hand-off format version"},
    {"transparent", "boolean", "destination", false, true, false,
     "libvirt, from a source encmigd that intercepted QEMU's TCP connections: relay to QEMU's TCP listener "
     "(qemu-address) instead of a UNIX socket; the migration ends when the source removes the secret"},
    {"qemu-address", "string: IP:PORT", "destination", false, true, false,
     "transparent: the address the source QEMU connected to, QEMU's incoming listener on this host"},
    {"domain-uuid", "string: a UUID", "destination", false, true, false,
     "transparent: the migrating domain's UUID; only the listener of that domain's QEMU is used"},
};
const size_t kArmArgumentCount = sizeof kArmArguments / sizeof kArmArguments[0];

json arm_arguments_json() {
  json out = json::array();
  for (const auto& a : kArmArguments) {
    if (!a.qmp) continue;
    out.push_back({{"name", a.name}, {"type", a.type}, {"role", a.role}, {"required", a.required}, {"meaning", a.meaning}});
  }
  return out;
}

namespace {

Error bad(const std::string& name, const std::string& why) {
  return make_error(ErrorCode::kInvalidArgument, "argument '" + name + "': " + why);
}

const ArmArgument* lookup(const std::string& name) {
  for (const auto& a : kArmArguments)
    if (name == a.name) return &a;
  return nullptr;
}

// The string argument `name`, "" when absent; an error when not a string.
Result<std::string> string_arg(const json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end()) return std::string();
  if (!it->is_string()) return bad(name, "must be a string");
  return it->get_ref<const std::string&>();
}

// A socket path must be a plain name directly in the daemon's run directory:
// nothing outside it, no "..", no subdirectory, no NUL.
Status check_path(const char* name, const std::string& p, const std::string& run_dir) {
  if (p.empty()) return {};
  if (p.find('\0') != std::string::npos) return bad(name, "contains a NUL byte");
  if (p.size() > 107) return bad(name, "longer than a UNIX socket path may be");
  std::string dir = run_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (p.compare(0, dir.size() + 1, dir + "/") != 0) return bad(name, "must be a file directly in the run directory " + dir);
  std::string leaf = p.substr(dir.size() + 1);
  if (leaf.empty() || leaf == "." || leaf == ".." || leaf.find('/') != std::string::npos)
    return bad(name, "must be a file directly in the run directory " + dir);
  for (char c : leaf)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return bad(name, "may use only letters, digits, '.', '_' and '-'");
  return {};
}

bool valid_domain_name(const std::string& n) {
  if (n.empty() || n.size() > 200 || n[0] == '.') return false;
  for (char c : n)
    if (c == '/' || c == '\0' || static_cast<unsigned char>(c) < 0x20) return false;
  return true;
}

bool valid_uuid(const std::string& u) {
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); i++) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !std::isxdigit(static_cast<unsigned char>(u[i]))) return false;
  }
  return true;
}

}  // namespace

Result<MigrationConfig> parse_arm_request(const json& args, ArmChannel channel, const std::string& run_dir,
                                          const std::string& handoff_id) {
  if (!args.is_object()) return make_error(ErrorCode::kInvalidArgument, "arguments must be an object");
  const bool qmp = channel == ArmChannel::kQmp;
  for (auto it = args.begin(); it != args.end(); ++it) {
    const ArmArgument* a = lookup(it.key());
    if (!a || !(qmp ? a->qmp : a->handoff))
      return make_error(ErrorCode::kInvalidArgument, "unknown argument '" + it.key() + "'");
  }
  MigrationConfig cfg;
  auto id_text = qmp ? string_arg(args, "id") : Result<std::string>(handoff_id);
  if (!id_text) return id_text.error();
  auto id = id_from_hex(id_text.value());
  if (!id) return bad("id", id.error().detail);
  cfg.id = id.value();

  auto role = string_arg(args, "role");
  if (!role) return role.error();
  if (role.value() != "source" && role.value() != "destination") return bad("role", "must be \"source\" or \"destination\"");
  cfg.role = role.value() == "source" ? MigrationRole::kSource : MigrationRole::kDestination;

  if (auto it = args.find("streams"); it != args.end()) {
    if (!it->is_number_integer()) return bad("streams", "must be an integer");
    int64_t n = it->get<int64_t>();
    if (n < 1 || n > 256) return bad("streams", "must be between 1 and 256");
    cfg.expected_streams = int(n);
  }
  if (auto it = args.find("postcopy-preempt"); it != args.end()) {
    if (!it->is_boolean()) return bad("postcopy-preempt", "must be a boolean");
    cfg.postcopy_preempt = it->get<bool>();
    if (cfg.postcopy_preempt && cfg.expected_streams < 2)
      return bad("postcopy-preempt", "needs streams of at least 2 (the main stream and the preempt channel)");
  }
  bool nbd = false;
  if (auto it = args.find("nbd"); it != args.end()) {
    if (!it->is_boolean()) return bad("nbd", "must be a boolean");
    nbd = it->get<bool>();
  }
  if (auto it = args.find("encmig"); it != args.end() && !(it->is_number_integer() && it->get<int64_t>() == handoff::kFormat))
    return bad("encmig", "unsupported hand-off format");
  auto domain = string_arg(args, "domain");
  if (!domain) return domain.error();
  if (!qmp && !valid_domain_name(domain.value())) return bad("domain", "must be a libvirt domain name");
  if (auto it = args.find("qemu-pid"); it != args.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > (1 << 22)) return bad("qemu-pid", "must be a pid");
    cfg.local_peer.qemu_pid = pid_t(it->get<int64_t>());
  }

  if (cfg.role == MigrationRole::kSource) {
    auto peer = string_arg(args, "peer");
    if (!peer) return peer.error();
    auto hp = HostPort::parse(peer.value());
    if (!hp) return bad("peer", hp.error().detail);
    cfg.peer = hp.value();
    if (auto it = args.find("peer-protocol"); it != args.end()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 0xffff)
        return bad("peer-protocol", "must be a protocol version");
      cfg.peer_protocol = uint16_t(it->get<int64_t>());
    }
  } else if (args.contains("peer") || args.contains("peer-protocol")) {
    return bad(args.contains("peer") ? "peer" : "peer-protocol", "only a source has a peer");
  }

  bool transparent = false;
  if (auto it = args.find("transparent"); it != args.end()) {
    if (!it->is_boolean()) return bad("transparent", "must be a boolean");
    transparent = it->get<bool>();
  }
  if (transparent) {
    if (cfg.role != MigrationRole::kDestination) return bad("transparent", "only a destination is armed through a hand-off");
    if (nbd) return bad("nbd", "a transparent migration carries one TCP port; NBD is its own migration");
    auto addr = string_arg(args, "qemu-address");
    if (!addr) return addr.error();
    auto hp = HostPort::parse(addr.value());
    if (!hp) return bad("qemu-address", hp.error().detail);
    auto uuid = string_arg(args, "domain-uuid");
    if (!uuid) return uuid.error();
    if (!valid_uuid(uuid.value())) return bad("domain-uuid", "must be a UUID");
    cfg.transparent = true;
    cfg.qemu_tcp = hp.value();
    cfg.domain_uuid = uuid.value();
    cfg.context = "transparent, domain " + domain.value() + " (" + uuid.value() + "), QEMU at " + hp->str();
    return cfg;  // the domain's name on this host: by its UUID, at arm (daemon/libvirt_agent.cc)
  }
  for (const char* only : {"qemu-address", "domain-uuid"})
    if (args.contains(only)) return bad(only, "only for a transparent migration");

  if (!qmp) {
    cfg.local_peer.libvirt_domain = domain.value();
    cfg.local_peer.allow_libvirtd = cfg.role == MigrationRole::kSource;
    std::string p = handoff::migrate_path(run_dir, id_text.value());
    std::string n = nbd ? handoff::nbd_path(run_dir, id_text.value()) : "";
    (cfg.role == MigrationRole::kSource ? cfg.listen_path : cfg.qemu_path) = p;
    (cfg.role == MigrationRole::kSource ? cfg.nbd_listen_path : cfg.qemu_nbd_path) = n;
    return cfg;
  }
  const bool source = cfg.role == MigrationRole::kSource;
  const char* main_name = source ? "listen-path" : "qemu-path";
  const char* nbd_name = source ? "nbd-listen-path" : "qemu-nbd-path";
  for (const char* other : {source ? "qemu-path" : "listen-path", source ? "qemu-nbd-path" : "nbd-listen-path"})
    if (args.contains(other)) return bad(other, std::string("not an argument of a ") + (source ? "source" : "destination"));
  auto main_path = string_arg(args, main_name);
  if (!main_path) return main_path.error();
  auto nbd_path = string_arg(args, nbd_name);
  if (!nbd_path) return nbd_path.error();
  if (main_path->empty() && nbd_path->empty())
    return make_error(ErrorCode::kInvalidArgument,
                      std::string(source ? "source" : "destination") + " needs '" + main_name + "' or '" + nbd_name + "'");
  if (auto st = check_path(main_name, main_path.value(), run_dir); !st) return st.error();
  if (auto st = check_path(nbd_name, nbd_path.value(), run_dir); !st) return st.error();
  (source ? cfg.listen_path : cfg.qemu_path) = main_path.value();
  (source ? cfg.nbd_listen_path : cfg.qemu_nbd_path) = nbd_path.value();
  return cfg;
}

namespace {
bool all_zero(const uint8_t* p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}
}  // namespace

Result<MigrationSecrets> parse_arm_secrets(json& args) {
  if (!args.is_object()) return make_error(ErrorCode::kInvalidArgument, "arguments must be an object");
  auto key_it = args.find("key");
  auto nonce_it = args.find("nonce");
  const bool key_is_string = key_it != args.end() && key_it->is_string();
  Result<Secret> k = key_is_string ? base64_to_secret(key_it->get_ref<const std::string&>())
                                   : Result<Secret>(bad("key", key_it == args.end() ? "missing" : "must be a string"));
  if (key_is_string) {
    auto& text = key_it->get_ref<std::string&>();
    secure_wipe(text.data(), text.size());
  }
  if (!k) return bad("key", k.error().detail);
  if (k->size() != wire::kKeySize) return bad("key", "must be 32 bytes");
  if (all_zero(k->data(), k->size())) return bad("key", "is all zero");
  MigrationSecrets sec;
  sec.key = std::move(k.value());
  if (nonce_it == args.end() || !nonce_it->is_string()) return bad("nonce", nonce_it == args.end() ? "missing" : "must be a string");
  if (auto st = hex_decode(nonce_it->get_ref<const std::string&>(), sec.nonce); !st) return bad("nonce", st.error().detail);
  return sec;
}

Result<MigrationSecrets> secrets_from_value(const uint8_t* value, size_t size, const wire::MigrationId& id) {
  if (size != handoff::kValueSize) return make_error(ErrorCode::kInvalidArgument, "the secret's value has the wrong size");
  if (all_zero(value, wire::kKeySize)) return make_error(ErrorCode::kInvalidArgument, "the secret's key is all zero");
  auto k = Secret::from_bytes({value, wire::kKeySize});
  if (!k) return make_error(ErrorCode::kInternal, "cannot hold the key");
  MigrationSecrets sec;
  sec.id = id;
  sec.key = std::move(k.value());
  std::memcpy(sec.nonce.data(), value + wire::kKeySize, sec.nonce.size());
  return sec;
}

}  // namespace encmig
