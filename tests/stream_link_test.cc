// StreamLink (protocol 2) between two links joined by socketpairs: data
// survives a broken connection, exactly once and in order; a RESUME that
// claims a position out of range, or comes for a stream that completed, is
// refused.
#include "migration/stream_link.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "tests/protocol_helpers.h"

namespace encmig {
namespace {

using test::fixed_secrets;
using test::handshake_pair;

std::pair<Fd, Fd> socket_pair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {Fd(sv[0]), Fd(sv[1])};
}

struct Channels {
  std::unique_ptr<EncryptedChannel> client, server;
};

Channels connect_pair() {
  auto keys = handshake_pair(fixed_secrets());
  auto [a, b] = socket_pair();
  auto c = EncryptedChannel::create(std::move(a), std::move(keys.client), "main");
  auto s = EncryptedChannel::create(std::move(b), std::move(keys.server), "main");
  EXPECT_TRUE(c.ok() && s.ok());
  return {std::move(c.value()), std::move(s.value())};
}

// One side of a stream: the link and the "QEMU" end of its local socket.
struct Side {
  Stream stream;
  Fd qemu;
  std::unique_ptr<StreamLink> link;
  Side(MigrationRole role, LinkOptions o) {
    auto [a, b] = socket_pair();
    stream.name = "main";
    stream.local = std::move(a);
    qemu = std::move(b);
    link = std::make_unique<StreamLink>(stream, role, o);
  }
};

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 31 + (i >> 12));
  return v;
}

void write_all_fd(int fd, const std::vector<uint8_t>& v) {
  size_t off = 0;
  while (off < v.size()) {
    ssize_t n = ::write(fd, v.data() + off, std::min<size_t>(v.size() - off, 64 << 10));
    ASSERT_GT(n, 0);
    off += size_t(n);
  }
}

std::vector<uint8_t> read_to_eof(int fd, size_t hint, std::function<void(size_t)> progress = nullptr) {
  std::vector<uint8_t> out;
  out.reserve(hint);
  uint8_t buf[64 << 10];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
    if (progress) progress(out.size());
  }
  return out;
}

LinkOptions fast() {
  LinkOptions o;
  o.keepalive_ms = 100;
  o.silence_ms = 1000;
  o.outage_budget = std::chrono::milliseconds(5000);
  return o;
}

TEST(StreamLink, DataSurvivesABrokenConnectionExactlyOnceInOrder) {
  Side src(MigrationRole::kSource, fast()), dst(MigrationRole::kDestination, fast());
  auto first = connect_pair();
  const int cut_fd = first.client->fd();
  std::vector<std::thread> resumers;
  StreamLink::Reconnect reconnect = [&]() -> Result<std::unique_ptr<EncryptedChannel>> {
    auto p = connect_pair();
    auto server = std::make_shared<std::unique_ptr<EncryptedChannel>>(std::move(p.server));
    resumers.emplace_back([&dst, server] { EXPECT_TRUE(dst.link->resume(std::move(*server)).ok()); });
    return std::move(p.client);
  };
  auto src_run = std::async(std::launch::async, [&] { return src.link->run(std::move(first.client), reconnect); });
  auto dst_run = std::async(std::launch::async, [&] { return dst.link->run(std::move(first.server), nullptr); });

  const auto data = pattern(24 << 20);
  std::thread writer([&] {
    write_all_fd(src.qemu.get(), data);
    ::shutdown(src.qemu.get(), SHUT_WR);  // QEMU is done: the link sends FIN
  });
  bool cut = false;
  auto got = read_to_eof(dst.qemu.get(), data.size(), [&](size_t n) {
    if (!cut && n > (4 << 20)) {  // the network breaks mid-stream
      cut = true;
      ::shutdown(cut_fd, SHUT_RDWR);
    }
  });
  writer.join();
  ::shutdown(dst.qemu.get(), SHUT_WR);  // the destination QEMU closes its side too
  EXPECT_TRUE(read_to_eof(src.qemu.get(), 0).empty());
  auto s = src_run.get(), d = dst_run.get();
  for (auto& t : resumers) t.join();
  EXPECT_TRUE(s.ok()) << s.error().text();
  EXPECT_TRUE(d.ok()) << d.error().text();
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
  EXPECT_EQ(src.link->counters().resumes, 1u);
  EXPECT_EQ(dst.link->counters().resumes, 1u);
}

