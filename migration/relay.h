// The relay: one stream's two directions between a local QEMU socket and an
// EncryptedChannel to the peer daemon, plus the client side of the handshake
// over a real socket.
#pragma once
#include <memory>

#include "migration/channel.h"
#include "migration/session.h"

namespace encmig {

// Runs the handshake as client on a connected TCP socket.
Result<std::unique_ptr<EncryptedChannel>> client_handshake(Fd tcp, MigrationSecrets secrets, wire::Kind kind,
                                                           uint32_t index, const std::string& name,
                                                           int timeout_ms);

// Relays both directions until both have ended. Local to peer runs on a
// second thread, peer to local on the caller's. Returns the first error; the
// caller fails the migration with it.
Status relay_stream(EncryptedChannel& peer, Stream& stream);

// Local UNIX socket buffers: large enough that one read drains what QEMU
// queued, so records grow under load and stay small when little is queued.
constexpr int kLocalSocketBuffer = 4 << 20;

}  // namespace encmig
