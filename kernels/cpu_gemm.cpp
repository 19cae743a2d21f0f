// Small-batch linear layers for CPUs: out = x @ w.T + bias for the 1 to kMaxRows rows of a
// decode or verify pass, with fp32 weights or GGUF-quantized (packed) weights. Built by
// kernels/cpu_gemm.py for the instruction set the CPU has: AVX-512 with VNNI, AVX2/FMA, or
// portable (plain C++ vectors).
//
// fp32 weights: BLAS and oneDNN GEMMs are tuned for many rows; for 2-8 rows they cost 2-4x
// one row on the project's CPU, although the weights (which dominate the memory traffic) are
// the same. Here each weight vector is loaded once and multiplied with up to four input rows
// while it sits in registers, so a verify pass over 4 tokens costs little more than one.
//
// Packed weights are read at 4.5-8.5 bits per weight instead of 32. The AVX-512 and AVX2
// builds multiply them with int8-quantized activations (below); the portable build
// dequantizes four weight rows at a time into a buffer that stays in cache and runs the fp32
// tiles over it.
//
// Every output element is summed in the same order whatever the number of rows, so a verify
// pass over n tokens yields bit for bit the numbers of n single-token passes.
// Dequantization is plain float arithmetic (built with -ffp-contract=off), bit for bit the
// torch reference of kernels/gguf_blocks.py.
//
// The library also holds the row-wise steps of a decoder layer that cost a decode pass most
// in torch calls (RMS norm: seven tensor operations; rotary embedding: eight; attention;
// SiLU times up), and a whole decoder layer of packed weights in one call built from them.
// Each treats every row alone, so they keep the row-count independence too.
#include <cstdint>
#include <cmath>
#include <cstring>
#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

constexpr long kMaxRows = 64;

// ---- 8-lane float vectors: AVX2 intrinsics, or GCC/Clang vector extensions elsewhere ----
#if defined(__AVX2__) && defined(__FMA__)
using V8 = __m256;
inline V8 v_zero() { return _mm256_setzero_ps(); }
inline V8 v_load(const float* p) { return _mm256_loadu_ps(p); }
inline V8 v_fma(V8 a, V8 b, V8 c) { return _mm256_fmadd_ps(a, b, c); }
inline V8 v_max(V8 a, V8 b) { return _mm256_max_ps(a, b); }
inline float lane_sum(V8 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
// Lane c of the result: the lanes of v[c] summed as ((0+1)+(2+3)) + ((4+5)+(6+7)).
inline V8 lane_sums8(const V8* v) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    // u0: lanes 0-3 the (0+1)+(2+3) sums of v[0..3], lanes 4-7 their (4+5)+(6+7) sums; u1 for v[4..7]
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#else
typedef float V8 __attribute__((vector_size(32)));
inline V8 v_zero() { return V8{}; }
inline V8 v_load(const float* p) { V8 v; std::memcpy(&v, p, sizeof v); return v; }
inline V8 v_fma(V8 a, V8 b, V8 c) { return a * b + c; }
inline V8 v_max(V8 a, V8 b) { return a > b ? a : b; }
inline float lane_sum(V8 v) {  // the same tree as the AVX2 version
    float s[4] = {v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]};
    s[0] += s[2];
    s[1] += s[3];
    return s[0] + s[1];
}
inline V8 lane_sums8(const V8* v) {  // the same tree as the AVX2 version
    V8 out;
    for (int c = 0; c < 8; ++c)
        out[c] = ((v[c][0] + v[c][1]) + (v[c][2] + v[c][3])) + ((v[c][4] + v[c][5]) + (v[c][6] + v[c][7]));
    return out;
}
#endif

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
void four_rows(const float* x, const float* const* rows, const float* bias, float* out, long m_len,
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

// ---- GGUF blocks (ggml-common.h layouts) -> float ----

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

enum Format { F32 = 0, F16 = 1, Q4_0 = 2, Q5_0 = 6, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

struct BlockShape { long weights, bytes; };

BlockShape block_shape(int format) {
    switch (format) {
        case F32: return {1, 4};
        case F16: return {1, 2};
        case Q4_0: return {32, 18};
        case Q5_0: return {32, 22};
        case Q8_0: return {32, 34};
        case Q4_K: return {256, 144};
        case Q5_K: return {256, 176};
        case Q6_K: return {256, 210};
        default: return {0, 0};
    }
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
    const float d = half_to_float(b);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * (float)((b[2 + j] & 0xF) - 8);
        y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
    }
}

inline void dequant_q5_0(const uint8_t* b, float* y) {
    const float d = half_to_float(b);
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    for (int j = 0; j < 16; ++j) {
        const int low = (b[6 + j] & 0xF) | (((qh >> j) & 1) << 4);
        const int high = (b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(low - 16);
        y[j + 16] = d * (float)(high - 16);
    }
}

inline void dequant_q8_0(const uint8_t* b, float* y) {
    const float d = half_to_float(b);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)(int8_t)b[2 + j];
}

// Q4_K (high == nullptr) and Q5_K: sub-block j holds 32 weights d * scale_j * q - dmin * min_j.
inline void dequant_k(const uint8_t* b, const uint8_t* qs, const uint8_t* high, float* y) {
    const float d = half_to_float(b), dmin = half_to_float(b + 2);
    uint8_t six[16];  // the scales, then the mins
    k_scale_bytes(b + 4, six);
    for (int chunk = 0; chunk < 4; ++chunk, qs += 32) {
        for (int half = 0; half < 2; ++half) {
            const int j = 2 * chunk + half;
            const float ds = d * (float)six[j], dm = dmin * (float)six[8 + j];
            for (int l = 0; l < 32; ++l) {
                int q = half ? qs[l] >> 4 : qs[l] & 0xF;
                if (high) q |= ((high[l] >> j) & 1) << 4;
                y[32 * j + l] = ds * (float)q - dm;
            }
        }
    }
}

inline void dequant_q6_k(const uint8_t* b, float* y) {
    const float d = half_to_float(b + 208);
    const int8_t* scales = (const int8_t*)(b + 192);
    for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = b + 64 * half;
        const uint8_t* qh = b + 128 + 32 * half;
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


// One packed row of k_len weights -> floats; the block decoder is inlined per format.
template <typename Block>
inline void dequant_blocks(const uint8_t* row, long k_len, long weights, long bytes, float* y, Block block) {
    for (long k = 0; k < k_len; k += weights, row += bytes) block(row, y + k);
}

void dequant_row(int format, const uint8_t* row, long k_len, float* y) {
    const BlockShape s = block_shape(format);
    switch (format) {
        case F32: std::memcpy(y, row, 4 * k_len); break;
        case F16: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { *o = half_to_float(b); }); break;
        case Q4_0: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_q4_0(b, o); }); break;
        case Q5_0: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_q5_0(b, o); }); break;
        case Q8_0: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_q8_0(b, o); }); break;
        case Q4_K: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_k(b, b + 16, nullptr, o); }); break;
        case Q5_K: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_k(b, b + 48, b + 16, o); }); break;
        case Q6_K: dequant_blocks(row, k_len, s.weights, s.bytes, y, [](const uint8_t* b, float* o) { dequant_q6_k(b, o); }); break;
    }
}

