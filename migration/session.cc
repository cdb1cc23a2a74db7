#include "migration/session.h"

#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "crypto/aead.h"
#include "crypto/encoding.h"
#include "migration/log.h"
#include "migration/stream_link.h"

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
    case StreamState::kReconnecting: return "reconnecting";
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

std::string Migration::name_of(wire::Kind kind, uint32_t index) const {
  if (kind == wire::Kind::kMigration && cfg_.postcopy_preempt && cfg_.expected_streams > 1 &&
      index == uint32_t(cfg_.expected_streams - 1))
    return "postcopy-preempt";
  return stream_name(kind, index);
}

void Stream::shutdown_all() {
  if (link) link->abort();
  if (local.valid()) ::shutdown(local.get(), SHUT_RDWR);
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

std::chrono::steady_clock::time_point Migration::ended_at() const {
  std::lock_guard<std::mutex> g(mu_);
  return ended_;
}

Result<MigrationSecrets> Migration::secrets() const {
  std::lock_guard<std::mutex> g(mu_);
  if (secrets_.key.empty()) return make_error(ErrorCode::kCancelled, "migration " + id_hex_ + " has ended");
  return secrets_.clone();
}

bool Migration::holds_key() const {
  std::lock_guard<std::mutex> g(mu_);
  return !secrets_.key.empty();
}

Result<Secret> Migration::stream_secret(wire::Kind kind, uint32_t index, Direction d, const wire::Salt& salt) const {
  std::lock_guard<std::mutex> g(mu_);
  if (secrets_.key.empty()) return make_error(ErrorCode::kCancelled, "migration " + id_hex_ + " has ended");
  return derive_stream_secret(secrets_, kind, index, d, salt);
}

Result<std::shared_ptr<Stream>> Migration::add_stream(wire::Kind kind, uint32_t index, const MigrationTimeouts& t) {
  std::lock_guard<std::mutex> g(mu_);
  if (terminal(state_) || ending_)
    return make_error(ErrorCode::kCancelled, std::string("migration is ") + (ending_ ? "ending" : state_name(state_)));
  const std::string name = name_of(kind, index);
  for (auto& s : streams_)
    if (s->kind == kind && s->index == index) return make_error(ErrorCode::kDuplicateStream, name);
  if (kind == wire::Kind::kMigration && cfg_.expected_streams > 0 && index >= uint32_t(cfg_.expected_streams))
    return make_error(ErrorCode::kInvalidArgument, "stream " + name + " is beyond the " + std::to_string(cfg_.expected_streams) +
                                                       " migration streams armed");
  if (kind == wire::Kind::kNbd && index >= uint32_t(t.max_nbd_streams))
    return make_error(ErrorCode::kInvalidArgument, "stream " + name + ": more than " + std::to_string(t.max_nbd_streams) +
                                                       " NBD connections");
  if (kind != wire::Kind::kMigration && kind != wire::Kind::kNbd)
    return make_error(ErrorCode::kBadKind, name);
  auto s = std::make_shared<Stream>();
  s->kind = kind;
  s->index = index;
  s->name = name;
  streams_.push_back(s);
  if (state_ == MigrationState::kArmed) {
    state_ = MigrationState::kActive;
    last_progress_ = std::chrono::steady_clock::now();
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
  bool ok = turn_cv_.wait_for(lk, timeout, [&] { return next_turn_[kind] == index || terminal(state_); });
  if (terminal(state_)) return make_error(ErrorCode::kCancelled, std::string("migration is ") + state_name(state_));
  if (!ok)
    return make_error(ErrorCode::kNotReady, "stream " + name_of(kind, index) + " waited " +
                                                std::to_string(timeout.count()) + " ms for stream " +
                                                name_of(kind, next_turn_[kind]));
  return {};
}

void Migration::turn_done(wire::Kind kind) {
  std::lock_guard<std::mutex> g(mu_);
  next_turn_[kind]++;
  turn_cv_.notify_all();
}

bool Migration::finish_locked(MigrationState outcome, const std::string& line, ErrorCode code) {
  if (terminal(state_)) return false;
  state_ = outcome;
  ended_ = std::chrono::steady_clock::now();
  if (outcome != MigrationState::kCompleted) error_ = line;
  // One line, naming the migration and the reason; never key bytes.
  log_line("migration " + id_hex_ + " " + state_name(outcome) + ": " + line + (cfg_.context.empty() ? "" : " [" + cfg_.context + "]"));
  if (outcome != MigrationState::kCompleted && on_failure_) on_failure_(code);
  teardown_locked();
  emit_state_locked();
  return true;
}

void Migration::fail(ErrorCode code, const std::string& stream, const std::string& detail) {
  std::lock_guard<std::mutex> g(mu_);
  std::string why = "stream " + stream + ": " + (detail.empty() ? std::string(error_code_name(code)) : detail);
  finish_locked(code == ErrorCode::kCancelled ? MigrationState::kCancelled : MigrationState::kFailed, why, code);
}

int Migration::streams_opened() const {
  std::lock_guard<std::mutex> g(mu_);
  return int(streams_.size());
}

int Migration::streams_open() const {
  std::lock_guard<std::mutex> g(mu_);
  return open_streams_locked();
}

int Migration::open_streams_locked() const {
  int n = 0;
  for (auto& s : streams_)
    if (s->state != StreamState::kClosed && s->state != StreamState::kFailed) n++;
  return n;
}

uint64_t Migration::bytes_locked() const {
  uint64_t bytes = 0;
  for (auto& t : streams_) bytes += t->bytes_in + t->bytes_out;
  return bytes;
}

void Migration::stream_closed(const std::shared_ptr<Stream>& s) {
  std::lock_guard<std::mutex> g(mu_);
  s->shutdown_all();
  s->local.reset();
  if (s->state != StreamState::kFailed) s->state = StreamState::kClosed;
  if (events_)
    events_("ENCMIG_STREAM_STATE", json{{"id", id_hex_}, {"stream", s->name}, {"state", "closed"}}.dump());
  if (state_ != MigrationState::kActive) return;
  if (s->kind == wire::Kind::kMigration) closed_migration_streams_++;
  // The preempt channel may never open (no switch to postcopy): the streams
  // that must have closed are the others; one that did open must close too.
  const int required = cfg_.expected_streams - (cfg_.postcopy_preempt ? 1 : 0);
  const bool all_expected = required > 0 && closed_migration_streams_ >= required;
  if ((all_expected || ending_) && open_streams_locked() == 0)
    finish_locked(MigrationState::kCompleted, std::to_string(streams_.size()) + " streams, " + std::to_string(bytes_locked()) +
                                                  " bytes, every stream ended with an authenticated FIN");
}

void Migration::attach_link(const std::shared_ptr<Stream>& s, std::shared_ptr<StreamLink> link) {
  std::lock_guard<std::mutex> g(mu_);
  s->link = std::move(link);
  if (terminal(state_)) s->link->abort();
}

std::shared_ptr<StreamLink> Migration::find_link(wire::Kind kind, uint32_t index) const {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& s : streams_)
    if (s->kind == kind && s->index == index) return s->link;
  return nullptr;
}

bool Migration::has_stream(wire::Kind kind, uint32_t index) const {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& s : streams_)
    if (s->kind == kind && s->index == index) return true;
  return false;
}

