#include "migration/relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

namespace encmig {

namespace {

// How a direction ended when it failed: whose fault, for whether the peer
// should hear about it.
struct Outcome {
  Status status;
  bool tell_peer = false;  // our side's cause, or the peer broke the protocol
};

bool peer_broke_protocol(ErrorCode c) {
  switch (c) {
    case ErrorCode::kRecordTooLarge: case ErrorCode::kBadRecordType: case ErrorCode::kCounterMismatch:
    case ErrorCode::kAuthFailed: case ErrorCode::kDataAfterFin: case ErrorCode::kBadFin: case ErrorCode::kRecordLimit:
      return true;
    default:
      return false;
  }
}

Outcome pump_local_to_peer(int local, EncryptedChannel& peer, Stream& s, MigrationRole role) {
  std::vector<uint8_t> buf(EncryptedChannel::kHeadroom + wire::kMaxRecordPayload + EncryptedChannel::kTailroom);
  uint8_t* payload = buf.data() + EncryptedChannel::kHeadroom;
  for (;;) {
    ssize_t n = ::read(local, payload, wire::kMaxRecordPayload);
    if (n > 0) {
      if (auto st = peer.send_data(buf.data(), uint32_t(n)); !st)
        return {Error{st.error().code, "to peer: " + st.error().message()}, false};
      s.bytes_out.fetch_add(uint64_t(n), std::memory_order_relaxed);
      s.records_out.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF, or a reset because QEMU closed with our data unread: QEMU is done
    // with this stream, and the peer learns it from an authenticated FIN.
    // Except on the destination, when QEMU exited (killed, crashed): that is
    // no end of stream, and the source must not take it for one. (On the
    // source, libvirt may hold the socket and close it as it kills QEMU after
    // a completed migration; there the destination QEMU is the judge.)
    if (n == 0 || errno == ECONNRESET) {
      if (role == MigrationRole::kDestination && s.qemu.exited_within(20))
        return {make_error(ErrorCode::kIo, "QEMU (pid " + std::to_string(s.qemu.pid()) + ") exited with the stream open, after " +
                                               std::to_string(s.bytes_out.load()) + " bytes"),
                true};
      return {peer.send_fin(), false};
    }
    return {make_error(ErrorCode::kIo, "local read: " + errno_text(errno)), true};
  }
}

Outcome pump_peer_to_local(EncryptedChannel& peer, int local, Stream& s, MigrationRole role) {
  EncryptedChannel::Batch b;
  bool local_gone = false;
  for (;;) {
    if (auto st = peer.receive(b); !st) return {st, peer_broke_protocol(st.error().code)};
    if (b.count > 0 && !local_gone) {
      if (auto st = writev_all(local, b.iov, b.count); !st) {
        // The destination QEMU must take every byte: if it stopped (it failed,
        // or it died), the migration cannot succeed, and the source must know now.
        if (role == MigrationRole::kDestination)
          return {make_error(ErrorCode::kIo, "destination QEMU stopped taking data (" + st.error().detail + "), " +
                                                 std::to_string(b.bytes) + " bytes undelivered"),
                  true};
        // The source QEMU may close its end first (after completion): keep
        // authenticating the peer's records to its FIN, and drop the data.
        local_gone = true;
      }
    }
    s.bytes_in.fetch_add(b.bytes, std::memory_order_relaxed);
    s.records_in.fetch_add(uint64_t(b.count), std::memory_order_relaxed);
    if (b.fin) {
      ::shutdown(local, SHUT_WR);
      return {peer.expect_eof(), false};
    }
  }
}

}  // namespace

Status relay_stream(EncryptedChannel& peer, Stream& stream, MigrationRole role) {
  int local = stream.local.get();
  int size = kLocalSocketBuffer;
  setsockopt(local, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(local, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  stream.state = StreamState::kRelaying;
  // Whichever direction fails first names the cause and, when the cause is
  // ours or a protocol violation, tells the peer in an ERROR record before the
  // stream goes down, so its log names the cause, not a truncation. Then it
  // shuts the stream down so the other direction unblocks.
  std::atomic<int> first{0};
  auto failed = [&](int who, const Outcome& o) {
    int none = 0;
    if (first.compare_exchange_strong(none, who) && o.tell_peer) {
      if (peer.send_error(o.status.error().code, peer.name() + ": " + o.status.error().text())) peer.linger(200);
    }
    stream.shutdown_all();
  };
  Outcome out;
  std::thread t([&] {
    out = pump_local_to_peer(local, peer, stream, role);
    if (!out.status.ok()) failed(2, out);
  });
  Outcome in = pump_peer_to_local(peer, local, stream, role);
  if (!in.status.ok()) failed(1, in);
  t.join();
  // The peer's own account (an ERROR record) beats our symptom of it, such as
  // a broken pipe when it closed right after telling us why.
  if (!in.status.ok() && in.status.error().code == ErrorCode::kPeerError)
    return Error{ErrorCode::kPeerError, peer.name() + "-in: " + in.status.error().message()};
  if (first == 1) return Error{in.status.error().code, peer.name() + "-in: " + in.status.error().message()};
  if (first == 2) return Error{out.status.error().code, peer.name() + "-out: " + out.status.error().message()};
  return {};
}

}  // namespace encmig
