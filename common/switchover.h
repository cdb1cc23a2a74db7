// The downtime limit encmig gives QEMU while it copies.
//
// QEMU counts as sent what it wrote to encmigd, and stops the guest once
// what is left fits its downtime limit at its bandwidth estimate. What the
// source daemon sent that may not have reached the destination yet (its
// `in-flight`: up to its window, more than a plain socket's buffer on a long
// path) must also get there while the guest is stopped. So the limit QEMU
// works with is lowered by the time those bytes take at QEMU's own estimate,
// to a quarter of the limit asked for at most, and given back when the
// migration ends (not if encmig itself is killed: the lowered limit then
// stays on the source QEMU until its next migration). The guest then stops for
// about the limit asked for, the relay included. Used by both modes: QMP
// (migrate-set-parameters downtime-limit) and libvirt
// (virDomainMigrateSetMaxDowntime).
#pragma once

#include <cstdint>

namespace encmig {

class SwitchoverLimit {
 public:
  // `asked_ms`: the limit in force when the migration began (the operator's).
  explicit SwitchoverLimit(int asked_ms) : asked_(asked_ms), set_(asked_ms) {}

  // With the source daemon's in-flight bytes and QEMU's bandwidth
  // estimate (bytes per second): the limit to set now, or 0 to leave it as it
  // is (no estimate yet, or a change too small to be worth a call).
  int next(uint64_t in_flight_bytes, double bytes_per_s);
  // The caller set what next() returned.
  void applied(int ms) { set_ = ms; }

  int asked() const { return asked_; }
  // The limit was changed and must be given back.
  bool changed() const { return asked_ > 0 && set_ != asked_; }
  // The lowest limit next() asked for (0: none).
  int lowest() const { return lowest_; }

 private:
  const int asked_;
  int set_, lowest_ = 0;
};

}  // namespace encmig