bool valid_shape(int format, long m_len, long n_len, long k_len) {
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

#if defined(__AVX2__) && defined(__FMA__)
// ---- AVX2: quantized weights times int8-quantized activations (integer dot products) ----
//
// Converting every weight to float costs ~1 uop per weight, which bounds a decode step on a
// small CPU long before memory does. Instead, as llama.cpp does, each activation row is
// quantized to int8 in blocks of 32 (scale = max|x| / 127, round to nearest even), and each
// 32-weight slice is multiplied as bytes (maddubs + madd: 8 int32 partial sums), then scaled
// and accumulated in float in k order. Rows stay independent: a row's result never depends
// on the other rows of the call.

// 16 bytes -> 32 nibbles as bytes: the low nibbles first, then the high ones.
inline __m256i nibbles_32(const uint8_t* p) {
    const __m128i v = _mm_loadu_si128((const __m128i*)p), mask = _mm_set1_epi8(0xF);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask));
}

// Byte j is 0xFF where bit j of the 32 bits at p is set (ggml's bytes_from_bits_32).
inline __m256i bits_32(const uint8_t* p) {
    uint32_t bits;
    std::memcpy(&bits, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)),
                             _mm256_set1_epi64x(-1));
}


struct QuantizedRows {  // m_len rows of k_len int8 values, one scale and sum per 32
    std::vector<int8_t> q;
    std::vector<float> scale;
    std::vector<float> sum;  // sum of the block's q, as float (for the mins of Q4_K / Q5_K)
};

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

// Quantizes x into `rows` (a per-thread buffer reused across calls: no allocation per call).
void quantize_rows(const float* x, long m_len, long k_len, QuantizedRows& rows) {
    rows.q.resize(m_len * k_len);
    rows.scale.resize(m_len * k_len / 32);
    rows.sum.resize(m_len * k_len / 32);
    for (long b = 0; b < m_len * k_len / 32; ++b)
        rows.scale[b] = quantize_block(x + 32 * b, &rows.q[32 * b], &rows.sum[b]);
}

// The eight scales and eight mins of a Q4_K / Q5_K block as floats times the block's d and
// dmin (widened as vectors).
inline void k_scales_times(const uint8_t* b, __m256* scales, __m256* mins) {
    uint8_t six[16];
    k_scale_bytes(b + 4, six);
    const __m128i bytes = _mm_loadu_si128((const __m128i*)six);
    *scales = _mm256_mul_ps(_mm256_set1_ps(half_to_float(b)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)));
    *mins = _mm256_mul_ps(_mm256_set1_ps(half_to_float(b + 2)),
                          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8))));
}

// 32 weights of one row, as bytes: signed (w) or unsigned (q, with a per-slice min).
struct Slice {
    __m256i w;
    __m256 scale;  // per int32 lane (each lane sums 4 consecutive weights)
    float min;     // Q4_K / Q5_K: weight = scale * q - min
};

struct DecodeQ8_0 {
    static constexpr int kWeights = 32, kBytes = 34;
    static constexpr bool kSigned = true, kHasMin = false;
    static void decode(const uint8_t* b, Slice* s) {
        s[0] = {_mm256_loadu_si256((const __m256i*)(b + 2)), _mm256_set1_ps(half_to_float(b)), 0.0f};
    }
};

struct DecodeQ4_0 {
    static constexpr int kWeights = 32, kBytes = 18;
    static constexpr bool kSigned = true, kHasMin = false;
    static void decode(const uint8_t* b, Slice* s) {
        s[0] = {_mm256_sub_epi8(nibbles_32(b + 2), _mm256_set1_epi8(8)), _mm256_set1_ps(half_to_float(b)), 0.0f};
    }
};

struct DecodeQ5_0 {
    static constexpr int kWeights = 32, kBytes = 22;
    static constexpr bool kSigned = true, kHasMin = false;
    static void decode(const uint8_t* b, Slice* s) {
        const __m256i q = _mm256_or_si256(nibbles_32(b + 6), _mm256_and_si256(bits_32(b + 2), _mm256_set1_epi8(0x10)));
        s[0] = {_mm256_sub_epi8(q, _mm256_set1_epi8(16)), _mm256_set1_ps(half_to_float(b)), 0.0f};
    }
};

template <bool kFive>
struct DecodeK {  // Q4_K, Q5_K
    static constexpr int kWeights = 256, kBytes = kFive ? 176 : 144;
    static constexpr bool kSigned = false, kHasMin = true;
    static void decode(const uint8_t* b, Slice* s) {
        __m256 scales, mins;
        k_scales_times(b, &scales, &mins);
        float min[8];
        _mm256_storeu_ps(min, mins);
        const uint8_t* qs = b + (kFive ? 48 : 16);
        const __m256i mask = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
        const __m256i qh = kFive ? _mm256_loadu_si256((const __m256i*)(b + 16)) : _mm256_setzero_si256();
        for (int chunk = 0; chunk < 4; ++chunk) {
            const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * chunk));
            for (int half = 0; half < 2; ++half) {
                const int j = 2 * chunk + half;
                __m256i q = _mm256_and_si256(half ? _mm256_srli_epi16(v, 4) : v, mask);
                if (kFive) {
                    const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), one);
                    q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
                }
                s[j] = {q, _mm256_permutevar8x32_ps(scales, _mm256_set1_epi32(j)), min[j]};
            }
        }
    }
};

