// What every build of the CPU kernels shares: the fp32 small-batch tiles, shape checks, the
// split of output rows over threads, and the entry each instruction set's int8 source
// (int8_avx512.cpp, int8_avx2.cpp, int8_portable.cpp) defines.
#pragma once

#include <algorithm>
#include <cstdint>

#include "blocks.h"
#include "vector8.h"

namespace codeassist {

constexpr long kMaxRows = 64;  // MAX_ROWS in kernels/cpu_gemm.py

// R weight rows times C input rows; acc[r * C + c] = dot(w row r, x row c).
template <int R, int C>
inline void tile(const float* x, const float* const* w, long k_len, float* acc) {
    V8 sums[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) sums[r][c] = v_zero();
    for (long k = 0; k < k_len; k += 8) {
        V8 xs[C];
        for (int c = 0; c < C; ++c) xs[c] = v_load(x + c * k_len + k);
        for (int r = 0; r < R; ++r) {
            V8 wv = v_load(w[r] + k);
            for (int c = 0; c < C; ++c) sums[r][c] = v_fma(wv, xs[c], sums[r][c]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r * C + c] = lane_sum(sums[r][c]);
}

// Four weight rows (fp32, k_len each) times every input row, into out columns n..n+3.
inline void four_rows(const float* x, const float* const* rows, const float* bias, float* out, long m_len,
               long n_len, long k_len, long n, long n_end) {
    constexpr int R = 4;
    float acc[R * 4];
    for (long m = 0; m < m_len; m += 4) {
        const long group = std::min(4L, m_len - m);
        const float* xg = x + m * k_len;
        // Tiles sized to AVX2's 16 registers: accumulators + inputs + one weight vector.
        switch (group) {
            case 1: tile<4, 1>(xg, rows, k_len, acc); break;
            case 2: tile<4, 2>(xg, rows, k_len, acc); break;
            case 3: tile<2, 3>(xg, rows, k_len, acc); tile<2, 3>(xg, rows + 2, k_len, acc + 6); break;
            default: tile<2, 4>(xg, rows, k_len, acc); tile<2, 4>(xg, rows + 2, k_len, acc + 8); break;
        }
        for (int r = 0; r < R && n + r < n_end; ++r)
            for (long c = 0; c < group; ++c)
                out[(m + c) * n_len + n + r] = acc[r * group + c] + (bias ? bias[n + r] : 0.0f);
    }
}

inline bool valid_shape(int format, long m_len, long n_len, long k_len) {
    const BlockShape shape = block_shape(format);
    return shape.weights > 0 && m_len >= 1 && m_len <= kMaxRows && n_len >= 1 && k_len >= 8 &&
           k_len % 8 == 0 && k_len % shape.weights == 0;
}

// Splits n_len output rows into per-thread runs of whole four-row tiles and calls
// body(begin, end) on each thread.
template <typename Body>
void parallel_rows(long n_len, int threads, Body body) {
    threads = std::max(1, std::min<int>(threads, (n_len + 63) / 64));
    const long per_thread = (n_len + threads - 1) / threads;
    const long chunk = (per_thread + 3) / 4 * 4;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
        const long begin = t * chunk, end = std::min(n_len, begin + chunk);
        if (begin < end) body(begin, end);
    }
}

// out = x @ dequantize(w).T + bias through int8-quantized activations, for a format this
// build has an int8 path for; false (nothing written) where it has none: the caller then
// takes the fp32 path. Shapes are checked by the caller (valid_shape).
bool int8_gemm(int format, const float* x, const uint8_t* w, const float* bias, float* out, long m_len, long n_len,
               long k_len, int threads);

// Integer multiply-adds per second of this build's int8 product step on `threads` threads
// (`iterations` rounds of independent chains in registers, nothing read from memory): the
// machine's int8 peak that prefill and decode are measured against. 0 where there is no int8 path.
double int8_peak_macs(long iterations, int threads);

}  // namespace codeassist
