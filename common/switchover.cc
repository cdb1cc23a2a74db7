#include "common/switchover.h"

#include <algorithm>
#include <cstdlib>

namespace encmig {

int SwitchoverLimit::next(uint64_t in_flight_bytes, double bytes_per_s) {
  if (asked_ <= 0 || bytes_per_s <= 0) return 0;
  const double in_flight_ms = double(in_flight_bytes) / bytes_per_s * 1000;
  const int want = std::max(asked_ / 4, asked_ - int(std::min(in_flight_ms, double(asked_))));
  lowest_ = lowest_ ? std::min(lowest_, want) : want;
  if (std::abs(want - set_) < std::max(10, asked_ / 10)) return 0;
  return want;
}

}  // namespace encmig
