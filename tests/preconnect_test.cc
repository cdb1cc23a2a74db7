// Preconnected: a connection made at arm is handed out once, only while the
// peer has said nothing on it; a failed or abandoned one is reported, never
// handed out.
#include "migration/preconnect.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>

#include "tests/protocol_helpers.h"

namespace encmig {
namespace {

using test::fixed_secrets;
using test::handshake_pair;

struct Pair {
  std::unique_ptr<EncryptedChannel> client, server;
};

Pair channel_pair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  auto keys = handshake_pair(fixed_secrets());
  auto c = EncryptedChannel::create(Fd(sv[0]), std::move(keys.client), "main");
  auto s = EncryptedChannel::create(Fd(sv[1]), std::move(keys.server), "main");
  EXPECT_TRUE(c.ok() && s.ok());
  return {std::move(c.value()), std::move(s.value())};
}

TEST(Preconnected, QuietConnectionIsTakenOnce) {
  Pair p = channel_pair();
  EncryptedChannel* made = p.client.get();
  auto pre = Preconnected::start(1, [&](uint32_t) { return Result<std::unique_ptr<EncryptedChannel>>(std::move(p.client)); });
  std::string why;
  auto ch = pre->take(0, &why);
  EXPECT_EQ(ch.get(), made);
  EXPECT_TRUE(why.empty());
  EXPECT_EQ(pre->counts().used, 1u);
  EXPECT_EQ(pre->take(0, &why), nullptr);  // once
  EXPECT_TRUE(why.empty());
  EXPECT_EQ(pre->take(7, &why), nullptr);  // never made
  EXPECT_TRUE(why.empty());
}

TEST(Preconnected, ClosedOrAnsweredByThePeerIsNotUsed) {
  for (bool close : {true, false}) {
    Pair p = channel_pair();
    auto pre = Preconnected::start(1, [&](uint32_t) { return Result<std::unique_ptr<EncryptedChannel>>(std::move(p.client)); });
    while (pre->counts().ready == 0) std::this_thread::yield();
    if (close)
      p.server.reset();
    else
      ASSERT_TRUE(p.server->send_error(ErrorCode::kLocalFailure, "going away"));
    std::string why;
    EXPECT_EQ(pre->take(0, &why), nullptr);
    EXPECT_NE(why.find("closed or answered by the peer"), std::string::npos) << why;
    EXPECT_EQ(pre->counts().used, 0u);
    EXPECT_EQ(pre->counts().failed, 1u);
  }
}

TEST(Preconnected, FailureIsReportedWithItsCause) {
  auto pre = Preconnected::start(2, [](uint32_t i) -> Result<std::unique_ptr<EncryptedChannel>> {
    return make_error(ErrorCode::kPeerAlert, "stream " + std::to_string(i) + " refused");
  });
  while (pre->counts().pending > 0) std::this_thread::yield();
  std::string why;
  EXPECT_EQ(pre->take(1, &why), nullptr);
  EXPECT_NE(why.find("stream 1 refused"), std::string::npos) << why;
  auto c = pre->counts();
  EXPECT_EQ(c.failed, 2u);  // one taken, one not yet
  EXPECT_EQ(c.ready + c.pending + c.used, 0u);
}

TEST(Preconnected, EndingWhileConnectingReleasesTheWaiter) {
  std::promise<void> go;
  auto gate = go.get_future().share();
  Pair p = channel_pair();
  auto pre = Preconnected::start(1, [&, gate](uint32_t) {
    gate.wait();
    return Result<std::unique_ptr<EncryptedChannel>>(std::move(p.client));
  });
  EXPECT_EQ(pre->counts().pending, 1u);
  auto taker = std::async(std::launch::async, [&] {
    std::string why;
    auto ch = pre->take(0, &why);
    return std::make_pair(ch == nullptr, why);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  pre->close_all();
  auto [null, why] = taker.get();
  EXPECT_TRUE(null);
  EXPECT_TRUE(why.empty()) << why;  // the migration ended: nothing to report
  go.set_value();  // the connection made after the end is closed, not kept
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(pre->counts().ready, 0u);
}

}  // namespace
}  // namespace encmig