struct DecodeQ6_K {
    static constexpr int kWeights = 256, kBytes = 210;
    static constexpr bool kSigned = true, kHasMin = false;
    static void decode(const uint8_t* b, Slice* s) {
        const float d = half_to_float(b + 208);
        const int8_t* scales = (const int8_t*)(b + 192);
        const __m256i mask4 = _mm256_set1_epi8(0xF), mask2 = _mm256_set1_epi8(3), offset = _mm256_set1_epi8(32);
        for (int half = 0; half < 2; ++half) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i*)(b + 64 * half));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i*)(b + 64 * half + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i*)(b + 128 + 32 * half));
            const __m256i low[4] = {ql0, ql1, _mm256_srli_epi16(ql0, 4), _mm256_srli_epi16(ql1, 4)};
            for (int part = 0; part < 4; ++part) {
                const __m256i h = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * part), mask2);
                const __m256i q = _mm256_or_si256(_mm256_and_si256(low[part], mask4), _mm256_slli_epi16(h, 4));
                const int8_t* sc = scales + 8 * half + 2 * part;  // lanes 0-3: first 16 weights
                s[4 * half + part] = {_mm256_sub_epi8(q, offset),
                                      _mm256_set_m128(_mm_set1_ps(d * (float)sc[1]), _mm_set1_ps(d * (float)sc[0])),
                                      0.0f};
            }
        }
    }
};

// C input rows times one packed weight row: out[c] = dot(x row c, w row), each output
// accumulating its slices in k order whatever C. (Tiles of several weight rows, as the fp32
// path uses, spill registers here and ran 2x slower on the project's CPU.)
template <typename D, int C>
inline void dot_row(const uint8_t* w, long k_len, const int8_t* const* xq, const float* const* xd,
                    const float* const* xs, float* out) {
    constexpr int kSlices = D::kWeights / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[C];
    float min_acc[C];
    for (int c = 0; c < C; ++c) { acc[c] = _mm256_setzero_ps(); min_acc[c] = 0.0f; }
    Slice slices[kSlices];
    for (long block = 0; block < k_len / D::kWeights; ++block) {
        D::decode(w + block * D::kBytes, slices);
        for (int s = 0; s < kSlices; ++s) {
            const long xb = block * kSlices + s;
            const Slice& slice = slices[s];
            const __m256i magnitude = D::kSigned ? _mm256_sign_epi8(slice.w, slice.w) : slice.w;
            for (int c = 0; c < C; ++c) {
                __m256i x = _mm256_loadu_si256((const __m256i*)(xq[c] + 32 * xb));
                if (D::kSigned) x = _mm256_sign_epi8(x, slice.w);
                const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, x), ones);
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(slice.scale, _mm256_set1_ps(xd[c][xb])),
                                         acc[c]);
                if (D::kHasMin) min_acc[c] += slice.min * xd[c][xb] * xs[c][xb];
            }
        }
    }
    for (int c = 0; c < C; ++c) out[c] = lane_sum(acc[c]) - min_acc[c];
}

// Packed weight rows [begin, end) of row_bytes each times every input row, in groups of up
// to four input rows: dot(row, m, std::integral_constant<int, C>{}, acc) fills acc[0..C) for
// input rows m..m+C-1. The row after next is prefetched: it streams from memory while this
// one is computed.
template <typename Dot>
void weight_rows(const uint8_t* w, long row_bytes, const float* bias, float* out, long m_len, long n_len,
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

template <typename D>
void int8_rows(const QuantizedRows& x, const uint8_t* w, const float* bias, float* out, long m_len, long n_len,
               long k_len, long begin, long end) {
    const long blocks = k_len / 32;
    weight_rows(w, k_len / D::kWeights * D::kBytes, bias, out, m_len, n_len, begin, end,
                [&](const uint8_t* row, long m, auto rows, float* acc) {
                    constexpr int C = decltype(rows)::value;
                    const int8_t* xq[C];
                    const float *xd[C], *xs[C];
                    for (int c = 0; c < C; ++c) {
                        xq[c] = &x.q[(m + c) * k_len];
                        xd[c] = &x.scale[(m + c) * blocks];
                        xs[c] = &x.sum[(m + c) * blocks];
                    }
                    dot_row<D, C>(row, k_len, xq, xd, xs, acc);
                });
}

// Returns false where the format has no int8 path (the float path is used).
template <typename Body>
bool with_decoder(int format, Body body) {
    switch (format) {
        case Q4_0: body(DecodeQ4_0{}); return true;
        case Q5_0: body(DecodeQ5_0{}); return true;
        case Q8_0: body(DecodeQ8_0{}); return true;
        case Q4_K: body(DecodeK<false>{}); return true;
        case Q5_K: body(DecodeK<true>{}); return true;
        case Q6_K: body(DecodeQ6_K{}); return true;
        default: return false;
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
// ---- AVX-512 VNNI: 64 weights per instruction, no sign tricks ----
//
// The same int8 activations and the same exact integer dot products per 32 weights as the
// AVX2 path, computed with one dpbusd (unsigned bytes times signed bytes, summed into int32
// lanes) per 64 weights. Each format's weights are decoded as unsigned bytes u = w + offset,
// and the offset is taken off in the integer lanes, which start at -offset * (the lane's four
// activations), prepared once per call. Lanes 0-7 hold the first 32 weights of a pair, 8-15
// the next 32; each lane is scaled by its weight and activation scales and accumulated in
// float, even pairs and odd pairs apart (two chains of float additions in flight instead of
// one) and in k order within each, so a row's result never depends on the other rows of the
// call.

constexpr int kPairWeights = 64;

struct Pair {     // 64 weights of one row
    __m512i u;    // unsigned bytes, k order
    __m512 scale; // weight scale of each int32 lane
};

struct alignas(64) PairRow {  // one row's 64 activations of a pair, as the inner loop reads them
    int8_t q[64];       // int8 values, zero past k_len
    int32_t offset[16]; // -offset * the sum of each lane's four values
    float scale[16];    // the scale of each lane's block
};

struct alignas(32) UnitMins { float terms[8]; };  // per block of 32 of a 256-weight unit: scale * sum

// m_len rows laid out pair by pair (all rows of pair 0, then of pair 1, ...): a group of rows
// is read at fixed distances from one pointer.
struct Activations512 {
    std::vector<PairRow> pairs;
    std::vector<UnitMins> mins;  // unit by unit, row by row (Q4_K / Q5_K)
};

// Quantizes x (m_len rows of k_len) into `a`, each row padded with zeros to whole units of
// `unit` weights (what a decoder takes at once); `with_mins`: also the mins' terms.
void prepare_activations(const float* x, long m_len, long k_len, int offset, long unit, bool with_mins,
                         Activations512& a) {
    const long pairs = (k_len + unit - 1) / unit * unit / kPairWeights, blocks = k_len / 32;
    a.pairs.resize(pairs * m_len);
    if (with_mins) a.mins.resize(blocks / 8 * m_len);
    const __m512i ones = _mm512_set1_epi8(1);
    for (long m = 0; m < m_len; ++m) {
        for (long p = 0; p < pairs; ++p) {
            PairRow& pr = a.pairs[p * m_len + m];
            for (int half = 0; half < 2; ++half) {
                const long b = 2 * p + half;
                float d = 0.0f, sum;
                if (b < blocks) d = quantize_block(x + m * k_len + 32 * b, pr.q + 32 * half, &sum);
                else std::memset(pr.q + 32 * half, 0, 32);
                std::fill_n(pr.scale + 8 * half, 8, d);
                if (with_mins && b < blocks) a.mins[b / 8 * m_len + m].terms[b % 8] = d * sum;
            }
            const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, _mm512_load_si512(pr.q));
            _mm512_store_si512(pr.offset, _mm512_mullo_epi32(sums, _mm512_set1_epi32(-offset)));
        }
    }
}

// Two fp16 scales -> 16 lanes: the first eight a, the next eight b.
inline __m512 two_scales(const uint8_t* a, const uint8_t* b) {
    uint16_t ha, hb;
    std::memcpy(&ha, a, 2);
    std::memcpy(&hb, b, 2);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(ha | (uint32_t)hb << 16));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                 _mm512_castps128_ps512(f));
}