Migration::LinkTotals Migration::link_totals() const {
  std::lock_guard<std::mutex> g(mu_);
  LinkTotals t;
  for (auto& s : streams_) {
    if (!s->link) continue;
    auto c = s->link->counters();
    t.reconnecting += c.reconnecting ? 1 : 0;
    t.resumes += c.resumes;
    t.in_flight += c.in_flight;
  }
  return t;
}

void Migration::attach_local(const std::shared_ptr<Stream>& s, Fd local) {
  std::lock_guard<std::mutex> g(mu_);
  s->local = std::move(local);
  if (terminal(state_)) s->shutdown_all();
}

void Migration::end(bool cancelled, const std::string& reason) {
  std::lock_guard<std::mutex> g(mu_);
  if (terminal(state_)) return;
  if (cancelled) {
    finish_locked(MigrationState::kCancelled, reason.empty() ? "cancelled by the controller" : reason, ErrorCode::kCancelled);
    return;
  }
  if (state_ == MigrationState::kArmed) {
    finish_locked(MigrationState::kCancelled, reason.empty() ? "ended by the controller before any stream opened" : reason,
                  ErrorCode::kCancelled);
    return;
  }
  // A stream that lost its connection during its last exchange, with both
  // FINs through, is complete: the link ends it (and closes it) by itself.
  for (auto& s : streams_)
    if (s->link && s->state == StreamState::kReconnecting && s->link->settle_at_end())
      log_line("migration " + id_hex_ + " stream " + s->name +
               ": both FINs were through when the connection broke; complete at the controller's end");
  if (open_streams_locked() == 0) {
    finish_locked(MigrationState::kCompleted, std::to_string(streams_.size()) + " streams, " + std::to_string(bytes_locked()) +
                                                  " bytes, every stream ended with an authenticated FIN");
    return;
  }
  // Streams still finishing: no new ones, and a bounded wait (tick()). The
  // key stays until the end (teardown wipes it): a stream whose connection
  // broke during its last exchange resumes with it.
  ending_ = true;
  end_requested_ = std::chrono::steady_clock::now();
  for (auto& l : listeners_) ::shutdown(l.fd.get(), SHUT_RDWR);
}

