// The transparent mode's parts that need no host: the kernel's socket table
// as text, the nftables ruleset, qemu.conf's port range, and the hand-off
// fields that arm a transparent destination.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "daemon/arm_request.h"
#include "daemon/nft_table.h"
#include "migration/tcp_owner.h"

using namespace encmig;
using nlohmann::json;

namespace {
const char kTcp[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0200000A:C000 00000000:0000 0A 00000000:00000000 00:00000000 00000000 64055        0 4242 1 0 100 0 0 10 0\n"
    "   1: 0100000A:D431 0200000A:C000 01 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 20 4 30 10 -1\n"
    "   2: garbage line\n"
    "   3: 0100000A:D431 0200000A:C000 01 00000000:00000000 00:00000000 00000000 99999999999 0 5152 1\n";
const char kTcp6[] =
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000000000000000000000000000:C001 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 64055        0 777 1\n"
    "   1: 0000000000000000FFFF00000100000A:D432 0000000000000000FFFF00000200000A:C001 01 00000000:00000000 00:00000000 00000000 0 0 778 1\n";
}  // namespace

TEST(ProcNetTcp, ParsesIPv4AndSkipsWhatDoesNotParse) {
  auto e = parse_proc_net_tcp(kTcp, false);
  ASSERT_EQ(e.size(), 2u);  // the garbage line and the out-of-range uid are skipped
  EXPECT_EQ(e[0].state, kTcpListen);
  EXPECT_EQ(e[0].local.str(), "10.0.0.2:49152");
  EXPECT_EQ(e[0].uid, 64055u);
  EXPECT_EQ(e[0].inode, 4242u);
  EXPECT_EQ(e[1].state, kTcpEstablished);
  EXPECT_EQ(e[1].local.str(), "10.0.0.1:54321");
  EXPECT_EQ(e[1].remote.str(), "10.0.0.2:49152");
  EXPECT_TRUE(e[0].remote.is_any());
}

TEST(ProcNetTcp, IPv6AndMappedIPv4CompareAsIPv4) {
  auto e = parse_proc_net_tcp(kTcp6, true);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_TRUE(e[0].local.is_any());
  EXPECT_EQ(e[0].local.str(), "[::]:49153");
  // ::ffff:10.0.0.1 is 10.0.0.1: a dual-stack socket matches an IPv4 peer.
  auto v4 = parse_proc_net_tcp(kTcp, false);
  EXPECT_EQ(e[1].local.addr, v4[1].local.addr);
  EXPECT_EQ(e[1].local.str(), "10.0.0.1:54322");
  EXPECT_EQ(e[1].local.host_port().str(), "10.0.0.1:54322");
}

TEST(ProcNetTcp, NothingThrowsOnJunk) {
  for (const char* t : {"", "\n", "x\n0: :\n", "h\n 0: 0200000A:C000 0200000A:C000 ZZ 0 0 0 0 0 0\n",
                        "h\n 0: 0200000A:C000 0200000A:C000 01 0 0 0 0 0 99999999999999999999999\n"}) {
    EXPECT_TRUE(parse_proc_net_tcp(t, false).empty()) << t;
    EXPECT_TRUE(parse_proc_net_tcp(t, true).empty()) << t;
  }
}

TEST(NftTable, OneTransactionWithTheRangeTheUidsAndTheBypasses) {
  InterceptRule r;
  r.port_min = 50000;
  r.port_max = 50063;
  r.uids = {0, 64055};
  r.redirect_port = 16521;
  std::string t = nft_ruleset(r);
  // Drops a table left by an earlier run in the same transaction.
  EXPECT_EQ(t.find("table inet encmig {}\ndelete table inet encmig\n"), 0u) << t;
  EXPECT_NE(t.find("type nat hook output priority -100"), std::string::npos) << t;
  EXPECT_NE(t.find("meta mark 0x656e636d return"), std::string::npos) << t;
  EXPECT_NE(t.find("fib daddr type local return"), std::string::npos) << t;
  EXPECT_NE(t.find("meta skuid { 0, 64055 } tcp dport 50000-50063 redirect to :16521"), std::string::npos) << t;
}

TEST(QemuConf, PortRange) {
  uint16_t lo = 49152, hi = 49215;
  parse_qemu_conf_ports("# migration_port_min = 1\nmigration_port_min = 50000\n  migration_port_max=50010 # c\n", lo, hi);
  EXPECT_EQ(lo, 50000);
  EXPECT_EQ(hi, 50010);
  lo = 49152, hi = 49215;
  parse_qemu_conf_ports("migration_port_min = 70000\nmigration_port_max = x\n", lo, hi);
  EXPECT_EQ(lo, 49152);
  EXPECT_EQ(hi, 49215);
  EXPECT_EQ(qemu_conf_string("user = \"a\"\n#user = \"b\"\nuser=\"c\" # last wins\ngroup = \"d\"\n", "user"), "c");
  EXPECT_EQ(qemu_conf_string("user = root\n", "user"), "");  // not a string
  parse_qemu_conf_ports("migration_port_min = 60000\nmigration_port_max = 50000\n", lo, hi);  // inverted: defaults
  EXPECT_EQ(lo, 49152);
  EXPECT_EQ(hi, 49215);
}

namespace {
const std::string kId = "00112233445566778899aabbccddeeff";
json transparent_dest() {
  return json{{"encmig", 1}, {"role", "destination"}, {"domain", "web1"}, {"transparent", true},
              {"qemu-address", "10.0.0.2:49152"}, {"domain-uuid", "63cdd455-9306-46ac-9017-f397e36161e2"}};
}
std::string refusal(const json& a, ArmChannel ch = ArmChannel::kHandoff) {
  auto r = parse_arm_request(a, ch, "/run/encmig", kId);
  return r.ok() ? "" : r.error().detail;
}
}  // namespace

TEST(TransparentHandoff, ArmsADestinationRelayingToQemusListener) {
  auto r = parse_arm_request(transparent_dest(), ArmChannel::kHandoff, "/run/encmig", kId);
  ASSERT_TRUE(r.ok()) << r.error().detail;
  EXPECT_TRUE(r->transparent);
  EXPECT_EQ(r->qemu_tcp.str(), "10.0.0.2:49152");
  EXPECT_EQ(r->domain_uuid, "63cdd455-9306-46ac-9017-f397e36161e2");
  EXPECT_TRUE(r->qemu_path.empty());
  EXPECT_EQ(r->expected_streams, 0);  // the count is not known: the source ends it
}

TEST(TransparentHandoff, RefusesWhatDoesNotFit) {
  auto a = transparent_dest();
  a["role"] = "source";
  a["peer"] = "10.0.0.2:16520";
  EXPECT_NE(refusal(a).find("transparent"), std::string::npos);
  a = transparent_dest();
  a["domain-uuid"] = "63cdd455-9306-46ac-9017-f397e36161e";
  EXPECT_NE(refusal(a).find("domain-uuid"), std::string::npos);
  a = transparent_dest();
  a.erase("qemu-address");
  EXPECT_NE(refusal(a).find("qemu-address"), std::string::npos);
  a = transparent_dest();
  a["nbd"] = true;
  EXPECT_NE(refusal(a).find("nbd"), std::string::npos);
  a = transparent_dest();
  a["transparent"] = "yes";
  EXPECT_NE(refusal(a).find("transparent"), std::string::npos);
  a = transparent_dest();
  a.erase("transparent");  // the fields mean nothing without it
  EXPECT_NE(refusal(a).find("only for a transparent migration"), std::string::npos);
  // Not an argument of migration-arm.
  json q{{"id", kId}, {"role", "destination"}, {"qemu-path", "/run/encmig/x"}, {"transparent", true}};
  EXPECT_NE(refusal(q, ArmChannel::kQmp).find("unknown argument 'transparent'"), std::string::npos);
}