// Two blocks' 16 nibble bytes -> 64 unsigned bytes in k order (each block: low nibbles, then high).
inline __m512i nibbles_64(const uint8_t* a, const uint8_t* b) {
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)a)),
                                              _mm_loadu_si128((const __m128i*)b), 1);
    const __m512i halves = _mm512_and_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), _mm512_set1_epi8(0xF));
    // [a low, b low, a high, b high] -> [a low, a high, b low, b high]
    return _mm512_shuffle_i64x2(halves, halves, _MM_SHUFFLE(3, 1, 2, 0));
}

// A unit: the blocks decoded together (a decoder gets pointers to each), as kPairs pairs.
// Formats of 32-weight blocks: four blocks, two pairs.
struct Pack8_0 {
    static constexpr int kWeights = 32, kBytes = 34, kBlocks = 4, kPairs = 2, kOffset = 128;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(a + 2))),
                                                 _mm256_loadu_si256((const __m256i*)(b + 2)), 1);
            p[i] = {_mm512_xor_si512(w, _mm512_set1_epi8((char)0x80)), two_scales(a, b)};
        }
    }
};

struct Pack4_0 {
    static constexpr int kWeights = 32, kBytes = 18, kBlocks = 4, kPairs = 2, kOffset = 8;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            p[i] = {nibbles_64(a + 2, b + 2), two_scales(a, b)};
        }
    }
};

struct Pack5_0 {
    static constexpr int kWeights = 32, kBytes = 22, kBlocks = 4, kPairs = 2, kOffset = 16;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            uint32_t ha, hb;  // bit j: the fifth bit of weight j
            std::memcpy(&ha, a + 2, 4);
            std::memcpy(&hb, b + 2, 4);
            const __m512i low = nibbles_64(a + 6, b + 6);
            const __mmask64 fifth = _cvtu64_mask64(ha | (uint64_t)hb << 32);
            p[i] = {_mm512_mask_add_epi8(low, fifth, low, _mm512_set1_epi8(0x10)), two_scales(a, b)};
        }
    }
};

// Q4_K, Q5_K: one 256-weight block, four pairs (sub-blocks 2c and 2c+1), and the eight mins
// as one vector.
template <bool kFive>
struct PackK {
    static constexpr int kWeights = 256, kBytes = kFive ? 176 : 144, kBlocks = 1, kPairs = 4, kOffset = 0;
    static constexpr bool kHasMin = true;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256* mins) {
        const uint8_t* b = blocks[0];
        __m256 scales8;
        k_scales_times(b, &scales8, mins);
        const __m512 scales = _mm512_castps256_ps512(scales8);
        const uint8_t* qs = b + (kFive ? 48 : 16);
        const __m512i mask = _mm512_set1_epi8(0xF);
        __m512i qh = _mm512_setzero_si512();
        if (kFive) qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(b + 16)));
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * c));
            __m512i u = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), mask);
            if (kFive) {  // bit 2c of qh[l]: weight l of sub-block 2c; bit 2c+1: of sub-block 2c+1
                const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                                        _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
                u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh, bits), u, _mm512_set1_epi8(0x10));
            }
            const __m512i lanes = _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
            p[c] = {u, _mm512_permutexvar_ps(lanes, scales)};
        }
    }
};

// Q6_K: one 256-weight block, four pairs; each int32 lane has one of 16 scales.
struct Pack6_K {
    static constexpr int kWeights = 256, kBytes = 210, kBlocks = 1, kPairs = 4, kOffset = 32;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        const uint8_t* b = blocks[0];
        const __m512 scales = _mm512_mul_ps(
            _mm512_set1_ps(half_to_float(b + 208)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 192)))));
        const __m512i mask4 = _mm512_set1_epi8(0xF), mask2 = _mm512_set1_epi8(3);
        for (int half = 0; half < 2; ++half) {
            const __m512i ql = _mm512_loadu_si512(b + 64 * half);  // weights l and l + 32 (low nibbles), l + 64 and l + 96 (high)
            const __m256i h = _mm256_loadu_si256((const __m256i*)(b + 128 + 32 * half));
            const __m512i qh = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1);
            for (int part = 0; part < 2; ++part) {
                const __m512i low = _mm512_and_si512(part ? _mm512_srli_epi16(ql, 4) : ql, mask4);
                const __m512i high = _mm512_and_si512(part ? _mm512_srli_epi16(qh, 4) : qh, mask2);
                const int t = 2 * half + part;  // pair t: scales 4t .. 4t + 3, four lanes each
                const __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32(4 * t),
                    _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
                p[t] = {_mm512_or_si512(low, _mm512_slli_epi16(high, 4)), _mm512_permutexvar_ps(lanes, scales)};
            }
        }
    }
};

// The running sums of C input rows times one packed weight row.
template <int C>
struct RowSums {
    __m512 acc[2][C];  // even and odd pairs
    __m256 min_acc[C];
    void clear() {
        for (int c = 0; c < C; ++c) {
            acc[0][c] = acc[1][c] = _mm512_setzero_ps();
            min_acc[c] = _mm256_setzero_ps();
        }
    }
};

