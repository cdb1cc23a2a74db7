// Linked into both programs: every block the C++ heap frees is zeroed first.
//
// Key material reaches ordinary heap memory in places encmig does not
// control: a key in a QMP request passes through the JSON parser's token
// buffers, std::string reallocations leave old copies behind. Secret (mlocked,
// wiped) holds the key itself; this makes sure no freed copy outlives its use.
// The data path allocates nothing per record, so the cost is on the control
// path only.
#include <malloc.h>
#include <string.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
inline void wipe_and_free(void* p) noexcept {
  if (!p) return;
  explicit_bzero(p, malloc_usable_size(p));
  std::free(p);
}
}  // namespace

// operator new is libstdc++'s (malloc); only the deletes are replaced.
void operator delete(void* p) noexcept { wipe_and_free(p); }
void operator delete[](void* p) noexcept { wipe_and_free(p); }
void operator delete(void* p, std::size_t) noexcept { wipe_and_free(p); }
void operator delete[](void* p, std::size_t) noexcept { wipe_and_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { wipe_and_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { wipe_and_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { wipe_and_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { wipe_and_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { wipe_and_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { wipe_and_free(p); }
