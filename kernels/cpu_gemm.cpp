// Small-batch fp32 linear layer for x86 CPUs with AVX2 and FMA: out = x @ w.T + bias, for
// the 1 to MAX_ROWS rows of a decode or verify pass. Built by kernels/cpu_gemm.py.
//
// Why: BLAS and oneDNN GEMMs are tuned for many rows. For 2-8 rows they cost 2-4x one row on
// the project's CPU, although the weights (which dominate the memory traffic) are the same.
// Here each weight vector is loaded once and multiplied with up to four input rows while it
// sits in registers, so a verify pass over 4 tokens costs little more than a single token.
//
// Every output element is summed in the same order whatever the number of rows: 8 lanes
// accumulate along k with FMA, then the lanes are added in a fixed tree. A verify pass over
// n tokens therefore yields bit for bit the numbers of n single-token passes.
#include <immintrin.h>

#include <algorithm>

namespace {

constexpr long kMaxRows = 64;

inline float lane_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// R weight rows times C input rows; acc[r * C + c] = dot(w row r, x row c).
template <int R, int C>
inline void tile(const float* x, const float* const* w, long k_len, float* acc) {
    __m256 sums[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) sums[r][c] = _mm256_setzero_ps();
    for (long k = 0; k < k_len; k += 8) {
        __m256 xs[C];
        for (int c = 0; c < C; ++c) xs[c] = _mm256_loadu_ps(x + c * k_len + k);
        for (int r = 0; r < R; ++r) {
            __m256 wv = _mm256_loadu_ps(w[r] + k);
            for (int c = 0; c < C; ++c) sums[r][c] = _mm256_fmadd_ps(wv, xs[c], sums[r][c]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r * C + c] = lane_sum(sums[r][c]);
}

// Output rows [n_begin, n_end) of every input row. Four weight rows at a time (rows past the
// end repeat the last row and are not written); input rows in groups of up to four.
void output_rows(const float* x, const float* w, const float* bias, float* out, long m_len,
                 long n_len, long k_len, long n_begin, long n_end) {
    constexpr int R = 4;
    float acc[R * 4];
    for (long n = n_begin; n < n_end; n += R) {
        const float* rows[R];
        for (int r = 0; r < R; ++r) rows[r] = w + std::min(n + r, n_len - 1) * k_len;
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
}

}  // namespace

// x: m_len x k_len, w: n_len x k_len, bias: n_len or null, out: m_len x n_len, all contiguous.
// Returns 0, or -1 for shapes this kernel does not take (the caller falls back).
extern "C" int small_batch_gemm(const float* x, const float* w, const float* bias, float* out,
                                long m_len, long n_len, long k_len, int threads) {
    if (m_len < 1 || m_len > kMaxRows || n_len < 1 || k_len < 8 || k_len % 8 != 0) return -1;
    threads = std::max(1, std::min<int>(threads, (n_len + 63) / 64));
    const long per_thread = (n_len + threads - 1) / threads;
    const long chunk = (per_thread + 3) / 4 * 4;  // whole 4-row tiles per thread
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
        const long begin = t * chunk, end = std::min(n_len, begin + chunk);
        if (begin < end) output_rows(x, w, bias, out, m_len, n_len, k_len, begin, end);
    }
    return 0;
}
