// CUDA's own host-side fp32 -> bf16 conversion (cuda_bf16.h), in a translation unit of its own
// because the emulator defines its own __nv_bfloat16. Built only where the CUDA toolkit is found;
// test_cuda_emu.cpp checks the emulator's rounding against it bit for bit.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

uint16_t cuda_host_float2bfloat16_rn_bits(float f) {
  const __nv_bfloat16 b = __float2bfloat16_rn(f);
  uint16_t bits;
  std::memcpy(&bits, &b, sizeof bits);
  return bits;
}
