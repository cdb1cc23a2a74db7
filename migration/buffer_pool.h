// Memory for what encmigd holds of a VM's stream (docs/protocol.md, section 17).
//
// LockedRegion: every buffer that ever holds guest plaintext (a connection's
// receive buffer, where records are opened in place before QEMU takes them;
// a resend log chunk, between QEMU's read and the seal) is locked in RAM, so
// it never reaches swap, and excluded from core dumps. If the kernel refuses
// the lock (no CAP_IPC_LOCK and RLIMIT_MEMLOCK spent), the region is used
// unlocked: counted, and logged once.
//
// BufferPool: the daemon-wide budget for resend logs (sealed DATA records not
// yet acknowledged). Every stream holds a guaranteed minimum, taken when it
// starts; beyond it a stream's window grows only while the budget lasts.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace encmig {

class LockedRegion {
 public:
  static LockedRegion allocate(size_t size);  // empty on allocation failure
  LockedRegion() = default;
  LockedRegion(LockedRegion&& o) noexcept : p_(std::exchange(o.p_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  LockedRegion& operator=(LockedRegion&& o) noexcept;
  LockedRegion(const LockedRegion&) = delete;
  LockedRegion& operator=(const LockedRegion&) = delete;
  ~LockedRegion();

  uint8_t* data() const { return p_; }
  size_t size() const { return size_; }
  bool valid() const { return p_ != nullptr; }

  // Regions the kernel would not lock, since start.
  static uint64_t unlocked();

 private:
  uint8_t* p_ = nullptr;
  size_t size_ = 0;
};

class BufferPool {
 public:
  // Resend logs are made of chunks of this size; a record never spans two.
  static constexpr size_t kChunk = 2u << 20;
  // Chunks every stream is guaranteed (its minimum window).
  static constexpr size_t kMinChunks = 2;

  explicit BufferPool(uint64_t budget_bytes) : budget_(budget_bytes) {}
  // The default budget: an eighth of the machine's RAM, at least 256 MiB.
  static uint64_t default_budget();

  // Accounting only: takes `n` chunks of the budget, or nothing.
  bool take(size_t n);
  void give_back(size_t n);

  uint64_t budget() const { return budget_; }
  uint64_t used() const { return used_.load() * kChunk; }
  uint64_t free_bytes() const;
  // Times a stream wanted a chunk beyond its minimum and the budget was spent.
  uint64_t capped() const { return capped_.load(); }
  void count_capped() { capped_++; }

 private:
  const uint64_t budget_;
  std::atomic<uint64_t> used_{0};  // chunks
  std::atomic<uint64_t> capped_{0};
};

}  // namespace encmig
