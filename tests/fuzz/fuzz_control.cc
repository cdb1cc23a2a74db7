// libFuzzer target: everything encmigd parses from its control plane.
//  - QMP framing and requests (common/qmp.h), then migration-arm's arguments
//    (daemon/arm_request.h) for both roles;
//  - a libvirt hand-off secret's XML and description (common/handoff.h), then
//    the same parser on the hand-off channel;
//  - what encmig reads from a daemon's answers (common/json.h readers);
//  - the transparent mode's host-side text: /proc/net/tcp and tcp6
//    (migration/tcp_owner.h) and qemu.conf's port range (daemon/nft_table.h).
// Nothing may throw or crash, whatever the bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/handoff.h"
#include "common/json.h"
#include "common/qmp.h"
#include "daemon/arm_request.h"
#include "daemon/nft_table.h"
#include "migration/tcp_owner.h"

using namespace encmig;
using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)parse_proc_net_tcp(text, false);
  (void)parse_proc_net_tcp(text, true);
  uint16_t lo = 49152, hi = 49215;
  parse_qemu_conf_ports(text, lo, hi);
  if (lo > hi) __builtin_trap();
  (void)qemu_conf_string(text, "user");
  std::string buf = text;
  for (auto& obj : split_json_objects(buf)) {
    json req = json::parse(obj, nullptr, false);
    if (req.is_discarded() || !req.is_object()) continue;
    auto args = req.find("arguments");
    if (args == req.end() || !args->is_object()) continue;
    json a = *args;
    (void)parse_arm_secrets(a);
    (void)parse_arm_request(a, ArmChannel::kQmp, "/run/encmig");
  }
  // As a secret's XML, and as a bare description.
  auto d = handoff::parse(text);
  if (d) (void)parse_arm_request(d.value(), ArmChannel::kHandoff, "/run/encmig", "00112233445566778899aabbccddeeff");
  json j = json::parse(text, nullptr, false);
  if (!j.is_discarded()) {
    (void)parse_arm_request(j, ArmChannel::kHandoff, "/run/encmig", std::string(text.substr(0, 32)));
    (void)secrets_from_value(data, size, {});
    (void)json_newest_version(j, "protocol-versions");
    (void)json_newest_version(j, "protocol");
    (void)json_int(j, "resumes");
    (void)json_string(json_object(j, "status"), "aead-engine");
  }
  return 0;
}
