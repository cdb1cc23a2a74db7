#include "migration/preconnect.h"

#include <poll.h>

#include <thread>

namespace encmig {

std::shared_ptr<Preconnected> Preconnected::start(uint32_t count, Connect connect) {
  auto p = std::make_shared<Preconnected>();
  for (uint32_t i = 0; i < count; i++) p->slots_[i];
  for (uint32_t i = 0; i < count; i++) {
    std::thread([p, i, connect] {
      auto r = connect(i);
      std::lock_guard<std::mutex> g(p->mu_);
      if (p->closed_) return;  // the migration ended meanwhile: the connection closes here
      Slot& s = p->slots_[i];
      s.done = true;
      s.made = std::chrono::steady_clock::now();
      if (r)
        s.ch = std::move(r.value());
      else
        s.error = r.error().text();
      p->cv_.notify_all();
    }).detach();
  }
  return p;
}

std::unique_ptr<EncryptedChannel> Preconnected::take(uint32_t index, std::string* why) {
  why->clear();
  std::unique_lock<std::mutex> l(mu_);
  auto it = slots_.find(index);
  if (it == slots_.end()) return nullptr;
  cv_.wait(l, [&] { return closed_ || it->second.done; });
  if (closed_) return nullptr;  // the migration ended: nothing to report
  Slot s = std::move(it->second);
  slots_.erase(it);
  if (!s.ch) {
    failed_taken_++;
    *why = s.error.empty() ? "the migration ended" : s.error;
    return nullptr;
  }
  l.unlock();
  // Quiet: the peer sends nothing before our first record, so anything to
  // read (an ERROR record, its close, a reset) means it is no longer usable.
  pollfd pf{s.ch->fd(), POLLIN | POLLRDHUP, 0};
  if (std::chrono::steady_clock::now() - s.made > kMaxAge)
    *why = "made at arm more than " + std::to_string(kMaxAge.count()) + " s ago";
  else if (::poll(&pf, 1, 0) != 0)
    *why = "closed or answered by the peer before use";
  std::lock_guard<std::mutex> g(mu_);
  if (!why->empty()) {
    failed_taken_++;
    return nullptr;
  }
  used_++;
  return std::move(s.ch);
}

Preconnected::Counts Preconnected::counts() {
  std::lock_guard<std::mutex> g(mu_);
  Counts c;
  c.used = used_;
  c.failed = failed_taken_;
  for (auto& [i, s] : slots_) {
    if (!s.done)
      c.pending++;
    else if (s.ch)
      c.ready++;
    else
      c.failed++;
  }
  return c;
}

void Preconnected::close_all() {
  std::map<uint32_t, Slot> dropped;
  {
    std::lock_guard<std::mutex> g(mu_);
    closed_ = true;
    dropped.swap(slots_);
    cv_.notify_all();
  }
}

}  // namespace encmig