// Units [u_begin, u_end) of C input rows (from row m) times one packed weight row (row_blocks
// blocks), added to `sums` in k order.
template <typename D, int C>
inline void dot_units_512(const uint8_t* w, long row_blocks, long u_begin, long u_end, const Activations512& a,
                          long m_len, long m, RowSums<C>& sums) {
    __m512 acc[2][C];  // in registers through the loop
    __m256 min_acc[C];
    for (int c = 0; c < C; ++c) {
        acc[0][c] = sums.acc[0][c];
        acc[1][c] = sums.acc[1][c];
        min_acc[c] = sums.min_acc[c];
    }
    Pair unit[D::kPairs];
    __m256 mins;
    const PairRow* x = &a.pairs[u_begin * D::kPairs * m_len + m];
    const UnitMins* xm = D::kHasMin ? &a.mins[u_begin * m_len + m] : nullptr;
    for (long u = u_begin; u < u_end; ++u) {
        const uint8_t* block[D::kBlocks];  // past the row's end: its last block again, against zeros
        for (int i = 0; i < D::kBlocks; ++i) block[i] = w + std::min(u * D::kBlocks + i, row_blocks - 1) * D::kBytes;
        D::decode(block, unit, &mins);
        for (int s = 0; s < D::kPairs; ++s, x += m_len) {
            for (int c = 0; c < C; ++c) {
                const __m512i start = D::kOffset ? _mm512_load_si512(x[c].offset) : _mm512_setzero_si512();
                const __m512i dots = _mm512_dpbusd_epi32(start, unit[s].u, _mm512_load_si512(x[c].q));
                acc[s % 2][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(unit[s].scale, _mm512_load_ps(x[c].scale)),
                                                acc[s % 2][c]);
            }
        }
        if (D::kHasMin) {
            for (int c = 0; c < C; ++c) min_acc[c] = _mm256_fmadd_ps(mins, _mm256_load_ps(xm[c].terms), min_acc[c]);
            xm += m_len;
        }
    }
    for (int c = 0; c < C; ++c) {
        sums.acc[0][c] = acc[0][c];
        sums.acc[1][c] = acc[1][c];
        sums.min_acc[c] = min_acc[c];
    }
}

template <typename D, int C>
inline void finish_512(const RowSums<C>& sums, float* out) {
    for (int c = 0; c < C; ++c)
        out[c] = _mm512_reduce_add_ps(_mm512_add_ps(sums.acc[0][c], sums.acc[1][c])) -
                 (D::kHasMin ? lane_sum(sums.min_acc[c]) : 0.0f);
}

template <typename D>
constexpr long row_bytes_512(long k_len) { return k_len / D::kWeights * D::kBytes; }

template <typename D>
constexpr long units_512(long k_len) {
    return (k_len / D::kWeights + D::kBlocks - 1) / D::kBlocks;
}

// Activation bytes a group of rows may span and still be read from L1 by every weight row.
constexpr long kL1Activations = 16 * 1024;
constexpr long kTileRows = 16;  // weight rows that share one pass over an L1-sized slice of k

// Units per slice of k for a group of C rows (every unit when they all fit).
template <typename D>
long slice_units(long k_len, int c) {
    const long unit_bytes = D::kPairs * (long)sizeof(PairRow) * c + (D::kHasMin ? (long)sizeof(UnitMins) * c : 0);
    return std::max(1L, std::min(units_512<D>(k_len), kL1Activations / unit_bytes));
}

// Weight rows [n0, n1) (a tile) times the input rows [m, m + C), slice of k by slice: the
// slice's activations stay in L1 while every row of the tile is multiplied with them. Each
// sum still takes its terms in k order.
template <typename D, int C>
void tile_512(const Activations512& a, const uint8_t* w, const float* bias, float* out, long m_len, long n_len,
              long k_len, long n0, long n1, long m) {
    const long row_bytes = row_bytes_512<D>(k_len), row_blocks = k_len / D::kWeights, units = units_512<D>(k_len);
    const long slice = slice_units<D>(k_len, C), unit_bytes = D::kBlocks * D::kBytes;
    RowSums<C> sums[kTileRows];
    for (long n = n0; n < n1; ++n) sums[n - n0].clear();
    for (long u0 = 0; u0 < units; u0 += slice) {
        const long u1 = std::min(units, u0 + slice);
        const long from = u0 * unit_bytes, to = std::min(row_bytes, u1 * unit_bytes);
        for (long n = n0; n < n1; ++n) {
            if (n + 2 < n1)  // this slice of the row after next: streaming while this one is computed
                for (long i = from; i < to; i += 64) _mm_prefetch((const char*)(w + (n + 2) * row_bytes + i), _MM_HINT_T0);
            dot_units_512<D, C>(w + n * row_bytes, row_blocks, u0, u1, a, m_len, m, sums[n - n0]);
        }
    }
    float acc[C];
    for (long n = n0; n < n1; ++n) {
        finish_512<D, C>(sums[n - n0], acc);
        for (int c = 0; c < C; ++c) out[(m + c) * n_len + n] = acc[c] + (bias ? bias[n] : 0.0f);
    }
}

template <typename D>
void int8_rows_512(const Activations512& a, const uint8_t* w, const float* bias, float* out, long m_len,
                   long n_len, long k_len, long begin, long end) {
    const long units = units_512<D>(k_len), row_blocks = k_len / D::kWeights;
    // A group of rows whose activations fit L1, or a single row (a decode step: one row is
    // a third of a 4-row group's bytes, and slicing it was not measured to pay): whole rows.
    if (m_len == 1 || slice_units<D>(k_len, std::min(4L, m_len)) == units) {
        weight_rows(w, row_bytes_512<D>(k_len), bias, out, m_len, n_len, begin, end,
                    [&](const uint8_t* row, long m, auto rows, float* acc) {
                        constexpr int C = decltype(rows)::value;
                        RowSums<C> sums;
                        sums.clear();
                        dot_units_512<D, C>(row, row_blocks, 0, units, a, m_len, m, sums);
                        finish_512<D, C>(sums, acc);
                    });
        return;
    }
    // Long rows (four rows of 4864 weights: 58 KB of activations, read from L2 once per
    // weight row, cost a verify pass more than its arithmetic): tiles of weight rows, and
    // within a tile, groups of input rows over slices of k.
    for (long n0 = begin; n0 < end; n0 += kTileRows) {
        const long n1 = std::min(end, n0 + kTileRows);
        for (long m = 0; m < m_len; m += 4) {
            switch (std::min(4L, m_len - m)) {
                case 1: tile_512<D, 1>(a, w, bias, out, m_len, n_len, k_len, n0, n1, m); break;
                case 2: tile_512<D, 2>(a, w, bias, out, m_len, n_len, k_len, n0, n1, m); break;
                case 3: tile_512<D, 3>(a, w, bias, out, m_len, n_len, k_len, n0, n1, m); break;
                default: tile_512<D, 4>(a, w, bias, out, m_len, n_len, k_len, n0, n1, m); break;
            }
        }
    }
}

