// One armed migration on one host: its secrets, its streams, its fate.
//
// The first failure of any stream fails the whole migration: every stream's
// sockets are shut down at once, so both QEMUs see the migration fail and the
// source VM keeps running. Keys are wiped when the migration ends, whatever
// the outcome.
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
#include "migration/socket.h"

namespace encmig {

enum class MigrationRole { kSource, kDestination };
enum class MigrationState {
  kArmed,      // armed; no stream has opened yet
  kActive,     // at least one stream opened; stays so until kCompleted, a failure or migration-end
  kCompleted,  // every expected migration stream closed (authenticated FIN both ways), or the
               // controller ended the migration (migration-end) before any failure
  kFailed,     // a stream failed; every stream was torn down
  kCancelled,  // the controller cancelled it (migration-cancel, or its hand-off secret went away)
};
const char* state_name(MigrationState s);

struct MigrationConfig {
  wire::MigrationId id{};
  MigrationRole role = MigrationRole::kSource;
  // Source: where QEMU (or libvirtd) connects, and the peer daemon.
  std::string listen_path;
  std::string nbd_listen_path;
  HostPort peer;
  // Destination: QEMU's incoming and NBD sockets.
  std::string qemu_path;
  std::string qemu_nbd_path;
  int expected_streams = 0;  // migration-kind streams; 0 = unknown
};

std::string id_hex(const wire::MigrationId& id);
Result<wire::MigrationId> id_from_hex(const std::string& s);
// The stream's debug name: "main" (kind 1, index 0), "multifd-N" (kind 1,
// index N+1), "nbd-N" (kind 2, index N). Indexes count the connections in the
// order the source daemon accepted them from QEMU (docs/protocol.md, section
// 3): "multifd-0" is the first multifd connection accepted, which need not be
// the one QEMU numbers 0 in its own multifd packets.
std::string stream_name(wire::Kind kind, uint32_t index);

enum class StreamState : int { kHandshake, kRelaying, kClosed, kFailed };
const char* stream_state_name(StreamState s);

// Per-stream state and counters.
//
// Socket ownership: the stream owns its local (QEMU-side) socket. The peer
// socket is owned by the stream's handler (its Fd, then its EncryptedChannel);
// the stream only knows its number, peer_fd, so that teardown can shut it down
// from another thread. The handler calls Migration::stream_closed() before it
// closes the peer socket; that clears peer_fd under the migration lock, so a
// number that the kernel may reuse is never shut down.
struct Stream {
  wire::Kind kind = wire::Kind::kMigration;
  uint32_t index = 0;
  std::string name;
  Fd local;
  std::atomic<int> peer_fd{-1};
  // Payload bytes and DATA records relayed in each direction (FIN and ERROR
  // records are not counted).
  std::atomic<uint64_t> bytes_out{0}, bytes_in{0}, records_out{0}, records_in{0};
  std::atomic<StreamState> state{StreamState::kHandshake};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
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

  // A copy of the secrets for one handshake; fails once the migration ended.
  Result<MigrationSecrets> secrets() const;

  // Registers a stream; kDuplicateStream if (kind, index) was seen before.
  // The first stream makes the migration kActive.
  Result<std::shared_ptr<Stream>> add_stream(wire::Kind kind, uint32_t index);
  uint32_t next_source_index(wire::Kind kind);

  // Destination: blocks until every lower-indexed stream of this kind has
  // been handed to QEMU, so QEMU accepts them in the source's order.
  Status wait_turn(wire::Kind kind, uint32_t index, std::chrono::milliseconds timeout);
  void turn_done(wire::Kind kind);

  // The first call wins; later calls only add nothing.
  void fail(ErrorCode code, const std::string& stream, const std::string& detail);
  // Every stream handler calls this exactly once, before it closes the peer
  // socket: it shuts both sockets down and forgets their numbers.
  void stream_closed(const std::shared_ptr<Stream>& s);
  // Gives the stream its local (QEMU-side) socket, under the lock that
  // teardown takes. If the migration already ended, the socket is shut down.
  void attach_local(const std::shared_ptr<Stream>& s, Fd local);
  // Normal end requested by the controller (or cancel). A migration that has
  // not failed becomes kCompleted, whether or not its streams had closed.
  void end(bool cancelled);

  void add_listener(Fd fd);
  std::string status_json() const;

 private:
  void teardown_locked();
  void emit_state_locked();

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
  std::vector<Fd> listeners_;
  std::map<wire::Kind, uint32_t> next_index_;  // source: next index to assign
  std::map<wire::Kind, uint32_t> next_turn_;   // destination: next index to hand to QEMU
  int closed_migration_streams_ = 0;
  std::chrono::steady_clock::time_point armed_ = std::chrono::steady_clock::now();
};

}  // namespace encmig
