#include "common/handoff.h"

#include <vector>

#include "common/libvirt.h"
#include "crypto/ct.h"
#include "crypto/encoding.h"
#include "crypto/hkdf.h"

namespace encmig::handoff {

std::string secret_xml(const std::string& usage, const json& description, const std::string& uuid) {
  std::string x = "<secret ephemeral='yes' private='no'>\n";
  if (!uuid.empty()) x += "  <uuid>" + xml_escape(uuid) + "</uuid>\n";
  x += "  <description>" + xml_escape(description.dump()) + "</description>\n";
  x += "  <usage type='tls'><name>" + xml_escape(usage) + "</name></usage>\n</secret>\n";
  return x;
}

Result<json> parse(const std::string& secret_xml) {
  std::string d = xml_element_text(secret_xml, "description");
  if (d.empty() || d.size() > kMaxDescription) return make_error(ErrorCode::kInvalidArgument, "no encmig description");
  json j = json::parse(d, nullptr, false);
  auto format = j.is_object() ? j.find("encmig") : j.end();
  if (j.is_discarded() || !j.is_object() || format == j.end() || !format->is_number_integer() ||
      format->get<int64_t>() != kFormat)
    return make_error(ErrorCode::kInvalidArgument, "description is not an encmig v1 request");
  return j;
}

std::string migrate_path(const std::string& run_dir, const std::string& id) { return run_dir + "/" + id + "/migrate.sock"; }
std::string nbd_path(const std::string& run_dir, const std::string& id) { return run_dir + "/" + id + "/nbd.sock"; }

Result<MacKeys> MacKeys::derive(const MigrationSecrets& m) {
  std::vector<uint8_t> salt(kLabelSalt.begin(), kLabelSalt.end());
  salt.insert(salt.end(), m.nonce.begin(), m.nonce.end());
  salt.insert(salt.end(), m.id.begin(), m.id.end());
  auto prk = hkdf_extract(salt, m.key);
  if (!prk) return prk.error();
  auto req = hkdf_expand(prk.value(), {reinterpret_cast<const uint8_t*>(kLabelRequest.data()), kLabelRequest.size()}, 32);
  auto ans = hkdf_expand(prk.value(), {reinterpret_cast<const uint8_t*>(kLabelAnswer.data()), kLabelAnswer.size()}, 32);
  if (!req) return req.error();
  if (!ans) return ans.error();
  return MacKeys{std::move(req.value()), std::move(ans.value())};
}

namespace {
Status mac_of(const json& description, const Secret& key, uint8_t out[kSha256Size]) {
  json d = description;
  d.erase("mac");
  std::string canonical = d.dump();
  return hmac_sha256(key, {reinterpret_cast<const uint8_t*>(canonical.data()), canonical.size()}, out);
}
}  // namespace

Status sign(json& description, const Secret& key) {
  uint8_t mac[kSha256Size];
  if (auto st = mac_of(description, key, mac); !st) return st;
  description["mac"] = hex_encode(mac);
  return {};
}

Status verify(const json& description, const Secret& key) {
  auto it = description.find("mac");
  uint8_t want[kSha256Size], got[kSha256Size];
  if (it == description.end() || !it->is_string() || !hex_decode(it->get_ref<const std::string&>(), got).ok())
    return make_error(ErrorCode::kAuthFailed, "the hand-off description carries no valid MAC");
  if (auto st = mac_of(description, key, want); !st) return st;
  if (!ct_equal(want, got, kSha256Size))
    return make_error(ErrorCode::kAuthFailed, "the hand-off description's MAC does not match (rewritten, or a different key)");
  return {};
}

}  // namespace encmig::handoff