template <typename Body>
bool with_packer(int format, Body body) {
    switch (format) {
        case Q4_0: body(Pack4_0{}); return true;
        case Q5_0: body(Pack5_0{}); return true;
        case Q8_0: body(Pack8_0{}); return true;
        case Q4_K: body(PackK<false>{}); return true;
        case Q5_K: body(PackK<true>{}); return true;
        case Q6_K: body(Pack6_K{}); return true;
        default: return false;
    }
}
#endif
#endif

}  // namespace

// x: m_len x k_len, w: n_len x k_len, bias: n_len or null, out: m_len x n_len, all contiguous.
// Returns 0, or -1 for shapes this kernel does not take (the caller falls back).
extern "C" int small_batch_gemm(const float* x, const float* w, const float* bias, float* out,
                                long m_len, long n_len, long k_len, int threads) {
    if (!valid_shape(F32, m_len, n_len, k_len)) return -1;
    parallel_rows(n_len, threads, [&](long begin, long end) {
        for (long n = begin; n < end; n += 4) {
            const float* rows[4];  // rows past the end repeat the last row and are not written
            for (int r = 0; r < 4; ++r) rows[r] = w + std::min(n + r, n_len - 1) * k_len;
            four_rows(x, rows, bias, out, m_len, n_len, k_len, n, end);
        }
    });
    return 0;
}

// As small_batch_gemm, with w the n_len packed rows of a GGUF tensor of type `format`
// (each row k_len / block_weights blocks). The AVX-512 and AVX2 builds take quantized
// formats through int8 activations; otherwise it is bit for bit small_batch_gemm over the
// dequantized weights.
extern "C" int quant_gemm(int format, const float* x, const uint8_t* w, const float* bias, float* out,
                          long m_len, long n_len, long k_len, int threads) {
    if (!valid_shape(format, m_len, n_len, k_len)) return -1;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
    if (format != F32 && format != F16) {
        static thread_local Activations512 buffer;
        const Activations512& a = buffer;  // a reference: OpenMP workers must read the caller's buffer
        return with_packer(format, [&](auto packer) {
            using D = decltype(packer);
            prepare_activations(x, m_len, k_len, D::kOffset, D::kPairs * kPairWeights, D::kHasMin, buffer);
            parallel_rows(n_len, threads, [&](long begin, long end) {
                int8_rows_512<D>(a, w, bias, out, m_len, n_len, k_len, begin, end);
            });
        }) ? 0 : -1;
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if (format != F32 && format != F16) {
        static thread_local QuantizedRows buffer;
        const QuantizedRows& xq = buffer;  // a reference: OpenMP workers must read the caller's buffer
        quantize_rows(x, m_len, k_len, buffer);
        return with_decoder(format, [&](auto decoder) {
            using D = decltype(decoder);
            parallel_rows(n_len, threads, [&](long begin, long end) {
                int8_rows<D>(xq, w, bias, out, m_len, n_len, k_len, begin, end);
            });
        }) ? 0 : -1;
    }
#endif
    const BlockShape shape = block_shape(format);
    const long row_bytes = k_len / shape.weights * shape.bytes;
    parallel_rows(n_len, threads, [&](long begin, long end) {
        std::vector<float> scratch(4 * k_len);  // four dequantized rows: in L1/L2 while used
        for (long n = begin; n < end; n += 4) {
            const float* rows[4];
            for (int r = 0; r < 4; ++r) {
                const long source = std::min(n + r, n_len - 1);
                if (source == n + r) dequant_row(format, w + source * row_bytes, k_len, &scratch[r * k_len]);
                rows[r] = &scratch[(source - n) * k_len];
            }
            four_rows(x, rows, bias, out, m_len, n_len, k_len, n, end);
        }
    });
    return 0;
}

// out = w * (x * 1 / sqrt(mean(x^2) + eps)) per row of `cols` floats (transformers' RMSNorm).
extern "C" int rms_norm_rows(const float* x, const float* w, float eps, float* out, long rows, long cols) {
    if (rows < 0 || cols < 8 || cols % 8) return -1;
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        V8 squares = v_zero();
        for (long i = 0; i < cols; i += 8) {
            const V8 v = v_load(xr + i);
            squares = v_fma(v, v, squares);
        }
        const float scale = 1.0f / std::sqrt(lane_sum(squares) / (float)cols + eps);
        float* o = out + r * cols;
        for (long i = 0; i < cols; ++i) o[i] = w[i] * (xr[i] * scale);
    }
    return 0;
}

