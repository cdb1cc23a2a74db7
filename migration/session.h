// One armed migration on one host: its secrets, its streams, its fate.
//
// The first failure of any stream fails the whole migration: every stream's
// sockets are shut down at once, so both QEMUs see the migration fail and the
// source VM keeps running. Keys are wiped when the migration ends, whatever
// the outcome. Every migration ends with exactly one outcome (completed,
// failed or cancelled) and exactly one log line saying so.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "migration/key_schedule.h"
#include "migration/local_peer.h"
#include "migration/socket.h"

namespace encmig {

enum class MigrationRole { kSource, kDestination };
enum class MigrationState {
  kArmed,      // armed; no stream has opened yet
  kActive,     // at least one stream opened; stays so until one of the three below
  kCompleted,  // every stream closed with an authenticated FIN both ways, after the
               // expected number of migration streams had closed (or after the
               // controller's migration-end, when it gave no number)
  kFailed,     // a stream failed, stalled or outlived the controller's end; every stream was torn down
  kCancelled,  // the controller cancelled it (migration-cancel, its hand-off secret went
               // away, or it ended or expired before any stream opened)
};
const char* state_name(MigrationState s);
inline bool terminal(MigrationState s) { return s != MigrationState::kArmed && s != MigrationState::kActive; }

struct MigrationConfig {
  wire::MigrationId id{};
  MigrationRole role = MigrationRole::kSource;
  // Source: where QEMU (or libvirtd) connects, and the peer daemon.
  std::string listen_path;
  std::string nbd_listen_path;
  HostPort peer;
  // The newest protocol version the peer daemon speaks, as the controller
  // learned it from the peer's authenticated answer; 0 = not known.
  uint16_t peer_protocol = 0;
  // Destination: QEMU's incoming and NBD sockets.
  std::string qemu_path;
  std::string qemu_nbd_path;
  int expected_streams = 0;  // migration-kind streams (1 + multifd channels [+ 1 preempt]); 0 = not said
  // QEMU's postcopy preempt channel is the last of the expected streams: a
  // connection QEMU opens (since 8.0) only when postcopy starts, so it may
  // never open; it is named "postcopy-preempt".
  bool postcopy_preempt = false;
  LocalPeerPolicy local_peer;  // who may use the QEMU-side sockets
  int socket_gid = -1;         // source: group of the sockets QEMU connects to (-1: root's)
  // Transparent mode (daemon/interceptor.h): QEMU's own TCP connections,
  // intercepted on the source; on the destination, QEMU's TCP listener at
  // `qemu_tcp`, which must belong to the QEMU of the domain with UUID
  // `domain_uuid` (looked up by name `local_peer.libvirt_domain` at arm).
  bool transparent = false;
  HostPort qemu_tcp;
  std::string domain_uuid;
  // Who, what and why, for query-migrations and the log lines.
  std::string context;
};

// Limits and timers the data plane applies to every migration.
struct MigrationTimeouts {
  std::chrono::seconds armed_unused{600};  // armed, no stream ever opened: cancelled
  std::chrono::seconds stall{60};          // active, no byte in either direction on any stream: failed (0 = never)
  std::chrono::seconds end_grace{5};       // after migration-end, open streams get this long to finish
  std::chrono::seconds keep_ended{600};    // a finished migration stays queryable this long
  int max_nbd_streams = 64;
};

std::string id_hex(const wire::MigrationId& id);
Result<wire::MigrationId> id_from_hex(const std::string& s);
// The stream's debug name: "main" (kind 1, index 0), "multifd-N" (kind 1,
// index N+1), "nbd-N" (kind 2, index N). Indexes count the connections in the
// order the source daemon accepted them from QEMU (docs/protocol.md, section
// 3): "multifd-0" is the first multifd connection accepted, which need not be
// the one QEMU numbers 0 in its own multifd packets.
std::string stream_name(wire::Kind kind, uint32_t index);

enum class StreamState : int { kHandshake, kRelaying, kReconnecting, kClosed, kFailed };
const char* stream_state_name(StreamState s);

// Per-stream state and counters.
//
// Socket ownership: the stream owns its local (QEMU-side) socket, which is
// shut down and closed only under the migration's lock. The connections to
// the peer belong to the stream's link (migration/stream_link.h), which shuts
// them down when told to abort, under its own lock, while it still holds
// them: no thread ever acts on a descriptor number it does not own.
class StreamLink;

struct Stream {
  wire::Kind kind = wire::Kind::kMigration;
  uint32_t index = 0;
  std::string name;
  Fd local;
  ProcessWatch qemu;  // the QEMU behind `local`, when known: did it exit, or close?
  // Out: DATA payload bytes and records read from QEMU and sealed, each
  // once (resends are counted by the link). In: delivered to QEMU.
  std::atomic<uint64_t> bytes_out{0}, bytes_in{0}, records_out{0}, records_in{0};
  std::atomic<StreamState> state{StreamState::kHandshake};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // The stream's link to the peer (migration/stream_link.h), across
  // connections; set once its first connection is authenticated.
  std::shared_ptr<StreamLink> link;
  // Reconnecting or not, as last announced in an ENCMIG_STREAM_STATE event.
  bool announced_reconnecting = false;
  // Stops the link (no reconnection after this) and shuts the local socket down.
  void shutdown_all();
};

using EventFn = std::function<void(const std::string& event, const std::string& json_data)>;
using FailureFn = std::function<void(ErrorCode)>;

class Migration {
 public:
  Migration(MigrationConfig cfg, MigrationSecrets secrets, EventFn events, FailureFn on_failure);
  ~Migration();

