// Carves a leased workspace into aligned fp32 regions, once per call, so
// that the hot loops never allocate.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace attnserve::core {

class Scratch {
 public:
  Scratch(float* base, size_t floats) : next_(base), end_(base + floats) {}

  // `n` floats, 64-byte aligned (regions are rounded up to 16 floats).
  float* Take(int64_t n) {
    float* p = next_;
    next_ += (static_cast<size_t>(n) + 15) / 16 * 16;
    assert(next_ <= end_);
    return p;
  }

 private:
  float* next_;
  float* end_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_
