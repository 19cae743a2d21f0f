// The portable build has no int8 path: quantized weights are dequantized four rows at a time
// and multiplied in fp32 (quant_gemm in layers.cpp), bit for bit small_batch_gemm over the
// dequantized weights.
#include "common.h"

namespace codeassist {

bool int8_gemm(int, const float*, const uint8_t*, const float*, float*, long, long, long, int) { return false; }

double int8_peak_macs(long, int) { return 0.0; }

}  // namespace codeassist
