#include "migration/session.h"

#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "crypto/encoding.h"
#include "migration/log.h"

namespace encmig {

using nlohmann::json;

const char* state_name(MigrationState s) {
  switch (s) {
    case MigrationState::kArmed: return "armed";
    case MigrationState::kActive: return "active";
    case MigrationState::kCompleted: return "completed";
    case MigrationState::kFailed: return "failed";
    case MigrationState::kCancelled: return "cancelled";
  }
  return "unknown";
}

const char* stream_state_name(StreamState s) {
  switch (s) {
    case StreamState::kHandshake: return "handshake";
    case StreamState::kRelaying: return "relaying";
    case StreamState::kClosed: return "closed";
    case StreamState::kFailed: return "failed";
  }
  return "unknown";
}

std::string id_hex(const wire::MigrationId& id) { return hex_encode(id); }

Result<wire::MigrationId> id_from_hex(const std::string& s) {
  wire::MigrationId id{};
  if (auto st = hex_decode(s, id); !st)
    return make_error(ErrorCode::kInvalidArgument, "migration id must be 32 lower-case hex digits: " + st.error().detail);
  return id;
}

std::string stream_name(wire::Kind kind, uint32_t index) {
  switch (kind) {
    case wire::Kind::kMigration: return index == 0 ? "main" : "multifd-" + std::to_string(index - 1);
    case wire::Kind::kNbd: return "nbd-" + std::to_string(index);
    case wire::Kind::kProbe: return "probe";
  }
  return "stream-" + std::to_string(index);
}

void Stream::shutdown_all() {
  if (local.valid()) ::shutdown(local.get(), SHUT_RDWR);
  if (peer_fd >= 0) ::shutdown(peer_fd, SHUT_RDWR);
}

Migration::Migration(MigrationConfig cfg, MigrationSecrets secrets, EventFn events, FailureFn on_failure)
    : cfg_(std::move(cfg)), id_hex_(id_hex(cfg_.id)), events_(std::move(events)), on_failure_(std::move(on_failure)),
      secrets_(std::move(secrets)) {}

Migration::~Migration() {
  std::lock_guard<std::mutex> g(mu_);
  teardown_locked();
}

MigrationState Migration::state() const {
  std::lock_guard<std::mutex> g(mu_);
  return state_;
}

Result<MigrationSecrets> Migration::secrets() const {
  std::lock_guard<std::mutex> g(mu_);
  if (secrets_.key.empty()) return make_error(ErrorCode::kCancelled, "migration " + id_hex_ + " has ended");
  return secrets_.clone();
}

Result<std::shared_ptr<Stream>> Migration::add_stream(wire::Kind kind, uint32_t index) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != MigrationState::kArmed && state_ != MigrationState::kActive)
    return make_error(ErrorCode::kCancelled, std::string("migration is ") + state_name(state_));
  for (auto& s : streams_)
    if (s->kind == kind && s->index == index)
      return make_error(ErrorCode::kDuplicateStream, stream_name(kind, index));
  auto s = std::make_shared<Stream>();
  s->kind = kind;
  s->index = index;
  s->name = stream_name(kind, index);
  streams_.push_back(s);
  if (state_ == MigrationState::kArmed) {
    state_ = MigrationState::kActive;
    emit_state_locked();
  }
  return s;
}

uint32_t Migration::next_source_index(wire::Kind kind) {
  std::lock_guard<std::mutex> g(mu_);
  return next_index_[kind]++;
}

Status Migration::wait_turn(wire::Kind kind, uint32_t index, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  bool ok = turn_cv_.wait_for(lk, timeout, [&] {
    return next_turn_[kind] == index || (state_ != MigrationState::kArmed && state_ != MigrationState::kActive);
  });
  if (state_ != MigrationState::kArmed && state_ != MigrationState::kActive)
    return make_error(ErrorCode::kCancelled, std::string("migration is ") + state_name(state_));
  if (!ok)
    return make_error(ErrorCode::kNotReady, "stream " + stream_name(kind, index) + " waited " +
                                                std::to_string(timeout.count()) + " ms for stream " +
                                                stream_name(kind, next_turn_[kind]));
  return {};
}

void Migration::turn_done(wire::Kind kind) {
  std::lock_guard<std::mutex> g(mu_);
  next_turn_[kind]++;
  turn_cv_.notify_all();
}

