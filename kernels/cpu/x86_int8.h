// The int8 machinery both x86 builds share (int8_avx2.cpp, int8_avx512.cpp): activations
// quantized per block of 32, the K formats' scales widened, and the walk over weight rows.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <vector>

#include "common.h"

namespace codeassist {

// int8_peak_macs' timing, shared by both builds: `chains(iterations)` runs a build's product
// step `iterations` rounds (`macs_per_round` multiply-adds each) on every thread and returns
// a value of its sums, kept so that they are not dead code. Multiply-adds per second.
template <typename Chains>
double peak_rate(long iterations, int threads, double macs_per_round, Chains chains) {
    static std::atomic<int> sink{0};
    int used = 1;
    const auto began = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(std::max(1, threads))
    {
        sink += chains(iterations);
#pragma omp single
        used = omp_get_num_threads();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    return macs_per_round * double(iterations) * used / seconds;
}

// Converting every weight to float costs ~1 uop per weight, which bounds a decode step on a
// small CPU long before memory does. Instead, as llama.cpp does, each activation row is
// quantized to int8 in blocks of 32 (scale = max|x| / 127, round to nearest even), and each
// 32-weight slice is multiplied as bytes (maddubs + madd: 8 int32 partial sums), then scaled
// and accumulated in float in k order (AVX-512 VNNI: dpbusd, 64 weights at once). Rows stay independent: a row's result never depends
// on the other rows of the call.

// One block of 32 floats -> 32 int8 (scale = max|x| / 127, ties to even); returns the scale
// and stores the sum of the int8 values in *sum.
inline float quantize_block(const float* xb, int8_t* q, float* sum) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(xb + 8 * i);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const __m256 inverse = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i qi[4];
    for (int i = 0; i < 4; ++i)
        qi[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], inverse),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // int32 -> int8, undoing the lane interleave of the packs
    const __m256i q16 = _mm256_packs_epi32(qi[0], qi[1]), r16 = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16, r16),
                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)q, q8);
    const __m256i pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q8), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *sum = (float)_mm_cvtsi128_si32(s4);
    return d;
}

// The eight scales and eight mins of a Q4_K / Q5_K block as floats times the block's d and
// dmin (widened as vectors).
template <typename L>
inline void k_scales_times(const uint8_t* b, __m256* scales, __m256* mins) {
    uint8_t six[16];
    k_scale_bytes(b + L::scales, six);
    const __m128i bytes = _mm_loadu_si128((const __m128i*)six);
    *scales = _mm256_mul_ps(_mm256_set1_ps(half_to_float(b + L::d)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)));
    *mins = _mm256_mul_ps(_mm256_set1_ps(half_to_float(b + L::dmin)),
                          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8))));
}

// Packed weight rows [begin, end) of row_bytes each times every input row, in groups of up
// to four input rows: dot(row, m, std::integral_constant<int, C>{}, acc) fills acc[0..C) for
// input rows m..m+C-1. The row after next is prefetched: it streams from memory while this
// one is computed.
template <typename Dot>
inline void weight_rows(const uint8_t* w, long row_bytes, const float* bias, float* out, long m_len, long n_len,
                 long begin, long end, Dot dot) {
    float acc[4];
    for (long n = begin; n < end; ++n) {
        const uint8_t* row = w + n * row_bytes;
        if (n + 2 < end)
            for (long i = 0; i < row_bytes; i += 64) _mm_prefetch((const char*)(row + 2 * row_bytes + i), _MM_HINT_T0);
        for (long m = 0; m < m_len; m += 4) {
            const long group = std::min(4L, m_len - m);
            switch (group) {
                case 1: dot(row, m, std::integral_constant<int, 1>{}, acc); break;
                case 2: dot(row, m, std::integral_constant<int, 2>{}, acc); break;
                case 3: dot(row, m, std::integral_constant<int, 3>{}, acc); break;
                default: dot(row, m, std::integral_constant<int, 4>{}, acc); break;
            }
            for (long c = 0; c < group; ++c) out[(m + c) * n_len + n] = acc[c] + (bias ? bias[n] : 0.0f);
        }
    }
}

}  // namespace codeassist
