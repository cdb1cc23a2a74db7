// The downtime limit encmig gives QEMU while the source daemon holds bytes.
#include "common/switchover.h"

#include <gtest/gtest.h>

namespace encmig {
namespace {

constexpr double kGbit = 1e9 / 8;  // bytes per second

TEST(SwitchoverLimit, LowersByWhatTheWindowTakesAtQemusEstimate) {
  SwitchoverLimit l(300);
  // 12.5 MB unacknowledged at 1 Gb/s: 100 ms more while the guest is stopped.
  EXPECT_EQ(l.next(12'500'000, kGbit), 200);
  l.applied(200);
  EXPECT_TRUE(l.changed());
  EXPECT_EQ(l.lowest(), 200);
}

TEST(SwitchoverLimit, NeverBelowAQuarterOfWhatWasAsked) {
  SwitchoverLimit l(300);
  EXPECT_EQ(l.next(1'000'000'000, kGbit), 75);
  EXPECT_EQ(l.lowest(), 75);
}

TEST(SwitchoverLimit, SmallChangesAndNoEstimateAreNotWorthACall) {
  SwitchoverLimit l(300);
  EXPECT_EQ(l.next(100'000, kGbit), 0);         // under 1 ms
  EXPECT_EQ(l.next(50'000'000, 0), 0);          // QEMU has no estimate yet
  EXPECT_EQ(l.next(3'000'000, kGbit), 0);       // 24 ms: under a tenth of 300
  EXPECT_FALSE(l.changed());
  EXPECT_EQ(l.next(12'500'000, kGbit), 200);
  l.applied(200);
  EXPECT_EQ(l.next(12'000'000, kGbit), 0);      // 204 vs 200
  EXPECT_EQ(l.next(0, kGbit), 300);             // the window drained: given back
  l.applied(300);
  EXPECT_FALSE(l.changed());
}

TEST(SwitchoverLimit, NothingAskedNothingChanged) {
  SwitchoverLimit l(0);
  EXPECT_EQ(l.next(50'000'000, kGbit), 0);
  EXPECT_FALSE(l.changed());
  EXPECT_EQ(l.lowest(), 0);
}

}  // namespace
}  // namespace encmig
