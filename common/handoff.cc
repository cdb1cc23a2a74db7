#include "common/handoff.h"

#include "common/libvirt.h"

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

}  // namespace encmig::handoff