void Migration::tick(std::chrono::steady_clock::time_point now, const MigrationTimeouts& t) {
  std::lock_guard<std::mutex> g(mu_);
  if (terminal(state_)) return;
  if (state_ == MigrationState::kArmed) {
    if (now - armed_ >= t.armed_unused)
      finish_locked(MigrationState::kCancelled, "armed but unused for " + std::to_string(t.armed_unused.count()) + " s; expired",
                    ErrorCode::kTimeout);
    return;
  }
  bool reconnecting = false;  // an outage has its own budget (the link's), not the stall or end timers
  for (auto& s : streams_) {
    const bool r = s->state == StreamState::kReconnecting;
    reconnecting |= r;
    // Outages and resumes, as events (the link itself knows no migration).
    if (r != s->announced_reconnecting && events_) {
      s->announced_reconnecting = r;
      json e{{"id", id_hex_}, {"stream", s->name}, {"state", r ? "reconnecting" : "relaying"}};
      if (s->link) e["resumes"] = s->link->counters().resumes;
      events_("ENCMIG_STREAM_STATE", e.dump());
    }
  }
  // After migration-end a reconnecting stream gets the end's grace, not its
  // whole outage budget: the key must not outlive the controller's end by
  // more than that.
  if (ending_ && now - end_requested_ >= t.end_grace) {
    std::string open;
    for (auto& s : streams_)
      if (s->state != StreamState::kClosed && s->state != StreamState::kFailed) open += (open.empty() ? "" : ", ") + s->name;
    finish_locked(MigrationState::kFailed, "stream " + open + ": still open " + std::to_string(t.end_grace.count()) +
                                                " s after the controller ended the migration", ErrorCode::kTimeout);
    return;
  }
  uint64_t bytes = bytes_locked();
  if (bytes != last_bytes_ || reconnecting) {
    last_bytes_ = bytes;
    last_progress_ = now;
  } else if (t.stall.count() > 0 && now - last_progress_ >= t.stall) {
    finish_locked(MigrationState::kFailed, "stalled: no data in either direction on any stream for " +
                                               std::to_string(t.stall.count()) + " s (is a QEMU gone?)", ErrorCode::kTimeout);
  }
}

void Migration::add_listener(LocalListener l) {
  std::lock_guard<std::mutex> g(mu_);
  listeners_.push_back(std::move(l));
}

void Migration::teardown_locked() {
  for (auto& l : listeners_) {
    ::shutdown(l.fd.get(), SHUT_RDWR);
    l.remove_file();
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
  uint64_t total_out = 0, total_in = 0, resumes = 0, resent = 0, reconnecting = 0, in_flight = 0;
  for (auto& s : streams_) {
    double ss = std::chrono::duration<double>(std::chrono::steady_clock::now() - s->started).count();
    uint64_t o = s->bytes_out, i = s->bytes_in;
    total_out += o;
    total_in += i;
    json st{{"name", s->name},
            {"kind", std::string(wire::kind_name(s->kind))},
            {"index", s->index},
            {"state", stream_state_name(s->state.load())},
            {"bytes-out", o},
            {"bytes-in", i},
            {"records-out", s->records_out.load()},
            {"records-in", s->records_in.load()},
            {"rate-out-bps", ss > 0 ? double(o) * 8 / ss : 0.0}};
    if (s->link) {
      auto c = s->link->counters();
      st["resumes"] = c.resumes;
      st["refused-resumes"] = c.refused_resumes;
      st["resent-bytes"] = c.resent_bytes;
      st["window"] = c.window;
      st["unacked"] = c.unacked;
      st["in-flight"] = c.in_flight;
      in_flight += c.in_flight;
      resumes += c.resumes;
      resent += c.resent_bytes;
      reconnecting += c.reconnecting ? 1 : 0;
    }
    streams.push_back(st);
  }
  json j{{"id", id_hex_},
         {"role", cfg_.role == MigrationRole::kSource ? "source" : "destination"},
         {"state", state_name(state_)},
         {"aead-engine", aead_engine_name(Aead::process_engine())},
         {"seconds", secs},
         {"bytes-out", total_out},
         {"bytes-in", total_in},
         {"resumes", resumes},
         {"resent-bytes", resent},
         {"reconnecting", reconnecting},
         {"in-flight", in_flight},
         {"streams", streams}};
  if (ending_ && !terminal(state_)) j["ending"] = true;
  if (!error_.empty()) j["error"] = error_;
  j["mode"] = cfg_.transparent ? "transparent" : "armed";
  if (!cfg_.context.empty()) j["context"] = cfg_.context;
  return j.dump();
}

}  // namespace encmig