// The destination's link, and a test-driven peer that holds the key: what a
// RESUME may claim is checked against what the link actually sent.
TEST(StreamLink, RefusesAResumePositionOutOfRangeAndAResumeAfterTheEnd) {
  Side dst(MigrationRole::kDestination, fast());
  auto first = connect_pair();
  auto peer = std::move(first.client);
  auto dst_run = std::async(std::launch::async, [&] { return dst.link->run(std::move(first.server), nullptr); });
  auto hello = pattern(1000);
  std::vector<uint8_t> rec(EncryptedChannel::kHeadroom + hello.size() + EncryptedChannel::kTailroom);
  std::copy(hello.begin(), hello.end(), rec.begin() + EncryptedChannel::kHeadroom);
  ASSERT_TRUE(peer->send_data(rec.data(), uint32_t(hello.size())).ok());
  uint8_t buf[1000];
  size_t have = 0;
  while (have < sizeof buf) {
    ssize_t n = ::read(dst.qemu.get(), buf + have, sizeof buf - have);
    ASSERT_GT(n, 0);
    have += size_t(n);
  }
  ::shutdown(peer->fd(), SHUT_RDWR);  // the connection breaks
  peer.reset();

  // The destination sent nothing, so a peer cannot have received 5000 bytes.
  {
    auto p = connect_pair();
    auto forged = std::move(p.client);
    auto r = std::async(std::launch::async, [&] { return dst.link->resume(std::move(p.server)); });
    ASSERT_TRUE(forged->send_position(wire::RecordType::kResume, 5000).ok());
    auto st = r.get();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kResumeRefused);
    EncryptedChannel::Batch b;
    (void)forged->receive(b, 1000);  // the RESUME the link sent, then its ERROR
    auto e = forged->receive(b, 1000);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code, ErrorCode::kPeerError);
  }
  // A RESUME that is not the first record of its connection is refused too.
  {
    auto p = connect_pair();
    auto wrong = std::move(p.client);
    auto r = std::async(std::launch::async, [&] { return dst.link->resume(std::move(p.server)); });
    std::vector<uint8_t> d(EncryptedChannel::kHeadroom + 10 + EncryptedChannel::kTailroom);
    ASSERT_TRUE(wrong->send_data(d.data(), 10).ok());
    EXPECT_EQ(r.get().error().code, ErrorCode::kResumeRefused);
  }
  // The stream is still there for an honest resume: position 0 (the
  // destination sent nothing); the peer's data continues at 1000.
  {
    auto p = connect_pair();
    auto honest = std::move(p.client);
    auto r = std::async(std::launch::async, [&] { return dst.link->resume(std::move(p.server)); });
    ASSERT_TRUE(honest->send_position(wire::RecordType::kResume, 0).ok());
    ASSERT_TRUE(r.get().ok());
    EncryptedChannel::Batch b;
    ASSERT_TRUE(honest->receive(b, 1000).ok());
    ASSERT_TRUE(b.resume);
    EXPECT_EQ(b.resume_position, 1000u);
    honest->rebase_sender(1000);
    ASSERT_TRUE(honest->send_fin().ok());
    ::shutdown(dst.qemu.get(), SHUT_WR);
    // Wait for the link to acknowledge our FIN and send its own.
    bool peer_fin = false, fin_acked = false;
    for (int i = 0; i < 50 && !(peer_fin && fin_acked); i++) {
      auto st = honest->receive(b, 200);
      if (!st.ok() && st.error().code != ErrorCode::kTimeout) break;
      peer_fin |= b.fin;
      fin_acked |= b.ack && b.ack_position == 1001;
    }
    EXPECT_TRUE(peer_fin && fin_acked);
    ASSERT_TRUE(honest->send_position(wire::RecordType::kAck, 1).ok());
    auto d = dst_run.get();
    EXPECT_TRUE(d.ok()) << d.error().text();
  }
  // The stream completed: nothing to resume.
  auto p = connect_pair();
  auto st = dst.link->resume(std::move(p.server));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kResumeRefused);
}

// The connection breaks after both FINs crossed but before the ACK of the
// link's FIN came back: the link waits for a resume, until the controller
// ends the migration; then the stream is complete, not failed.
TEST(StreamLink, SettlesAtTheEndWhenOnlyAnAckWasLost) {
  Side dst(MigrationRole::kDestination, fast());
  auto first = connect_pair();
  auto peer = std::move(first.client);
  auto dst_run = std::async(std::launch::async, [&] { return dst.link->run(std::move(first.server), nullptr); });
  ASSERT_TRUE(peer->send_fin().ok());                    // the source QEMU sent nothing and closed
  ::shutdown(dst.qemu.get(), SHUT_WR);                   // so did the destination QEMU
  EncryptedChannel::Batch b;
  bool peer_fin = false, fin_acked = false;
  for (int i = 0; i < 50 && !(peer_fin && fin_acked); i++) {
    auto st = peer->receive(b, 200);
    if (!st.ok() && st.error().code != ErrorCode::kTimeout) break;
    peer_fin |= b.fin;
    fin_acked |= b.ack && b.ack_position == 1;
  }
  ASSERT_TRUE(peer_fin && fin_acked);
  EXPECT_FALSE(dst.link->settle_at_end());  // still connected: nothing to settle
  ::shutdown(peer->fd(), SHUT_RDWR);        // the ACK of its FIN never goes out
  peer.reset();
  for (int i = 0; i < 100 && !dst.link->counters().reconnecting; i++) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(dst.link->counters().reconnecting);
  EXPECT_TRUE(dst.link->settle_at_end());
  auto d = dst_run.get();
  EXPECT_TRUE(d.ok()) << d.error().text();
}

}  // namespace
}  // namespace encmig
