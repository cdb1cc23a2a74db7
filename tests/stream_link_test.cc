// StreamLink between two links joined by socketpairs, and against a
// test-driven peer that holds the key: data survives broken connections
// exactly once and in order; resumes that race are installed one at a time;
// a START that claims a position out of range, another salt, or comes for a
// stream that completed is refused; a delivery that skips or repeats a
// record fails the stream on both sides.
#include "migration/stream_link.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <random>
#include <thread>

#include "tests/protocol_helpers.h"

namespace encmig {
namespace {

// As in encmigd: a peer that went away is an error return, not a signal.
const bool kNoSigpipe = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

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

Channels connect_pair(bool resume = false) {
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0, nullptr,
                                   resume ? wire::kHelloFlagResume : 0);
  auto s = ServerHandshake::create();
  EXPECT_TRUE(s.consume(c->hello().data(), c->hello().size()).ok());
  EXPECT_TRUE(s.accept(m).ok());
  EXPECT_TRUE(c->consume(s.output().data(), s.output().size()).ok());
  EXPECT_TRUE(s.consume(c->confirm().data(), c->confirm().size()).ok());
  auto [a, b] = socket_pair();
  auto cc = EncryptedChannel::create(std::move(a), std::move(c->take_keys().value()), "main");
  auto sc = EncryptedChannel::create(std::move(b), std::move(s.take_keys().value()), "main");
  EXPECT_TRUE(cc.ok() && sc.ok());
  return {std::move(cc.value()), std::move(sc.value())};
}

StreamLink::StreamSecret secret_fn() {
  return [](Direction d, const wire::Salt& salt) {
    return derive_stream_secret(fixed_secrets(), wire::Kind::kMigration, 0, d, salt);
  };
}

// One side of a stream: the link and the "QEMU" end of its local socket.
struct Side {
  Stream stream;
  Fd qemu;
  BufferPool pool;
  std::unique_ptr<StreamLink> link;
  Side(MigrationRole role, LinkOptions o, uint64_t budget = 1ull << 30) : pool(budget) {
    auto [a, b] = socket_pair();
    stream.name = "main";
    stream.local = std::move(a);
    qemu = std::move(b);
    link = std::make_unique<StreamLink>(stream, role, o, secret_fn(), pool);
  }
};

std::vector<uint8_t> pattern(size_t n, uint32_t seed = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 31 + (i >> 12) + seed);
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

std::vector<uint8_t> read_n(int fd, size_t n) {
  std::vector<uint8_t> out(n);
  size_t have = 0;
  while (have < n) {
    ssize_t r = ::read(fd, out.data() + have, n - have);
    if (r <= 0) break;
    have += size_t(r);
  }
  out.resize(have);
  return out;
}

LinkOptions fast() {
  LinkOptions o;
  o.keepalive_ms = 100;
  o.silence_ms = 1000;
  o.outage_budget = std::chrono::milliseconds(5000);
  return o;
}

// A source link and a destination link; `cut` breaks the current connection.
struct Pair {
  Side src{MigrationRole::kSource, fast()}, dst{MigrationRole::kDestination, fast()};
  std::mutex mu;
  int current_fd = -1;
  std::vector<std::thread> offers;
  std::future<Status> src_run, dst_run;
  explicit Pair(LinkOptions dst_opts = fast()) : dst(MigrationRole::kDestination, dst_opts) {}
  void start() {
    auto first = connect_pair();
    current_fd = first.client->fd();
    StreamLink::Reconnect reconnect = [this]() -> Result<std::unique_ptr<EncryptedChannel>> {
      auto p = connect_pair(true);
      {
        std::lock_guard<std::mutex> g(mu);
        current_fd = p.client->fd();
      }
      auto server = std::make_shared<std::unique_ptr<EncryptedChannel>>(std::move(p.server));
      // What the data plane does: read the client's START, then offer.
      offers.emplace_back([this, server] {
        EncryptedChannel::Batch b;
        auto st = (*server)->receive(b, nullptr, 2000);
        if (st.ok() && b.start) dst.link->offer(std::move(*server), b.start_info);
      });
      return std::move(p.client);
    };
    auto client = std::make_shared<std::unique_ptr<EncryptedChannel>>(std::move(first.client));
    auto server = std::make_shared<std::unique_ptr<EncryptedChannel>>(std::move(first.server));
    src_run = std::async(std::launch::async, [this, client, reconnect] {
      return src.link->run(std::move(*client), nullptr, reconnect);
    });
    dst_run = std::async(std::launch::async, [this, server] {
      EncryptedChannel::Batch b;
      auto st = (*server)->receive(b, nullptr, 5000);
      if (!st.ok() || !b.start) return Status(make_error(ErrorCode::kResumeRefused, "no START"));
      return dst.link->run(std::move(*server), &b.start_info, nullptr);
    });
  }
  void cut() {
    std::lock_guard<std::mutex> g(mu);
    ::shutdown(current_fd, SHUT_RDWR);
  }
  std::pair<Status, Status> finish() {
    auto s = src_run.get(), d = dst_run.get();
    for (auto& t : offers) t.join();
    return {s, d};
  }
};

TEST(StreamLink, DataSurvivesBrokenConnectionsExactlyOnceInOrder) {
  Pair p;
  p.start();
  const auto data = pattern(48 << 20);
  std::thread writer([&] {
    write_all_fd(p.src.qemu.get(), data);
    ::shutdown(p.src.qemu.get(), SHUT_WR);  // QEMU is done: the link sends FIN
  });
  // The return path carries data too.
  const auto back = pattern(3 << 20, 7);
  std::thread back_writer([&] {
    write_all_fd(p.dst.qemu.get(), back);
    ::shutdown(p.dst.qemu.get(), SHUT_WR);
  });
  std::vector<uint8_t> got_back;
  std::thread back_reader([&] { got_back = read_to_eof(p.src.qemu.get(), back.size()); });
  int cuts = 0;
  auto got = read_to_eof(p.dst.qemu.get(), data.size(), [&](size_t n) {
    if (cuts < 4 && n > size_t(cuts + 1) * (8 << 20)) {  // the network breaks, again and again
      cuts++;
      p.cut();
    }
  });
  writer.join();
  back_writer.join();
  back_reader.join();
  auto [s, d] = p.finish();
  EXPECT_TRUE(s.ok()) << s.error().text();
  EXPECT_TRUE(d.ok()) << d.error().text();
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
  EXPECT_TRUE(got_back == back);
  EXPECT_EQ(cuts, 4);
  EXPECT_GE(p.src.link->counters().resumes, 4u);
  EXPECT_EQ(p.dst.link->counters().resumes, p.src.link->counters().resumes);
}

// A test-driven client that holds the key: it seals its DATA once, keeps it,
// and can resend from any record boundary on any connection.
struct Peer {
  DataSealer sealer = DataSealer::create(secret_fn()(Direction::kClientToServer, salt()).value()).value();
  std::vector<std::vector<uint8_t>> records;
  std::vector<uint64_t> positions;
  static wire::Salt salt() {
    wire::Salt s;
    s.fill(0x5a);
    return s;
  }
  void add(const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> rec(wire::kRecordOverhead + payload.size());
    std::copy(payload.begin(), payload.end(), rec.begin() + wire::kRecordHeaderSize);
    positions.push_back(sealer.position());
    ASSERT_TRUE(sealer.seal(rec.data(), uint32_t(payload.size())).ok());
    records.push_back(rec);
  }
  Status send_from(EncryptedChannel& ch, uint64_t position) {
    for (size_t i = 0; i < records.size(); i++) {
      if (positions[i] < position) continue;
      if (auto st = ch.send_records(records[i].data(), records[i].size()); !st) return st;
    }
    return {};
  }
};

// Waits for the server's START on `ch`; returns its position.
wire::Start server_start_info(EncryptedChannel& ch) {
  EncryptedChannel::Batch b;
  auto st = ch.receive(b, nullptr, 3000);
  EXPECT_TRUE(st.ok() && b.start) << (st.ok() ? "not START" : st.error().text());
  return b.start_info;
}
uint64_t server_start(EncryptedChannel& ch) { return server_start_info(ch).position; }

// Reads until the server's FIN and its ACK of `acked` both came.
bool fin_and_ack(EncryptedChannel& ch, const wire::Salt& server_salt, uint64_t acked) {
  auto opener = DataOpener::create(secret_fn()(Direction::kServerToClient, server_salt).value()).value();
  EncryptedChannel::Batch b;
  bool fin = false, ack = false;
  for (int i = 0; i < 50 && !(fin && ack); i++) {
    auto st = ch.receive(b, &opener, 200);
    if (!st.ok() && st.error().code != ErrorCode::kTimeout) {
      ADD_FAILURE() << st.error().text();
      break;
    }
    fin |= b.fin;
    ack |= b.ack && b.ack_last == acked;
  }
  return fin && ack;
}

// Two resumes of one stream overlap on the destination, as an attacker on
// the path can arrange (hold one connection's bytes, reset it towards the
// source only, release it after the next one began): the link installs them
// one at a time, from its own count, and the late bytes of the first can
// neither be delivered twice nor leave a gap.
TEST(StreamLink, OverlappingResumesNeverDuplicateOrSkip) {
  for (int order = 0; order < 3; order++) {
    Side dst(MigrationRole::kDestination, fast());
    Peer peer;
    std::vector<uint8_t> want;
    for (int i = 0; i < 12; i++) {
      auto d = pattern(100000 + i * 1000, uint32_t(i));
      peer.add(d);
      want.insert(want.end(), d.begin(), d.end());
    }
    std::vector<uint8_t> got;
    std::thread qemu([&] {
      got = read_to_eof(dst.qemu.get(), want.size());
    });
    auto first = connect_pair();
    auto c0 = std::move(first.client);
    auto dst_run = std::async(std::launch::async, [&] {
      wire::Start s{0, Peer::salt()};
      return dst.link->run(std::move(first.server), &s, nullptr);
    });
    ASSERT_TRUE(c0->send_start({0, Peer::salt()}).ok());
    // Records 0..3 go through, then the connection breaks.
    for (int i = 0; i < 4; i++) ASSERT_TRUE(c0->send_records(peer.records[i].data(), peer.records[i].size()).ok());
    (void)server_start(*c0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c0->shutdown();
    // Resume A: its START goes through; what the server answers is "lost".
    auto a = connect_pair(true);
    ASSERT_TRUE(a.client->send_start({0, Peer::salt()}).ok());
    dst.link->offer(std::move(a.server), {0, Peer::salt()});
    uint64_t pa = server_start(*a.client);
    // Resume B starts while A is (for the server) alive.
    auto b = connect_pair(true);
    ASSERT_TRUE(b.client->send_start({0, Peer::salt()}).ok());
    if (order == 0) {
      // A's held bytes arrive first (records from A's position), then B is offered.
      (void)peer.send_from(*a.client, pa);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      dst.link->offer(std::move(b.server), {0, Peer::salt()});
    } else if (order == 1) {
      // B is offered first; A's bytes come late, on a connection the server dropped.
      dst.link->offer(std::move(b.server), {0, Peer::salt()});
      (void)peer.send_from(*a.client, pa);
    } else {
      // Both at once.
      std::thread t([&] { (void)peer.send_from(*a.client, pa); });
      dst.link->offer(std::move(b.server), {0, Peer::salt()});
      t.join();
    }
    auto sb = server_start_info(*b.client);
    ASSERT_TRUE(peer.send_from(*b.client, sb.position).ok());
    ASSERT_TRUE(b.client->send_fin(peer.sealer.finish()).ok());
    ::shutdown(dst.qemu.get(), SHUT_WR);
    // The server's FIN and its ACK of ours: then ours of its FIN.
    EXPECT_TRUE(fin_and_ack(*b.client, sb.salt, want.size() + 1)) << order;
    ASSERT_TRUE(b.client->send_ack(1).ok());
    auto d = dst_run.get();
    qemu.join();
    EXPECT_TRUE(d.ok()) << order << ": " << d.error().text();
    ASSERT_EQ(got.size(), want.size()) << order;
    EXPECT_TRUE(got == want) << order;
  }
}

// The destination's link against a peer that holds the key: what a START
// may claim is checked against what the link actually sent, and a stream's
// salt never changes. No honest client sends such a START: the stream fails.
TEST(StreamLink, RefusesABadStart) {
  for (int which = 0; which < 2; which++) {
    Side dst(MigrationRole::kDestination, fast());
    Peer peer;
    peer.add(pattern(1000));
    auto first = connect_pair();
    auto c0 = std::move(first.client);
    auto dst_run = std::async(std::launch::async, [&] {
      wire::Start s{0, Peer::salt()};
      return dst.link->run(std::move(first.server), &s, nullptr);
    });
    ASSERT_TRUE(c0->send_start({0, Peer::salt()}).ok());
    ASSERT_TRUE(peer.send_from(*c0, 0).ok());
    EXPECT_EQ(read_n(dst.qemu.get(), 1000).size(), 1000u);
    c0->shutdown();  // the connection breaks
    wire::Start bad{0, Peer::salt()};
    if (which == 0) bad.position = 5000;  // the destination sent nothing: nobody received 5000 bytes
    else bad.salt[3] ^= 1;                // another salt is another stream's, or a forgery
    auto p = connect_pair(true);
    dst.link->offer(std::move(p.server), bad);
    EncryptedChannel::Batch b;
    auto st = p.client->receive(b, nullptr, 3000);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kPeerError);
    EXPECT_NE(st.error().message().find("resume refused"), std::string::npos) << st.error().message();
    auto d = dst_run.get();
    ASSERT_FALSE(d.ok()) << which;
    EXPECT_EQ(d.error().code, ErrorCode::kResumeRefused) << d.error().text();
  }
}

// An honest resume after the stream completed is refused on that connection.
TEST(StreamLink, RefusesAResumeAfterTheEnd) {
  Side dst(MigrationRole::kDestination, fast());
  Peer peer;
  peer.add(pattern(1000));
  auto first = connect_pair();
  auto c0 = std::move(first.client);
  auto dst_run = std::async(std::launch::async, [&] {
    wire::Start s{0, Peer::salt()};
    return dst.link->run(std::move(first.server), &s, nullptr);
  });
  ASSERT_TRUE(c0->send_start({0, Peer::salt()}).ok());
  c0->shutdown();  // the connection breaks before any DATA
  // The stream is still there for an honest resume: position 0 (the
  // destination sent nothing); the peer's data starts at 0.
  {
    auto p = connect_pair(true);
    ASSERT_TRUE(p.client->send_start({0, Peer::salt()}).ok());
    dst.link->offer(std::move(p.server), {0, Peer::salt()});
    auto ss = server_start_info(*p.client);
    EXPECT_EQ(ss.position, 0u);
    ASSERT_TRUE(peer.send_from(*p.client, 0).ok());
    EXPECT_EQ(read_n(dst.qemu.get(), 1000).size(), 1000u);
    ASSERT_TRUE(p.client->send_fin(peer.sealer.finish()).ok());
    ::shutdown(dst.qemu.get(), SHUT_WR);
    EXPECT_TRUE(fin_and_ack(*p.client, ss.salt, 1001));
    ASSERT_TRUE(p.client->send_ack(1).ok());
    auto d = dst_run.get();
    EXPECT_TRUE(d.ok()) << d.error().text();
  }
  // The stream completed: nothing to resume.
  auto p = connect_pair(true);
  dst.link->offer(std::move(p.server), {1001, Peer::salt()});
  EncryptedChannel::Batch b;
  auto st = p.client->receive(b, nullptr, 3000);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kPeerError);
  EXPECT_NE(st.error().message().find("has completed"), std::string::npos) << st.error().message();
}