// Rotary embedding in place over `rows` positions of `heads` heads of `dim` floats each
// (x: rows x heads x dim, contiguous), with cos/sin: rows x dim (the halves repeated, as
// transformers computes them): x * cos + rotate_half(x) * sin, the same products and sums.
extern "C" int rope_rows(float* x, const float* cos, const float* sin, long rows, long heads, long dim) {
    if (rows < 0 || heads < 1 || dim < 2 || dim % 2) return -1;
    const long half = dim / 2;
    for (long r = 0; r < rows; ++r) {
        const float *c = cos + r * dim, *s = sin + r * dim;
        for (long h = 0; h < heads; ++h) {
            float* v = x + (r * heads + h) * dim;
            for (long i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] + -b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
    return 0;
}

// e^x for x <= 0 (softmax after subtracting the maximum), 8 at a time: the exponent from
// rounding x / ln 2, the rest from Cephes' expf polynomial. The same function for every
// element, so a score's weight never depends on where it sits in a vector.
inline V8 exp_nonpositive(V8 x) {
#if defined(__AVX2__) && defined(__FMA__)
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(power));
#else
    V8 y;
    for (int i = 0; i < 8; ++i) y[i] = std::exp(x[i]);
    return y;
#endif
}

// The scores of keys[0..8) (each `dim` floats) against q, times `scale`: eight dot products
// in flight at once (computed one by one, each fma waits on the previous one). A key's score
// does not depend on the other seven.
inline V8 eight_scores(const float* q, const float* const* keys, long dim, float scale) {
    V8 sums[8];
    for (int j = 0; j < 8; ++j) sums[j] = v_zero();
    for (long i = 0; i < dim; i += 8) {
        const V8 qi = v_load(q + i);
        for (int j = 0; j < 8; ++j) sums[j] = v_fma(qi, v_load(keys[j] + i), sums[j]);
    }
    return lane_sums8(sums) * scale;
}

namespace {

// acc[0 .. 8N) += sum over c in [begin, end) of weights[c] * values[order[c]][offset ..], in c
// order, the N accumulators kept in registers through the loop.
template <int N>
inline void weighted_values(const float* v, long v_key, const long* order, const float* weights, long begin,
                            long end, long offset, float* acc) {
    V8 sums[N];
    for (int i = 0; i < N; ++i) sums[i] = v_load(acc + offset + 8 * i);
    for (long c = begin; c < end; ++c) {
        const float* vv = v + order[c] * v_key + offset;
        const V8 wc = v_zero() + weights[c];
        for (int i = 0; i < N; ++i) sums[i] = v_fma(wc, v_load(vv + 8 * i), sums[i]);
    }
    for (int i = 0; i < N; ++i) std::memcpy(acc + offset + 8 * i, &sums[i], sizeof sums[i]);
}

inline void weighted_values_any(const float* v, long v_key, const long* order, const float* weights, long begin,
                                long end, long dim, float* acc) {
    for (long offset = 0; offset < dim; offset += 64) {
        switch (std::min(64L, dim - offset) / 8) {
            case 1: weighted_values<1>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 2: weighted_values<2>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 3: weighted_values<3>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 4: weighted_values<4>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 5: weighted_values<5>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 6: weighted_values<6>(v, v_key, order, weights, begin, end, offset, acc); break;
            case 7: weighted_values<7>(v, v_key, order, weights, begin, end, offset, acc); break;
            default: weighted_values<8>(v, v_key, order, weights, begin, end, offset, acc); break;
        }
    }
}

// Key bytes of one block of a key/value head: read from L2 once, then from L1 by every query
// head of the group and every row.
constexpr long kKeyBlockBytes = 16 * 1024;

// Attention of the (row, head) pairs [first, last) of key/value group g (pair t: row t / group,
// head g * group + t % group): the query heads that share a key/value head go over the keys
// block by block, so a block is loaded once for all of them. Each pair's scores, softmax and
// weighted sum are still computed alone over its own allowed keys in order.
void attend_group(const float* q, long q_row, long q_head, const float* kg, long k_key, const float* vg, long v_key,
                  const long* order, const long* counts, long keys, float* out, long heads, long group, long g,
                  long first, long last, long dim, float scale) {
    static thread_local std::vector<float> weights, sums, inverse;  // per pair; reused across calls
    static thread_local std::vector<V8> tops;
    const long padded = (keys + 7) / 8 * 8, pairs = last - first;
    weights.resize(pairs * padded);
    sums.assign(pairs * dim, 0.0f);
    inverse.assign(pairs, 0.0f);  // stays 0 for a pair without keys
    tops.assign(pairs, v_zero() - INFINITY);
    long longest = 0;
    for (long t = first; t < last; ++t) longest = std::max(longest, counts[t / group]);
    const long block = std::max(8L, kKeyBlockBytes / (long)(dim * sizeof(float)) / 8 * 8);
    for (long start = 0; start < longest; start += block) {  // scores, block by block
        for (long t = first; t < last; ++t) {
            const long r = t / group, count = counts[r];
            const long* row_order = order + r * keys;
            const float* qv = q + r * q_row + (g * group + t % group) * q_head;
            float* w = &weights[(t - first) * padded];
            for (long c = start; c < std::min(start + block, count); c += 8) {
                const float* group_keys[8];  // past the last key: the last key again, masked below
                for (int j = 0; j < 8; ++j) group_keys[j] = kg + row_order[std::min(c + j, count - 1)] * k_key;
                V8 scores = eight_scores(qv, group_keys, dim, scale);
                for (long j = count - c; j < 8; ++j) scores[j] = -INFINITY;
                tops[t - first] = v_max(tops[t - first], scores);
                std::memcpy(&w[c], &scores, sizeof scores);
            }
        }
    }
    for (long t = first; t < last; ++t) {  // softmax weights (unnormalized) and their sum
        const long count = counts[t / group], filled = (count + 7) / 8 * 8;
        if (count == 0) continue;
        float* w = &weights[(t - first) * padded];
        const V8 top_lanes = tops[t - first];
        float top = top_lanes[0];
        for (int j = 1; j < 8; ++j) top = std::max(top, top_lanes[j]);
        V8 total = v_zero();
        for (long c = 0; c < filled; c += 8) {
            const V8 e = exp_nonpositive(v_load(&w[c]) - top);
            std::memcpy(&w[c], &e, sizeof e);
            total = total + e;
        }
        inverse[t - first] = 1.0f / lane_sum(total);
    }
    for (long start = 0; start < longest; start += block)  // weighted values, block by block
        for (long t = first; t < last; ++t) {
            const long r = t / group, end = std::min(start + block, counts[r]);
            if (start < end)
                weighted_values_any(vg, v_key, order + r * keys, &weights[(t - first) * padded], start, end, dim,
                                    &sums[(t - first) * dim]);
        }
    for (long t = first; t < last; ++t) {
        const long r = t / group;
        float* o = out + (r * heads + g * group + t % group) * dim;
        const float* acc = &sums[(t - first) * dim];
        for (long i = 0; i < dim; i += 8) {  // no keys: zeros
            const V8 scaled = counts[r] ? v_load(acc + i) * inverse[t - first] : v_zero();
            std::memcpy(o + i, &scaled, sizeof scaled);
        }
    }
}

}  // namespace

// Attention of each query row over its allowed keys, grouped query heads sharing a key/value
// head (head h reads key/value head h / (heads / kv_heads)). q[r * q_row + h * q_head + i];
// keys and values [g * kv_head + j * kv_key + i] (each its own strides); allowed: rows x keys
// bytes, or null for every key; out: rows x heads x dim. Each (row, head) is computed alone
// over the list of its allowed keys in order, so a row of a verify pass gets bit for bit what
// a single-token step over the same keys gets. Threads take key/value groups (and parts of a
// group when there are more threads than groups).
extern "C" int attend_rows(const float* q, long q_row, long q_head, const float* k, long k_head, long k_key,
                           const float* v, long v_head, long v_key, const uint8_t* allowed, float* out, long rows,
                           long heads, long kv_heads, long keys, long dim, float scale, int threads) {
    if (rows < 1 || heads < 1 || kv_heads < 1 || heads % kv_heads || keys < 1 || dim < 8 || dim % 8 || dim > 512)
        return -1;
    const long group = heads / kv_heads, pairs = rows * group;
    std::vector<long> order(rows * keys), counts(rows);  // each row's allowed keys, in order
    for (long r = 0; r < rows; ++r) {
        long count = 0;
        for (long j = 0; j < keys; ++j)
            if (!allowed || allowed[r * keys + j]) order[r * keys + count++] = j;
        counts[r] = count;
    }
    threads = std::max(1, threads);
    const long parts = std::min(pairs, (threads + kv_heads - 1) / kv_heads), items = kv_heads * parts;
#pragma omp parallel for num_threads((int)std::min<long>(threads, items)) schedule(static)
    for (long item = 0; item < items; ++item) {
        const long g = item / parts, part = item % parts;
        attend_group(q, q_row, q_head, k + g * k_head, k_key, v + g * v_head, v_key, order.data(), counts.data(),
                     keys, out, heads, group, g, part * pairs / parts, (part + 1) * pairs / parts, dim, scale);
    }
    return 0;
}

// Rows [0, n_len) of a packed tensor -> out (n_len x k_len floats): prefill tiles.
extern "C" int dequantize_rows(int format, const uint8_t* w, float* out, long n_len, long k_len, int threads) {
    const BlockShape shape = block_shape(format);
    if (shape.weights == 0 || n_len < 0 || k_len < 1 || k_len % shape.weights) return -1;
    const long row_bytes = k_len / shape.weights * shape.bytes;
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
    for (long n = 0; n < n_len; ++n) dequant_row(format, w + n * row_bytes, k_len, out + n * k_len);
    return 0;
}

// out[i] = silu(gate[i]) * up[i] (count a multiple of 8), silu(g) = g * sigmoid(g) with the
// sigmoid from t = e^-|g| (never overflows): 1 / (1 + t) for g >= 0, t / (1 + t) below.
extern "C" int silu_mul(const float* gate, const float* up, float* out, long count) {
    if (count < 0 || count % 8) return -1;
    for (long i = 0; i < count; i += 8) {
        const V8 g = v_load(gate + i);
#if defined(__AVX2__) && defined(__FMA__)
        const V8 t = exp_nonpositive(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));  // -|g|
        const V8 above = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_GE_OQ);
        const V8 numerator = _mm256_blendv_ps(t, _mm256_set1_ps(1.0f), above);
#else
        const V8 t = exp_nonpositive(g > 0 ? -g : g);
        const V8 numerator = g >= 0 ? v_zero() + 1.0f : t;
#endif
        const V8 y = g * numerator / (t + 1.0f) * v_load(up + i);
        std::memcpy(out + i, &y, sizeof y);
    }
    return 0;
}

