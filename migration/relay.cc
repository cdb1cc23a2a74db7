#include "migration/relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

namespace encmig {

namespace {

Status pump_local_to_peer(int local, EncryptedChannel& peer, Stream& s) {
  std::vector<uint8_t> buf(EncryptedChannel::kHeadroom + wire::kMaxRecordPayload + EncryptedChannel::kTailroom);
  uint8_t* payload = buf.data() + EncryptedChannel::kHeadroom;
  for (;;) {
    ssize_t n = ::read(local, payload, wire::kMaxRecordPayload);
    if (n > 0) {
      if (auto st = peer.send_data(buf.data(), uint32_t(n)); !st) return Error{st.error().code, "to peer: " + st.error().message()};
      s.bytes_out.fetch_add(uint64_t(n), std::memory_order_relaxed);
      s.records_out.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF, or a reset because QEMU closed with our data unread: either way
    // QEMU is done with this stream. The peer learns it from an authenticated FIN.
    if (n == 0 || errno == ECONNRESET) return peer.send_fin();
    return make_error(ErrorCode::kIo, "local read: " + errno_text(errno));
  }
}

Status pump_peer_to_local(EncryptedChannel& peer, int local, Stream& s) {
  EncryptedChannel::Batch b;
  bool local_gone = false;
  for (;;) {
    if (auto st = peer.receive(b); !st) return st;
    if (b.count > 0 && !local_gone) {
      // QEMU may close its end first (e.g. the source after completion): keep
      // authenticating the peer's records to its FIN, and drop the data.
      if (!writev_all(local, b.iov, b.count).ok()) local_gone = true;
    }
    s.bytes_in.fetch_add(b.bytes, std::memory_order_relaxed);
    s.records_in.fetch_add(uint64_t(b.count), std::memory_order_relaxed);
    if (b.fin) {
      ::shutdown(local, SHUT_WR);
      return peer.expect_eof();
    }
  }
}

}  // namespace

Status relay_stream(EncryptedChannel& peer, Stream& stream) {
  int local = stream.local.get();
  int size = kLocalSocketBuffer;
  setsockopt(local, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(local, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  stream.state = StreamState::kRelaying;
  // Whichever direction fails first names the cause; it shuts the stream
  // down so the other direction unblocks.
  std::atomic<int> first{0};
  auto failed = [&](int who) {
    int none = 0;
    first.compare_exchange_strong(none, who);
    stream.shutdown_all();
  };
  // A record from the peer broke the protocol: tell the peer why before the
  // stream goes down, so its log names the cause, not a truncation.
  auto tell_peer = [&](const Error& e) {
    switch (e.code) {
      case ErrorCode::kRecordTooLarge: case ErrorCode::kBadRecordType: case ErrorCode::kCounterMismatch:
      case ErrorCode::kAuthFailed: case ErrorCode::kDataAfterFin: case ErrorCode::kBadFin:
      case ErrorCode::kRecordLimit:
        if (peer.send_error(e.code, peer.name() + ": " + e.detail)) peer.linger(200);
        break;
      default:
        break;
    }
  };
  Status out;
  std::thread t([&] {
    out = pump_local_to_peer(local, peer, stream);
    if (!out.ok()) failed(2);
  });
  Status in = pump_peer_to_local(peer, local, stream);
  if (!in.ok()) {
    tell_peer(in.error());
    failed(1);
  }
  t.join();
  // The peer's own account (an ERROR record) beats our symptom of it, such as
  // a broken pipe when it closed right after telling us why.
  if (!in.ok() && in.error().code == ErrorCode::kPeerError)
    return Error{in.error().code, peer.name() + "-in: " + in.error().message()};
  if (first == 1) return Error{in.error().code, peer.name() + "-in: " + in.error().message()};
  if (first == 2) return Error{out.error().code, peer.name() + "-out: " + out.error().message()};
  return {};
}

}  // namespace encmig
