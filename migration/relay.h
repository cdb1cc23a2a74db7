// The relay: one stream's two directions between a local QEMU socket and an
// EncryptedChannel to the peer daemon.
#pragma once
#include "migration/channel.h"
#include "migration/session.h"

namespace encmig {

// Relays both directions until both have ended. Local to peer runs on a
// second thread, peer to local on the caller's. Returns the first error; the
// caller fails the migration with it. Whichever side fails first tells the
// peer why in an ERROR record. On the destination, QEMU must take every byte:
// a write it refuses fails the migration at once.
Status relay_stream(EncryptedChannel& peer, Stream& stream, MigrationRole role);

// Local UNIX socket buffers: large enough that one read drains what QEMU
// queued, so records grow under load and stay small when little is queued.
// relay_stream sets them on the stream's local socket.
constexpr int kLocalSocketBuffer = 4 << 20;

}  // namespace encmig