// One packed weight matrix of a decoder layer: `rows` output features of `format` blocks.
struct PackedMatrix {
    const uint8_t* data;
    const float* bias;  // or null
    long format, rows;
};

// The weights of a Qwen2/Llama decoder layer (RMS norms, grouped-query attention with rotary
// embeddings, gated SiLU MLP); kernels/cpu_gemm.py mirrors this layout.
struct DecoderLayer {
    const float *norm_in, *norm_post;
    float eps, scale;  // RMS norm epsilon, attention score scale
    long hidden, intermediate, heads, kv_heads, head_dim;
    PackedMatrix q, k, v, o, gate, up, down;
};

namespace {
int project(const PackedMatrix& m, const float* x, float* out, long rows, long k_len, int threads) {
    return quant_gemm((int)m.format, x, m.data, m.bias, out, rows, m.rows, k_len, threads);
}
}  // namespace

// A whole decoder layer for `rows` new positions of one sequence: out = the layer applied to x
// (rows x hidden), the new keys and values written into the cache buffers at positions
// [length, length + rows) (keys and values: kv_heads x capacity x head_dim, the first `length`
// positions filled), attention over the `length + rows` positions as `allowed` says (rows x
// (length + rows) bytes; null: every position, for a single row). The same calls in the same
// order as the layer's separate steps (norm, projections, rotary embedding, attend_rows, ...),
// so every row still gets bit for bit what a single-token step gets.
extern "C" int decoder_layer_rows(const DecoderLayer* layer, const float* x, float* out, long rows,
                                  const float* cos, const float* sin, float* keys, float* values, long capacity,
                                  long length, const uint8_t* allowed, int threads) {
    const DecoderLayer& L = *layer;
    const long dim = L.head_dim, q_width = L.heads * dim, kv_width = L.kv_heads * dim;
    if (rows < 1 || rows > kMaxRows || length < 0 || length + rows > capacity || (!allowed && rows > 1)) return -1;
    static thread_local std::vector<float> normed, q, k, v, attended, gate, up;
    normed.resize(rows * L.hidden);  // the norms' outputs, then the down projection's
    q.resize(rows * q_width);
    k.resize(rows * kv_width);
    v.resize(rows * kv_width);
    attended.resize(rows * q_width);
    gate.resize(rows * L.intermediate);
    up.resize(rows * L.intermediate);
    if (rms_norm_rows(x, L.norm_in, L.eps, normed.data(), rows, L.hidden) || project(L.q, normed.data(), q.data(), rows, L.hidden, threads) ||
        project(L.k, normed.data(), k.data(), rows, L.hidden, threads) || project(L.v, normed.data(), v.data(), rows, L.hidden, threads) ||
        rope_rows(q.data(), cos, sin, rows, L.heads, dim) || rope_rows(k.data(), cos, sin, rows, L.kv_heads, dim))
        return -1;
    for (long r = 0; r < rows; ++r)
        for (long g = 0; g < L.kv_heads; ++g) {
            const long at = (g * capacity + length + r) * dim;
            std::memcpy(keys + at, &k[r * kv_width + g * dim], dim * sizeof(float));
            std::memcpy(values + at, &v[r * kv_width + g * dim], dim * sizeof(float));
        }
    if (attend_rows(q.data(), q_width, dim, keys, capacity * dim, dim, values, capacity * dim, dim, allowed,
                    attended.data(), rows, L.heads, L.kv_heads, length + rows, dim, L.scale, threads) ||
        project(L.o, attended.data(), out, rows, q_width, threads))
        return -1;
    for (long i = 0; i < rows * L.hidden; ++i) out[i] += x[i];  // the residual
    if (rms_norm_rows(out, L.norm_post, L.eps, normed.data(), rows, L.hidden) ||
        project(L.gate, normed.data(), gate.data(), rows, L.hidden, threads) ||
        project(L.up, normed.data(), up.data(), rows, L.hidden, threads) ||
        silu_mul(gate.data(), up.data(), gate.data(), rows * L.intermediate) ||
        project(L.down, gate.data(), normed.data(), rows, L.intermediate, threads))
        return -1;
    for (long i = 0; i < rows * L.hidden; ++i) out[i] += normed[i];
    return 0;
}
