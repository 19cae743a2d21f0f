// GGUF weight blocks -> floats: the dequantization every build shares (the portable build's
// matmul path, prefill tiles, embedding rows). Plain float arithmetic (built with
// -ffp-contract=off): bit for bit the torch reference of kernels/gguf_blocks.py. Block sizes
// and field offsets come from block_layouts.h, which the build writes from gguf_blocks.py's
// FORMATS table.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "block_layouts.h"

namespace codeassist {

inline float half_to_float(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#endif
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);  // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal half: normalise
        int e = -1;
        uint32_t m = man;
        do { ++e; m <<= 1; } while (!(m & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// The eight 6-bit scales, then the eight 6-bit mins, of a Q4_K / Q5_K block's 12 scale bytes
// `s` as 16 bytes (ggml's get_scale_min_k4, on little-endian 32-bit words as the file stores
// them).
inline void k_scale_bytes(const uint8_t* s, uint8_t* bytes) {
    uint32_t packed[3], six[4];
    std::memcpy(packed, s, 12);
    six[0] = packed[0] & 0x3F3F3F3F;
    six[1] = (packed[2] & 0x0F0F0F0F) | ((packed[0] >> 6) & 0x03030303) << 4;
    six[2] = packed[1] & 0x3F3F3F3F;
    six[3] = ((packed[2] >> 4) & 0x0F0F0F0F) | ((packed[1] >> 6) & 0x03030303) << 4;
    std::memcpy(bytes, six, 16);
}

inline void dequant_q4_0(const uint8_t* b, float* y) {
    using L = layout::Q4_0;
    const float d = half_to_float(b + L::d);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * (float)((b[L::qs + j] & 0xF) - 8);
        y[j + 16] = d * (float)((b[L::qs + j] >> 4) - 8);
    }
}

inline void dequant_q5_0(const uint8_t* b, float* y) {
    using L = layout::Q5_0;
    const float d = half_to_float(b + L::d);
    uint32_t qh;
    std::memcpy(&qh, b + L::qh, 4);
    for (int j = 0; j < 16; ++j) {
        const int low = (b[L::qs + j] & 0xF) | (((qh >> j) & 1) << 4);
        const int high = (b[L::qs + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(low - 16);
        y[j + 16] = d * (float)(high - 16);
    }
}

inline void dequant_q8_0(const uint8_t* b, float* y) {
    using L = layout::Q8_0;
    const float d = half_to_float(b + L::d);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)(int8_t)b[L::qs + j];
}

// Q4_K and Q5_K (which has the fifth bits, qh): sub-block j holds 32 weights d * scale_j * q - dmin * min_j.
template <typename L>
inline void dequant_k(const uint8_t* b, float* y) {
    constexpr bool kFive = L::kType == Q5_K;
    const float d = half_to_float(b + L::d), dmin = half_to_float(b + L::dmin);
    uint8_t six[16];  // the scales, then the mins
    k_scale_bytes(b + L::scales, six);
    const uint8_t* qs = b + L::qs;
    for (int chunk = 0; chunk < 4; ++chunk, qs += 32) {
        for (int half = 0; half < 2; ++half) {
            const int j = 2 * chunk + half;
            const float ds = d * (float)six[j], dm = dmin * (float)six[8 + j];
            for (int l = 0; l < 32; ++l) {
                int q = half ? qs[l] >> 4 : qs[l] & 0xF;
                if constexpr (kFive) q |= ((b[L::qh + l] >> j) & 1) << 4;
                y[32 * j + l] = ds * (float)q - dm;
            }
        }
    }
}

inline void dequant_q6_k(const uint8_t* b, float* y) {
    using L = layout::Q6_K;
    const float d = half_to_float(b + L::d);
    const int8_t* scales = (const int8_t*)(b + L::scales);
    for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = b + L::ql + 64 * half;
        const uint8_t* qh = b + L::qh + 32 * half;
        const int8_t* sc = scales + 8 * half;
        float* out = y + 128 * half;
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * (float)sc[is] * (float)q1;
            out[l + 32] = d * (float)sc[is + 2] * (float)q2;
            out[l + 64] = d * (float)sc[is + 4] * (float)q3;
            out[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

// One packed row of k_len weights of layout L -> floats; the block decoder is inlined per format.
template <typename L, typename Block>
inline void dequant_blocks(const uint8_t* row, long k_len, float* y, Block block) {
    for (long k = 0; k < k_len; k += L::kWeights, row += L::kBytes) block(row, y + k);
}

inline void dequant_row(int format, const uint8_t* row, long k_len, float* y) {
    switch (format) {
        case F32: std::memcpy(y, row, 4 * k_len); break;
        case F16: dequant_blocks<layout::F16>(row, k_len, y, [](const uint8_t* b, float* o) { *o = half_to_float(b); }); break;
        case Q4_0: dequant_blocks<layout::Q4_0>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_q4_0(b, o); }); break;
        case Q5_0: dequant_blocks<layout::Q5_0>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_q5_0(b, o); }); break;
        case Q8_0: dequant_blocks<layout::Q8_0>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_q8_0(b, o); }); break;
        case Q4_K: dequant_blocks<layout::Q4_K>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_k<layout::Q4_K>(b, o); }); break;
        case Q5_K: dequant_blocks<layout::Q5_K>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_k<layout::Q5_K>(b, o); }); break;
        case Q6_K: dequant_blocks<layout::Q6_K>(row, k_len, y, [](const uint8_t* b, float* o) { dequant_q6_k(b, o); }); break;
    }
}

}  // namespace codeassist
