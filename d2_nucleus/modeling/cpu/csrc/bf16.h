// float32 <-> bfloat16 for d2_nucleus's CPU kernels, written so that g++ vectorises the loops that
// use them (c10::BFloat16's conversions, and memcpy into the output under -fopenmp, are not
// vectorised here). The same values as c10::BFloat16: widening is exact, narrowing rounds to
// nearest even, NaN stays NaN.
#pragma once
#include <c10/util/BFloat16.h>

#include <bit>
#include <cstdint>

namespace d2_nucleus {

inline float load(const float* p) { return *p; }
inline float load(const c10::BFloat16* p) { return std::bit_cast<float>(static_cast<uint32_t>(p->x) << 16); }

inline void store(float* p, float v) { *p = v; }
inline void store(c10::BFloat16* p, float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  p->x = (v != v) ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);
}

}  // namespace d2_nucleus
