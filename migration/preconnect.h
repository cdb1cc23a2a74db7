// Source role: a migration's data connections, opened and key-confirmed when
// the migration is armed, before QEMU connects. The TCP handshake and the
// hello take two round trips per stream; at 150 ms of RTT that is 0.3 s the
// migration would otherwise spend before QEMU's first byte leaves
// (docs/protocol.md, section 12).
//
// A connection made at arm is used only if it is still quiet when QEMU
// connects (the peer sent nothing and did not close it) and younger than
// kMaxAge; otherwise the stream connects as it would have without it. The
// destination connects to its QEMU only when the first record arrives, so a
// connection made early and never used costs the destination nothing.
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "migration/channel.h"

namespace encmig {

class Preconnected {
 public:
  using Connect = std::function<Result<std::unique_ptr<EncryptedChannel>>(uint32_t index)>;
  // Unused connections older than this are not trusted to be alive (a
  // firewall may have forgotten an idle connection without telling either end).
  static constexpr std::chrono::seconds kMaxAge{60};

  // Opens connections for indexes [0, count) of the migration kind, each on
  // its own thread.
  static std::shared_ptr<Preconnected> start(uint32_t count, Connect connect);

  // The connection for `index`: waits while it is being made; null if it
  // failed, is not quiet any more, or is too old. Each index is taken once.
  // `why` tells the caller, when null, why (empty if none was attempted, or
  // the migration ended).
  std::unique_ptr<EncryptedChannel> take(uint32_t index, std::string* why);

  // The migration ended: closes what was not taken.
  void close_all();

  // ready: made and not taken yet; pending: being made; failed: could not be
  // made, or found closed or too old when taken; used: taken and handed to a
  // stream.
  struct Counts {
    uint32_t ready = 0, pending = 0, failed = 0, used = 0;
  };
  Counts counts();

 private:
  struct Slot {
    bool done = false;
    std::unique_ptr<EncryptedChannel> ch;
    std::string error;
    std::chrono::steady_clock::time_point made;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, Slot> slots_;
  uint32_t used_ = 0, failed_taken_ = 0;
  bool closed_ = false;
};

}  // namespace encmig
