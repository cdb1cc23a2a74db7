// Hello and key confirmation, as byte-driven state machines with no socket.
//
// Neither side releases or accepts VM data before it has verified the other
// side's confirmation over the transcript of both hellos (docs/protocol.md,
// "Handshake").
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "migration/key_schedule.h"
#include "migration/wire.h"

namespace encmig {

struct SessionKeys {
  TrafficKeys tx;
  TrafficKeys rx;
  wire::Hello client_hello;
  wire::Hello server_hello;
};

class ClientHandshake {
 public:
  enum class State { kAwaitServer, kDone, kFailed };

  // `fixed_random` is for known-answer tests only. `flags`
  // (kHelloFlagResume) go into the hello, and so into T.
  static Result<ClientHandshake> create(MigrationSecrets secrets, wire::Kind kind, uint32_t stream_index,
                                        const wire::Random* fixed_random = nullptr, uint32_t flags = 0);

  // The 64-byte ClientHello, to send first.
  std::span<const uint8_t> hello() const { return hello_; }
  // Feeds bytes from the server; returns how many were consumed. Errors are
  // final (kPeerAlert carries the server's alert text).
  Result<size_t> consume(const uint8_t* data, size_t len);
  State state() const { return state_; }
  // How many more bytes the next step needs.
  size_t wanted() const;
  // Valid once done: the 32-byte ClientConfirm to send.
  std::span<const uint8_t> confirm() const { return confirm_; }
  Result<SessionKeys> take_keys();

 private:
  Status on_server_flight();
  MigrationSecrets secrets_;
  wire::Hello sent_;
  std::array<uint8_t, wire::kHelloSize> hello_{};
  std::array<uint8_t, wire::kServerFlightSize> in_{};
  size_t have_ = 0;
  std::array<uint8_t, wire::kConfirmSize> confirm_{};
  std::optional<SessionKeys> keys_;
  State state_ = State::kAwaitServer;
};

class ServerHandshake {
 public:
  enum class State { kAwaitHello, kNeedSecrets, kAwaitConfirm, kDone, kFailed };

  static ServerHandshake create() { return ServerHandshake(); }

  Result<size_t> consume(const uint8_t* data, size_t len);
  State state() const { return state_; }
  size_t wanted() const;
  // Valid from kNeedSecrets on.
  const wire::Hello& client_hello() const { return client_; }
  // Answer a hello with the migration's secrets: produces ServerHello +
  // ServerConfirm in output().
  Status accept(const MigrationSecrets& secrets, const wire::Random* fixed_random = nullptr);
  // Answer a hello with an alert: produces an Alert in output().
  void reject(ErrorCode code, const std::string& text);
  // Answer a probe hello.
  void answer_probe(const wire::ProbeReply& reply);
  std::span<const uint8_t> output() const { return {out_.data(), out_len_}; }
  Result<SessionKeys> take_keys();

 private:
  ServerHandshake() = default;
  wire::Hello client_;
  std::array<uint8_t, wire::kHelloSize> client_raw_{};
  std::array<uint8_t, wire::kHelloSize> server_raw_{};
  size_t have_ = 0;
  std::array<uint8_t, wire::kServerFlightSize> out_{};
  size_t out_len_ = 0;
  std::array<uint8_t, wire::kConfirmSize> in_confirm_{};
  std::optional<ConnectionSecrets> conn_;
  std::optional<SessionKeys> keys_;
  State state_ = State::kAwaitHello;
};

}  // namespace encmig
