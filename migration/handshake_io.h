// The handshake over a real socket, for both roles and for the capability
// probe: the one place that turns a connected TCP socket into an
// EncryptedChannel (as QEMU's QIOChannelTLS owns its handshake). The state
// machines themselves (migration/handshake.h) never touch a socket.
//
// Every exchange here runs against one deadline for the whole handshake, not
// a timeout per read, so a peer that drips bytes cannot hold a connection.
#pragma once
#include <memory>
#include <string>

#include "migration/channel.h"
#include "migration/handshake.h"
#include "migration/socket.h"

namespace encmig {

// Client role (source daemon): sends the hello, verifies the server's
// confirmation, sends its own, and returns the channel named `name`, which
// then owns the socket. On failure `tcp` still owns it.
Result<std::unique_ptr<EncryptedChannel>> client_handshake(Fd&& tcp, MigrationSecrets secrets, wire::Kind kind,
                                                           uint32_t index, std::string name, Deadline deadline);

// Server role (destination daemon), step by step, so that its owner decides
// between the steps which migration a hello belongs to.
class ServerSocketHandshake {
 public:
  ServerSocketHandshake(Fd tcp, Deadline deadline);
  int fd() const { return tcp_.get(); }

  // Reads and checks the ClientHello. A malformed hello is answered with an
  // Alert (alerted() turns true) before the error is returned.
  Result<wire::Hello> read_hello();
  // Answers a probe hello and ends the exchange.
  void answer_probe(const wire::ProbeReply& reply);
  // Answers with an Alert and ends the exchange.
  void reject(ErrorCode code, const std::string& text);
  // Sends ServerHello || ServerConfirm for `secrets`, verifies the client's
  // confirmation (a wrong one is answered with an Alert), and hands the socket
  // to the returned channel.
  Result<std::unique_ptr<EncryptedChannel>> complete(const MigrationSecrets& secrets, std::string name);

  bool alerted() const { return alerted_; }

 private:
  Fd tcp_;
  Deadline deadline_;
  ServerHandshake hs_ = ServerHandshake::create();
  bool alerted_ = false;
};

// Asks a daemon's data port what it can do (docs/protocol.md, section 9).
Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms);

}  // namespace encmig
