#include "migration/buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "migration/log.h"

namespace encmig {

namespace {
std::atomic<uint64_t> g_unlocked{0};
}

LockedRegion LockedRegion::allocate(size_t size) {
  // Whole huge pages, aligned: locking faults every page in, and 4 KiB
  // faults cost 11-14 us each on the machines we measure (a 2 MiB buffer
  // would take 512 of them; as one huge page, one).
  constexpr size_t kHuge = 2u << 20;
  size = (size + kHuge - 1) / kHuge * kHuge;
  void* raw = ::mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  LockedRegion r;
  if (raw == MAP_FAILED) return r;
  auto base = reinterpret_cast<uintptr_t>(raw), aligned = (base + kHuge - 1) / kHuge * kHuge;
  if (aligned > base) ::munmap(raw, aligned - base);
  if (size_t tail = kHuge - (aligned - base); tail > 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  void* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, size, MADV_HUGEPAGE);
  ::madvise(p, size, MADV_DONTDUMP);
  if (::mlock(p, size) != 0 && g_unlocked.fetch_add(1) == 0)
    log_line("warning: cannot lock stream buffers in memory (no CAP_IPC_LOCK, or RLIMIT_MEMLOCK spent): guest data "
             "that encmigd holds may reach swap; see man encmigd, MEMORY");
  r.p_ = static_cast<uint8_t*>(p);
  r.size_ = size;
  return r;
}

LockedRegion& LockedRegion::operator=(LockedRegion&& o) noexcept {
  if (this != &o) {
    if (p_) ::munmap(p_, size_);
    p_ = std::exchange(o.p_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

LockedRegion::~LockedRegion() {
  if (p_) ::munmap(p_, size_);  // the kernel zeroes pages before it hands them out again
}

uint64_t LockedRegion::unlocked() { return g_unlocked.load(); }

uint64_t BufferPool::default_budget() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  uint64_t ram = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
  return std::max<uint64_t>(ram / 8, 256ull << 20);
}

bool BufferPool::take(size_t n) {
  const uint64_t cap = budget_ / kChunk;
  uint64_t cur = used_.load();
  do {
    if (cur + n > cap) return false;
  } while (!used_.compare_exchange_weak(cur, cur + n));
  return true;
}

void BufferPool::give_back(size_t n) { used_.fetch_sub(n); }

uint64_t BufferPool::free_bytes() const {
  const uint64_t cap = budget_ / kChunk, u = used_.load();
  return u >= cap ? 0 : (cap - u) * kChunk;
}

}  // namespace encmig