// The connection breaks after both FINs crossed but before the ACK of the
// link's FIN came back: the link waits for a resume, until the controller
// ends the migration; then the stream is complete, not failed.
TEST(StreamLink, SettlesAtTheEndWhenOnlyAnAckWasLost) {
  Side dst(MigrationRole::kDestination, fast());
  Peer peer;
  auto first = connect_pair();
  auto c0 = std::move(first.client);
  auto dst_run = std::async(std::launch::async, [&] {
    wire::Start s{0, Peer::salt()};
    return dst.link->run(std::move(first.server), &s, nullptr);
  });
  ASSERT_TRUE(c0->send_start({0, Peer::salt()}).ok());
  ASSERT_TRUE(c0->send_fin(peer.sealer.finish()).ok());  // the source QEMU sent nothing and closed
  ::shutdown(dst.qemu.get(), SHUT_WR);                   // so did the destination QEMU
  auto ss = server_start_info(*c0);
  ASSERT_TRUE(fin_and_ack(*c0, ss.salt, 1));
  EXPECT_FALSE(dst.link->settle_at_end());  // still connected: nothing to settle
  c0->shutdown();                           // the ACK of its FIN never goes out
  for (int i = 0; i < 100 && !dst.link->counters().reconnecting; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(dst.link->counters().reconnecting);
  EXPECT_TRUE(dst.link->settle_at_end());
  auto d = dst_run.get();
  EXPECT_TRUE(d.ok()) << d.error().text();
}

// A delivery bug (the test hook) that repeats or skips a record after it
// was authenticated fails the stream with a named integrity error, on both
// sides, instead of completing.
TEST(StreamLink, IntegrityChecksCatchARepeatedOrSkippedRecord) {
  for (auto fault : {LinkOptions::Fault::kRepeatRecord, LinkOptions::Fault::kSkipRecord}) {
    for (uint64_t which : {uint64_t(3), uint64_t(0)}) {
      LinkOptions o = fast();
      o.fault = fault;
      o.fault_record = which;
      Pair p(o);
      p.start();
      std::thread writer([&] {
        // Small writes: many records.
        auto data = pattern(2 << 20);
        for (size_t off = 0; off < data.size(); off += 65536) {
          if (::write(p.src.qemu.get(), data.data() + off, 65536) <= 0) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ::shutdown(p.src.qemu.get(), SHUT_WR);
      });
      std::thread reader([&] { (void)read_to_eof(p.dst.qemu.get(), 0); });
      ::shutdown(p.dst.qemu.get(), SHUT_WR);
      auto [s, d] = p.finish();
      writer.join();
      reader.join();
      ASSERT_FALSE(d.ok());
      EXPECT_EQ(d.error().code, ErrorCode::kIntegrity) << d.error().text();
      ASSERT_FALSE(s.ok());
      EXPECT_EQ(s.error().code, ErrorCode::kPeerError);
      EXPECT_NE(s.error().message().find("stream integrity check failed"), std::string::npos) << s.error().message();
    }
  }
}

// Acknowledged positions never go down, not even within one batch of records
// (a peer that holds the key, sealing its own records), and our own ACKs
// never go down on the wire, whichever thread sends them.
TEST(EncryptedChannel, AnAckBelowAnEarlierOneFails) {
  auto keys = handshake_pair(fixed_secrets());
  auto [a, b] = socket_pair();
  auto server = EncryptedChannel::create(std::move(b), std::move(keys.server), "main").value();
  auto peer = ControlSealer::create(std::move(keys.client.tx)).value();
  uint8_t start[wire::kStartRecordSize], ack1[wire::kAckRecordSize], ack2[wire::kAckRecordSize];
  ASSERT_TRUE(peer.seal_start({0, Peer::salt()}, start).ok());
  ASSERT_TRUE(peer.seal_ack(5, ack1).ok());
  ASSERT_TRUE(peer.seal_ack(3, ack2).ok());
  std::vector<uint8_t> wire_bytes(start, start + sizeof start);
  wire_bytes.insert(wire_bytes.end(), ack1, ack1 + sizeof ack1);
  wire_bytes.insert(wire_bytes.end(), ack2, ack2 + sizeof ack2);
  write_all_fd(a.get(), wire_bytes);
  EncryptedChannel::Batch batch;
  ASSERT_TRUE(server->receive(batch, nullptr, 1000).ok());
  ASSERT_TRUE(batch.start);
  auto st = server->receive(batch, nullptr, 1000);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kBadAck) << st.error().text();

  // Ours: a stale position read before a higher one went out is raised to it.
  auto p = connect_pair();
  ASSERT_TRUE(p.client->send_start({0, Peer::salt()}).ok());
  ASSERT_TRUE(p.client->send_ack(5).ok());
  ASSERT_EQ(p.client->try_send_ack(3).value(), EncryptedChannel::TrySend::kSent);
  ASSERT_TRUE(p.client->send_ack(4).ok());
  ASSERT_TRUE(p.server->receive(batch, nullptr, 1000).ok());
  ASSERT_TRUE(batch.start);
  // All three (in one batch or more) say 5: the receiver's check, which
  // fails on any decrease, passes.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(p.server->receive(batch, nullptr, 1000).ok());
  ASSERT_TRUE(batch.ack);
  EXPECT_EQ(batch.ack_first, 5u);
  EXPECT_EQ(batch.ack_last, 5u);
  EXPECT_EQ(p.server->control_records_received(), 4u);
}

// The resend budget is daemon-wide: a stream that cannot get its minimum
// does not start, and says why.
TEST(StreamLink, ResendBudgetSpent) {
  Side src(MigrationRole::kSource, fast(), BufferPool::kChunk);  // less than the minimum
  auto first = connect_pair();
  auto st = src.link->run(std::move(first.client), nullptr, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kLimit);
  EXPECT_NE(st.error().message().find("resend budget"), std::string::npos);
}

// The resend log hands out records only from their boundaries, and refuses
// a start below what it keeps.
TEST(ResendLog, BoundariesAndRelease) {
  BufferPool pool(64 << 20);
  {
    ResendLog log(pool);
    ASSERT_TRUE(log.reserve_minimum());
    uint64_t pos = 0;
    std::vector<uint64_t> starts;
    for (int i = 0; i < 40; i++) {
      uint32_t cap = 0;
      uint8_t* p = log.reserve(&cap);
      ASSERT_NE(p, nullptr);
      uint32_t len = std::min<uint32_t>(cap, 100000 + i * 7919);
      starts.push_back(pos);
      log.commit(len);
      pos += len;
    }
    EXPECT_EQ(log.end(), pos);
    for (uint64_t s : starts) EXPECT_TRUE(log.boundary(s));
    EXPECT_FALSE(log.boundary(starts[5] + 1));
    EXPECT_TRUE(log.run_from(starts[7]).ok());
    EXPECT_FALSE(log.run_from(starts[7] + 3).ok());
    log.release_to(starts[10] + 5);  // inside record 10: it stays
    EXPECT_EQ(log.begin(), starts[10]);
    EXPECT_FALSE(log.run_from(starts[9]).ok());  // below what is kept: an error, never a silent move
    EXPECT_TRUE(log.run_from(starts[10]).ok());
    log.release_to(pos);
    EXPECT_EQ(log.begin(), pos);
  }
  EXPECT_EQ(pool.used(), 0u);  // everything went back
}

}  // namespace
}  // namespace encmig