void Migration::fail(ErrorCode code, const std::string& stream, const std::string& detail) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ == MigrationState::kFailed || state_ == MigrationState::kCancelled || state_ == MigrationState::kCompleted)
    return;
  state_ = code == ErrorCode::kCancelled ? MigrationState::kCancelled : MigrationState::kFailed;
  error_ = stream + ": " + (detail.empty() ? std::string(error_code_name(code)) : detail);
  // One line, naming the migration, the stream and the reason; never key bytes.
  log_line("migration " + id_hex_ + (state_ == MigrationState::kCancelled ? " cancelled" : " failed") + ": stream " +
           error_);
  if (on_failure_) on_failure_(code);
  teardown_locked();
  emit_state_locked();
}

void Migration::stream_closed(const std::shared_ptr<Stream>& s) {
  std::lock_guard<std::mutex> g(mu_);
  s->shutdown_all();
  s->peer_fd = -1;
  s->local.reset();
  if (s->state != StreamState::kFailed) s->state = StreamState::kClosed;
  if (events_)
    events_("ENCMIG_STREAM_STATE", json{{"id", id_hex_}, {"stream", s->name}, {"state", "closed"}}.dump());
  if (s->kind != wire::Kind::kMigration || state_ != MigrationState::kActive) return;
  if (cfg_.expected_streams > 0 && ++closed_migration_streams_ >= cfg_.expected_streams) {
    state_ = MigrationState::kCompleted;
    uint64_t bytes = 0;
    for (auto& t : streams_) bytes += t->bytes_in + t->bytes_out;
    log_line("migration " + id_hex_ + " completed: " + std::to_string(streams_.size()) + " streams, " +
             std::to_string(bytes) + " bytes, every stream ended with an authenticated FIN");
    teardown_locked();
    emit_state_locked();
  }
}

void Migration::attach_local(const std::shared_ptr<Stream>& s, Fd local) {
  std::lock_guard<std::mutex> g(mu_);
  s->local = std::move(local);
  if (state_ != MigrationState::kArmed && state_ != MigrationState::kActive) s->shutdown_all();
}

void Migration::end(bool cancelled) {
  if (cancelled) {
    fail(ErrorCode::kCancelled, "all", "cancelled by the controller");
    return;
  }
  std::lock_guard<std::mutex> g(mu_);
  if (state_ == MigrationState::kArmed || state_ == MigrationState::kActive) {
    state_ = MigrationState::kCompleted;
    emit_state_locked();
  }
  teardown_locked();
}

void Migration::add_listener(Fd fd) {
  std::lock_guard<std::mutex> g(mu_);
  listeners_.push_back(std::move(fd));
}

void Migration::teardown_locked() {
  for (auto& l : listeners_) ::shutdown(l.get(), SHUT_RDWR);
  if (cfg_.role == MigrationRole::kSource) {
    if (!cfg_.listen_path.empty()) ::unlink(cfg_.listen_path.c_str());
    if (!cfg_.nbd_listen_path.empty()) ::unlink(cfg_.nbd_listen_path.c_str());
  }
  for (auto& s : streams_) s->shutdown_all();
  secrets_ = MigrationSecrets{};  // wipes the key
  turn_cv_.notify_all();
}

void Migration::emit_state_locked() {
  if (!events_) return;
  json d{{"id", id_hex_}, {"state", state_name(state_)}};
  if (!error_.empty()) d["error"] = error_;
  events_("ENCMIG_MIGRATION_STATE", d.dump());
}

std::string Migration::status_json() const {
  std::lock_guard<std::mutex> g(mu_);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - armed_).count();
  json streams = json::array();
  uint64_t total_out = 0, total_in = 0;
  for (auto& s : streams_) {
    double ss = std::chrono::duration<double>(std::chrono::steady_clock::now() - s->started).count();
    uint64_t o = s->bytes_out, i = s->bytes_in;
    total_out += o;
    total_in += i;
    streams.push_back(json{{"name", s->name},
                           {"kind", std::string(wire::kind_name(s->kind))},
                           {"index", s->index},
                           {"state", stream_state_name(s->state.load())},
                           {"bytes-out", o},
                           {"bytes-in", i},
                           {"records-out", s->records_out.load()},
                           {"records-in", s->records_in.load()},
                           {"rate-out-bps", ss > 0 ? double(o) * 8 / ss : 0.0}});
  }
  json j{{"id", id_hex_},
         {"role", cfg_.role == MigrationRole::kSource ? "source" : "destination"},
         {"state", state_name(state_)},
         {"seconds", secs},
         {"bytes-out", total_out},
         {"bytes-in", total_in},
         {"streams", streams}};
  if (!error_.empty()) j["error"] = error_;
  return j.dump();
}

}  // namespace encmig