  const MigrationConfig& config() const { return cfg_; }
  const std::string& id() const { return id_hex_; }
  MigrationState state() const;

  // The stream's name in this migration: stream_name(), except for the
  // postcopy preempt channel.
  std::string name_of(wire::Kind kind, uint32_t index) const;

  // A copy of the secrets for one handshake; fails once the migration ended
  // (or the controller ended it).
  Result<MigrationSecrets> secrets() const;
  // The secret of one direction of one stream's DATA (derive_stream_secret);
  // fails once the key is wiped.
  Result<Secret> stream_secret(wire::Kind kind, uint32_t index, Direction d, const wire::Salt& salt) const;
  // The migration key is still held (not yet wiped).
  bool holds_key() const;

  // Registers a stream whose peer is authenticated. Refuses a duplicate
  // (kind, index), an index beyond the streams the controller announced, and
  // any stream once the migration ended. The first stream makes it kActive.
  Result<std::shared_ptr<Stream>> add_stream(wire::Kind kind, uint32_t index, const MigrationTimeouts& t);
  uint32_t next_source_index(wire::Kind kind);
  // Streams now reconnecting, resumes so far, and bytes that may not have
  // reached the peer yet (StreamLink::Counters::in_flight), over all streams.
  struct LinkTotals {
    uint64_t reconnecting = 0, resumes = 0, in_flight = 0;
  };
  LinkTotals link_totals() const;

  // Destination: blocks until every lower-indexed stream of this kind has
  // been handed to QEMU, so QEMU accepts them in the source's order.
  Status wait_turn(wire::Kind kind, uint32_t index, std::chrono::milliseconds timeout);
  void turn_done(wire::Kind kind);

  // The first call wins; later calls add nothing.
  void fail(ErrorCode code, const std::string& stream, const std::string& detail);
  // Every stream handler calls this exactly once, when its link is done: it
  // shuts the local socket down and closes it.
  void stream_closed(const std::shared_ptr<Stream>& s);
  // Gives the stream its local (QEMU-side) socket, under the lock that
  // teardown takes. If the migration already ended, the socket is shut down.
  void attach_local(const std::shared_ptr<Stream>& s, Fd local);
  // Gives the stream its link (under the lock teardown takes), and finds it
  // again for a resume. A link given to an ended migration is stopped.
  void attach_link(const std::shared_ptr<Stream>& s, std::shared_ptr<StreamLink> link);
  std::shared_ptr<StreamLink> find_link(wire::Kind kind, uint32_t index) const;
  bool has_stream(wire::Kind kind, uint32_t index) const;
  // The controller is done with the migration (migration-end), or cancels
  // it. On end, the key is wiped and nothing new may join, but streams still
  // open get MigrationTimeouts::end_grace to finish with their FIN.
  // `reason` names who ended it, for the outcome line.
  void end(bool cancelled, const std::string& reason = "");
  // The data plane's periodic check: expiry when armed and unused, a stall,
  // an end's grace running out.
  void tick(std::chrono::steady_clock::time_point now, const MigrationTimeouts& t);
  // When it reached its outcome (for dropping it from the table later).
  std::chrono::steady_clock::time_point ended_at() const;

  void add_listener(LocalListener l);
  // Streams opened so far, and those of them not yet closed or failed.
  int streams_opened() const;
  int streams_open() const;
  std::string status_json() const;

 private:
  // The one place a migration reaches its outcome: logs it, counts it,
  // tears down, wipes the key, emits the event. Returns false if it had one.
  bool finish_locked(MigrationState outcome, const std::string& line, ErrorCode code = ErrorCode::kOk);
  void teardown_locked();
  void emit_state_locked();
  int open_streams_locked() const;
  uint64_t bytes_locked() const;

  MigrationConfig cfg_;
  std::string id_hex_;
  EventFn events_;
  FailureFn on_failure_;
  mutable std::mutex mu_;
  std::condition_variable turn_cv_;
  MigrationSecrets secrets_;
  MigrationState state_ = MigrationState::kArmed;
  std::string error_;
  std::vector<std::shared_ptr<Stream>> streams_;
  std::vector<LocalListener> listeners_;
  std::map<wire::Kind, uint32_t> next_index_;  // source: next index to assign
  std::map<wire::Kind, uint32_t> next_turn_;   // destination: next index to hand to QEMU
  int closed_migration_streams_ = 0;
  bool ending_ = false;  // the controller called migration-end while streams were open
  std::chrono::steady_clock::time_point armed_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point end_requested_{}, ended_{}, last_progress_ = armed_;
  uint64_t last_bytes_ = 0;
};

}  // namespace encmig
