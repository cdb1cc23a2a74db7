#include "migration/handshake.h"

#include <algorithm>
#include <cstring>

#include "crypto/ct.h"
#include "crypto/random.h"

namespace encmig {

namespace {
Result<SessionKeys> make_keys(ConnectionSecrets& cs, bool client, const wire::Hello& ch, const wire::Hello& sh) {
  auto c2s = TrafficKeys::create(std::move(cs.c2s_traffic));
  if (!c2s) return c2s.error();
  auto s2c = TrafficKeys::create(std::move(cs.s2c_traffic));
  if (!s2c) return s2c.error();
  SessionKeys k;
  k.tx = client ? std::move(c2s.value()) : std::move(s2c.value());
  k.rx = client ? std::move(s2c.value()) : std::move(c2s.value());
  k.client_hello = ch;
  k.server_hello = sh;
  return k;
}
}  // namespace

// ---- client ----

Result<ClientHandshake> ClientHandshake::create(MigrationSecrets secrets, wire::Kind kind, uint32_t stream_index,
                                                const wire::Random* fixed_random, uint32_t flags) {
  if (flags & ~wire::kHelloFlagResume) return make_error(ErrorCode::kInvalidArgument, "hello flags");
  ClientHandshake c;
  c.sent_.version = wire::kVersion;
  c.sent_.flags = flags;
  c.sent_.kind = kind;
  c.sent_.role = wire::Role::kClient;
  c.sent_.stream_index = stream_index;
  c.sent_.migration_id = secrets.id;
  if (fixed_random) {
    c.sent_.random = *fixed_random;
  } else if (auto st = random_nonce_bytes(c.sent_.random.data(), c.sent_.random.size()); !st) {
    return st.error();
  }
  c.secrets_ = std::move(secrets);
  wire::encode_hello(c.sent_, c.hello_.data());
  return c;
}

size_t ClientHandshake::wanted() const {
  if (state_ != State::kAwaitServer) return 0;
  // The first four bytes decide between a ServerHello flight and an Alert.
  if (have_ < 4) return 4 - have_;
  if (wire::magic_of(in_.data()) == wire::kAlertMagic) return wire::kAlertSize - have_;
  return wire::kServerFlightSize - have_;
}

Result<size_t> ClientHandshake::consume(const uint8_t* data, size_t len) {
  if (state_ == State::kFailed) return make_error(ErrorCode::kInternal, "handshake already failed");
  size_t used = 0;
  while (state_ == State::kAwaitServer && used < len) {
    size_t n = std::min(wanted(), len - used);
    std::memcpy(in_.data() + have_, data + used, n);
    have_ += n;
    used += n;
    if (wanted() != 0) continue;
    if (wire::magic_of(in_.data()) == wire::kAlertMagic) {
      state_ = State::kFailed;
      auto a = wire::decode_alert(in_.data());
      return make_error(ErrorCode::kPeerAlert, std::string(error_code_name(a->code)) + " (" + a->text + ")");
    }
    if (auto st = on_server_flight(); !st) {
      state_ = State::kFailed;
      return st.error();
    }
    state_ = State::kDone;
  }
  return used;
}

Status ClientHandshake::on_server_flight() {
  auto sh = wire::decode_hello(in_.data(), wire::Role::kServer);
  if (!sh) return sh.error();
  if (sh->kind != sent_.kind || sh->stream_index != sent_.stream_index || sh->migration_id != sent_.migration_id ||
      sh->version != sent_.version || sh->flags != sent_.flags)
    return make_error(ErrorCode::kHelloMismatch);
  auto cs = ConnectionSecrets::derive(secrets_, hello_.data(), in_.data());
  if (!cs) return cs.error();
  if (!ct_equal(cs->s2c_confirm.data(), in_.data() + wire::kHelloSize, wire::kConfirmSize))
    return make_error(ErrorCode::kKeyConfirmFailed, "server confirmation");
  confirm_ = cs->c2s_confirm;
  auto keys = make_keys(cs.value(), true, sent_, sh.value());
  if (!keys) return keys.error();
  keys_.emplace(std::move(keys.value()));
  secrets_ = MigrationSecrets{};  // the long-term key is no longer needed here
  return {};
}

Result<SessionKeys> ClientHandshake::take_keys() {
  if (state_ != State::kDone || !keys_) return make_error(ErrorCode::kNotReady, "client handshake not done");
  SessionKeys k = std::move(*keys_);
  keys_.reset();
  return k;
}

// ---- server ----

size_t ServerHandshake::wanted() const {
  switch (state_) {
    case State::kAwaitHello: return wire::kHelloSize - have_;
    case State::kAwaitConfirm: return wire::kConfirmSize - have_;
    default: return 0;
  }
}

Result<size_t> ServerHandshake::consume(const uint8_t* data, size_t len) {
  if (state_ == State::kFailed) return make_error(ErrorCode::kInternal, "handshake already failed");
  size_t used = 0;
  while (used < len && (state_ == State::kAwaitHello || state_ == State::kAwaitConfirm)) {
    size_t n = std::min(wanted(), len - used);
    uint8_t* dst = state_ == State::kAwaitHello ? client_raw_.data() : in_confirm_.data();
    std::memcpy(dst + have_, data + used, n);
    have_ += n;
    used += n;
    if (wanted() != 0) continue;
    have_ = 0;
    if (state_ == State::kAwaitHello) {
      auto h = wire::decode_hello(client_raw_.data(), wire::Role::kClient);
      if (!h) {
        state_ = State::kFailed;
        return h.error();
      }
      client_ = h.value();
      state_ = State::kNeedSecrets;
    } else {
      if (!ct_equal(conn_->c2s_confirm.data(), in_confirm_.data(), wire::kConfirmSize)) {
        state_ = State::kFailed;
        return make_error(ErrorCode::kKeyConfirmFailed, "client confirmation");
      }
      auto sh = wire::decode_hello(server_raw_.data(), wire::Role::kServer);
      auto keys = make_keys(*conn_, false, client_, sh.value());
      conn_.reset();
      if (!keys) {
        state_ = State::kFailed;
        return keys.error();
      }
      keys_.emplace(std::move(keys.value()));
      state_ = State::kDone;
    }
  }
  return used;
}

Status ServerHandshake::accept(const MigrationSecrets& secrets, const wire::Random* fixed_random) {
  if (state_ != State::kNeedSecrets) return make_error(ErrorCode::kInternal, "accept() out of order");
  if (secrets.id != client_.migration_id) return make_error(ErrorCode::kUnknownMigration);
  wire::Hello sh = client_;
  sh.role = wire::Role::kServer;
  if (fixed_random) {
    sh.random = *fixed_random;
  } else if (auto st = random_nonce_bytes(sh.random.data(), sh.random.size()); !st) {
    return st.error();
  }
  wire::encode_hello(sh, server_raw_.data());
  auto cs = ConnectionSecrets::derive(secrets, client_raw_.data(), server_raw_.data());
  if (!cs) return cs.error();
  std::memcpy(out_.data(), server_raw_.data(), wire::kHelloSize);
  std::memcpy(out_.data() + wire::kHelloSize, cs->s2c_confirm.data(), wire::kConfirmSize);
  out_len_ = wire::kHelloSize + wire::kConfirmSize;
  conn_.emplace(std::move(cs.value()));
  state_ = State::kAwaitConfirm;
  return {};
}

void ServerHandshake::reject(ErrorCode code, const std::string& text) {
  wire::Alert a;
  a.code = code;
  a.text = text;
  wire::encode_alert(a, out_.data());
  out_len_ = wire::kAlertSize;
  conn_.reset();
  state_ = State::kFailed;
}

void ServerHandshake::answer_probe(const wire::ProbeReply& reply) {
  wire::encode_probe_reply(reply, out_.data());
  out_len_ = wire::kProbeReplySize;
  state_ = State::kFailed;  // a probe never carries data
}

Result<SessionKeys> ServerHandshake::take_keys() {
  if (state_ != State::kDone || !keys_) return make_error(ErrorCode::kNotReady, "server handshake not done");
  SessionKeys k = std::move(*keys_);
  keys_.reset();
  return k;
}

}  // namespace encmig
