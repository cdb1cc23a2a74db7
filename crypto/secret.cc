#include "crypto/secret.h"

#include <gnutls/gnutls.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "crypto/ct.h"
#include "crypto/random.h"

namespace encmig {

namespace {
size_t page_size() {
  static const size_t ps = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return ps;
}
}  // namespace

void secure_wipe(void* p, size_t n) {
  if (n) gnutls_memset(p, 0, n);
}

Result<Secret> Secret::create(size_t size) {
  if (size == 0 || size > kMaxSize) return make_error(crypto_error::kInvalidArgument, "secret size");
  void* p = mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return make_error(crypto_error::kInternal, "mmap for secret failed");
  // mlock can fail under RLIMIT_MEMLOCK for unprivileged users; the page is
  // still excluded from core dumps. The daemon runs as root and also disables
  // core dumps for the whole process.
  (void)mlock(p, page_size());
  (void)madvise(p, page_size(), MADV_DONTDUMP);
  Secret s;
  s.data_ = static_cast<uint8_t*>(p);
  s.size_ = size;
  return s;
}

Result<Secret> Secret::random(size_t size) {
  auto s = create(size);
  if (!s) return s;
  auto st = random_key_bytes(s->mutable_data(), size);
  if (!st) return st.error();
  return s;
}

Result<Secret> Secret::from_bytes(std::span<const uint8_t> bytes) {
  auto s = create(bytes.size());
  if (!s) return s;
  std::memcpy(s->mutable_data(), bytes.data(), bytes.size());
  return s;
}

Secret::Secret(Secret&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

Secret& Secret::operator=(Secret&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

Secret::~Secret() { release(); }

void Secret::release() {
  if (!data_) return;
  secure_wipe(data_, page_size());
  munlock(data_, page_size());
  munmap(data_, page_size());
  data_ = nullptr;
  size_ = 0;
}

Result<Secret> Secret::clone() const {
  return from_bytes(bytes());
}

bool Secret::equals(const Secret& other) const {
  if (size_ != other.size_) return false;
  return ct_equal(data_, other.data_, size_);
}

}  // namespace encmig
