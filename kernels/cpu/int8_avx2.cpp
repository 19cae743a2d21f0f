// The AVX2 build's int8 path (also the AVX-VNNI-less CPUs' best): 32 weights at a time, 8
// int32 sums per slice through maddubs: signed formats with the sign moved onto the
// activations, Q4_0 / Q5_0's unsigned weights as they are (dot_row_offset), Q6_K's with its
// scales in integers (dot_row_q6k), Q4_K / Q5_K's unsigned nibbles as they are, a block at a
// time (dot_row_k: on a first-generation EPYC their 1-row products went from ~5.5 to 7-9 GB/s
// of weights, the 1.5B's decode from 5.7 to 7.4 tokens/s). Built with -mavx2 -mfma -mf16c.
#include "x86_int8.h"

namespace codeassist {
namespace {

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
    std::vector<int16_t> sum16;  // sums of 16 q (for Q6_K's offset; empty for other formats)
};

// Quantizes x into `rows` (a per-thread buffer reused across calls: no allocation per call).
void quantize_rows(const float* x, long m_len, long k_len, QuantizedRows& rows) {
    rows.q.resize(m_len * k_len);
    rows.scale.resize(m_len * k_len / 32);
    rows.sum.resize(m_len * k_len / 32);
    for (long b = 0; b < m_len * k_len / 32; ++b)
        rows.scale[b] = quantize_block(x + 32 * b, &rows.q[32 * b], &rows.sum[b]);
}

// The sums of each 16 consecutive q of `rows` (at most 16 * 127: an int16 holds them).
void sum_groups_of_16(QuantizedRows& rows) {
    rows.sum16.resize(rows.q.size() / 16);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (size_t g = 0; g < rows.sum16.size(); g += 2) {
        // int32 lanes 0-3: the first 16 values' sums of 4, lanes 4-7: the next 16's
        const __m256i quads = _mm256_madd_epi16(
            _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)&rows.q[16 * g])), ones16);
        __m128i pair = _mm_hadd_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
        pair = _mm_hadd_epi32(pair, pair);  // lanes 0, 1: the two sums
        rows.sum16[g] = (int16_t)_mm_cvtsi128_si32(pair);
        rows.sum16[g + 1] = (int16_t)_mm_extract_epi32(pair, 1);
    }
}

// 32 signed weights of one row, as bytes, and their scale per int32 lane (each lane sums 4
// consecutive weights). Q8_0 is the one signed format left: the others have their own dot.
struct Slice {
    __m256i w;
    __m256 scale;
};

struct DecodeQ8_0 : layout::Q8_0 {
    static constexpr bool kHasMin = false;
    static constexpr int kOffset = 0;
    static void decode(const uint8_t* b, Slice* s) {
        s[0] = {_mm256_loadu_si256((const __m256i*)(b + qs)), _mm256_set1_ps(half_to_float(b + d))};
    }
};

// Q4_0, Q5_0: weights stored unsigned with a constant offset (w = d * (q - kOffset)), taken
// as they are by dot_row_offset.
struct DecodeQ4_0 : layout::Q4_0 {
    static constexpr bool kHasMin = false;
    static constexpr int kOffset = 8;
    static __m256i unsigned_weights(const uint8_t* b) { return nibbles_32(b + qs); }
};

struct DecodeQ5_0 : layout::Q5_0 {
    static constexpr bool kHasMin = false;
    static constexpr int kOffset = 16;
    static __m256i unsigned_weights(const uint8_t* b) {
        return _mm256_or_si256(nibbles_32(b + qs), _mm256_and_si256(bits_32(b + qh), _mm256_set1_epi8(0x10)));
    }
};

// Q4_K, Q5_K: no slice decoder; dot_row_k takes a whole block at a time.
template <typename L>
struct DecodeK : L {
    static constexpr bool kHasMin = true;
    static constexpr int kOffset = 0;
};

// Q6_K: no slice decoder; dot_row_q6k takes a whole block at a time.
struct DecodeQ6_K : layout::Q6_K {
    static constexpr bool kHasMin = false;
    static constexpr int kOffset = 0;
};

// C input rows times one packed weight row of a signed format (Q8_0): out[c] = dot(x row c, w row),
// each output accumulating its slices in k order whatever C. (Tiles of several weight rows, as
// the fp32 path uses, spill registers here and ran 2x slower on the project's CPU.)
template <typename D, int C>
inline void dot_row(const uint8_t* w, long k_len, const int8_t* const* xq, const float* const* xd, float* out) {
    constexpr int kSlices = D::kWeights / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
    Slice slices[kSlices];
    for (long block = 0; block < k_len / D::kWeights; ++block) {
        D::decode(w + block * D::kBytes, slices);
        for (int s = 0; s < kSlices; ++s) {
            const long xb = block * kSlices + s;
            const Slice& slice = slices[s];
            const __m256i magnitude = _mm256_sign_epi8(slice.w, slice.w);
            for (int c = 0; c < C; ++c) {
                const __m256i x = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)(xq[c] + 32 * xb)), slice.w);
                const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, x), ones);
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(slice.scale, _mm256_set1_ps(xd[c][xb])),
                                         acc[c]);
            }
        }
    }
    for (int c = 0; c < C; ++c) out[c] = lane_sum(acc[c]);
}

// C input rows times one packed weight row of an offset format (Q4_0, Q5_0): the unsigned
// weights go into maddubs as they are (no sign moved onto the activations), and the offset's
// share, kOffset * d * d_x * sum(x), is summed apart and taken off at the end (as the K
// formats' mins are): two sign instructions and the offset's subtraction less per slice. On a
// first-generation EPYC, Q5_0's 1-row products went from ~5-6 to ~7 GB/s of weights, the
// 0.5B's decode from ~17.1 to ~17.9 tokens/s (medians of 12 rounds each, alternated).
template <typename D, int C>
inline void dot_row_offset(const uint8_t* w, long k_len, const int8_t* const* xq, const float* const* xd,
                           const float* const* xs, float* out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[C];
    float offset[C];
    for (int c = 0; c < C; ++c) { acc[c] = _mm256_setzero_ps(); offset[c] = 0.0f; }
    for (long block = 0; block < k_len / 32; ++block) {
        const uint8_t* b = w + block * D::kBytes;
        const __m256i q = D::unsigned_weights(b);
        const float d = half_to_float(b + D::d);
        for (int c = 0; c < C; ++c) {
            const float scale = d * xd[c][block];
            const __m256i x = _mm256_loadu_si256((const __m256i*)(xq[c] + 32 * block));
            const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), ones);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), acc[c]);
            offset[c] += scale * xs[c][block];
        }
    }
    for (int c = 0; c < C; ++c) out[c] = lane_sum(acc[c]) - D::kOffset * offset[c];
}

// Q6_K rows, one 256-weight block at a time: the unsigned 6-bit weights go into maddubs as
// they are and each 16-weight group's int8 scale is applied in integers (madd: the low lane
// of a slice has its first group's scale, the high lane its second's), so a slice costs one
// float conversion and one fmadd per input row. The offset's share (32 * scale * the group's
// sum of x, from the activations' sums of 16) is one vector per block and input row, taken
// off at the end. On a first-generation EPYC, against the signed path: 1-row products 1.4x
// faster (the 1.5B's output head 23.9 -> 16.6 ms), 4 rows 1.3x, the same error; the 1.5B's
// decode ~7.5 -> ~8.1 tokens/s (medians of 8 rounds each, alternated).
template <int C>
inline void dot_row_q6k(const uint8_t* w, long k_len, const int8_t* const* xq, const float* const* xd,
                        const int16_t* const* xs16, float* out) {
    using L = layout::Q6_K;
    const __m256i mask4 = _mm256_set1_epi8(0xF), mask2 = _mm256_set1_epi8(3);
    const __m128i evens_then_odds = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256 acc[C], offsets[C];
    for (int c = 0; c < C; ++c) { acc[c] = _mm256_setzero_ps(); offsets[c] = _mm256_setzero_ps(); }
    alignas(32) float scaled[C][8];  // d * the activation scale of each of the block's slices
    for (long block = 0; block < k_len / 256; ++block) {
        const uint8_t* b = w + block * L::kBytes;
        const __m256 d = _mm256_set1_ps(half_to_float(b + L::d));
        const __m128i sc = _mm_loadu_si128((const __m128i*)(b + L::scales));
        const __m256i in_order = _mm256_cvtepi8_epi16(sc);  // int16 lane j: the scale of group j
        const __m256i by_lane = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, evens_then_odds));
        for (int c = 0; c < C; ++c) {
            const __m256 slice_scales = _mm256_mul_ps(d, _mm256_loadu_ps(xd[c] + 8 * block));
            _mm256_store_ps(scaled[c], slice_scales);
            // int32 lane s: scale(2s) * sum(x of group 2s) + scale(2s+1) * sum(x of group 2s+1)
            const __m256i group_sums = _mm256_loadu_si256((const __m256i*)(xs16[c] + 16 * block));
            offsets[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(in_order, group_sums)), slice_scales,
                                         offsets[c]);
        }
        for (int half = 0; half < 2; ++half) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i*)(b + L::ql + 64 * half));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i*)(b + L::ql + 64 * half + 32));
            const __m256i high = _mm256_loadu_si256((const __m256i*)(b + L::qh + 32 * half));
            const __m256i low[4] = {ql0, ql1, _mm256_srli_epi16(ql0, 4), _mm256_srli_epi16(ql1, 4)};
            for (int part = 0; part < 4; ++part) {
                const int slice = 4 * half + part;
                const __m256i h = _mm256_and_si256(_mm256_srli_epi16(high, 2 * part), mask2);
                const __m256i q = _mm256_or_si256(_mm256_and_si256(low[part], mask4), _mm256_slli_epi16(h, 4));
                const __m256i pick = _mm256_set1_epi16((short)(2 * slice | (2 * slice + 1) << 8));  // int16 `slice`
                const __m256i scales = _mm256_shuffle_epi8(by_lane, pick);
                for (int c = 0; c < C; ++c) {
                    const __m256i x = _mm256_loadu_si256((const __m256i*)(xq[c] + 256 * block + 32 * slice));
                    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scales);
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_broadcast_ss(&scaled[c][slice]), acc[c]);
                }
            }
        }
    }
    for (int c = 0; c < C; ++c) out[c] = lane_sum(acc[c]) - 32.0f * lane_sum(offsets[c]);
}

// Q4_K / Q5_K rows, one 256-weight block at a time: the block's eight scales times its eight
// slices' activation scales in one vector (kept in memory and broadcast per slice), and the
// mins' term (min_j * d_x * sum of x's int8 values) as one vector per block and input row.
// The scaled sums accumulate per slice in k order as dot_row's do; the mins' lanes are summed
// at the end.
template <typename D, int C>
inline void dot_row_k(const uint8_t* w, long k_len, const int8_t* const* xq, const float* const* xd,
                      const float* const* xs, float* out) {
    constexpr bool kFive = D::kType == Q5_K;
    const __m256i mask = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256 acc[C], mins_acc[C];
    for (int c = 0; c < C; ++c) { acc[c] = _mm256_setzero_ps(); mins_acc[c] = _mm256_setzero_ps(); }
    alignas(32) float scaled[C][8];
    for (long block = 0; block < k_len / 256; ++block) {
        const uint8_t* b = w + block * D::kBytes;
        __m256 scales, mins;
        k_scales_times<D>(b, &scales, &mins);
        for (int c = 0; c < C; ++c) {
            const __m256 d = _mm256_loadu_ps(xd[c] + 8 * block);
            _mm256_store_ps(scaled[c], _mm256_mul_ps(scales, d));
            mins_acc[c] = _mm256_fmadd_ps(mins, _mm256_mul_ps(d, _mm256_loadu_ps(xs[c] + 8 * block)), mins_acc[c]);
        }
        const uint8_t* qs = b + D::qs;
        __m256i qh = _mm256_setzero_si256();
        if constexpr (kFive) qh = _mm256_loadu_si256((const __m256i*)(b + D::qh));
        for (int chunk = 0; chunk < 4; ++chunk) {
            const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * chunk));
            for (int half = 0; half < 2; ++half) {
                const int j = 2 * chunk + half;
                __m256i q = _mm256_and_si256(half ? _mm256_srli_epi16(v, 4) : v, mask);
                if constexpr (kFive) {
                    const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), one);
                    q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
                }
                for (int c = 0; c < C; ++c) {
                    const __m256i x = _mm256_loadu_si256((const __m256i*)(xq[c] + 256 * block + 32 * j));
                    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), ones16);
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_broadcast_ss(&scaled[c][j]), acc[c]);
                }
            }
        }
    }
    for (int c = 0; c < C; ++c) out[c] = lane_sum(acc[c]) - lane_sum(mins_acc[c]);
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
                    const int16_t* xs16[C];
                    for (int c = 0; c < C; ++c) {
                        xq[c] = &x.q[(m + c) * k_len];
                        xd[c] = &x.scale[(m + c) * blocks];
                        xs[c] = &x.sum[(m + c) * blocks];
                        xs16[c] = x.sum16.empty() ? nullptr : &x.sum16[(m + c) * k_len / 16];
                    }
                    if constexpr (D::kType == Q6_K)
                        dot_row_q6k<C>(row, k_len, xq, xd, xs16, acc);
                    else if constexpr (D::kHasMin)
                        dot_row_k<D, C>(row, k_len, xq, xd, xs, acc);
                    else if constexpr (D::kOffset != 0)
                        dot_row_offset<D, C>(row, k_len, xq, xd, xs, acc);
                    else
                        dot_row<D, C>(row, k_len, xq, xd, acc);
                });
}

// Returns false where the format has no int8 path (the float path is used).
template <typename Body>
bool with_decoder(int format, Body body) {
    switch (format) {
        case Q4_0: body(DecodeQ4_0{}); return true;
        case Q5_0: body(DecodeQ5_0{}); return true;
        case Q8_0: body(DecodeQ8_0{}); return true;
        case Q4_K: body(DecodeK<layout::Q4_K>{}); return true;
        case Q5_K: body(DecodeK<layout::Q5_K>{}); return true;
        case Q6_K: body(DecodeQ6_K{}); return true;
        default: return false;
    }
}

}  // namespace

bool int8_gemm(int format, const float* x, const uint8_t* w, const float* bias, float* out, long m_len, long n_len,
               long k_len, int threads) {
    static thread_local QuantizedRows buffer;
    const QuantizedRows& xq = buffer;  // a reference: OpenMP workers must read the caller's buffer
    return with_decoder(format, [&](auto decoder) {
        using D = decltype(decoder);
        quantize_rows(x, m_len, k_len, buffer);
        if (format == Q6_K)
            sum_groups_of_16(buffer);
        else
            buffer.sum16.clear();
        parallel_rows(n_len, threads, [&](long begin, long end) {
            int8_rows<D>(xq, w, bias, out, m_len, n_len, k_len, begin, end);
        });
    });
}

double int8_peak_macs(long iterations, int threads) {
    // The step every product above takes per 32 weights: maddubs, madd against ones, add.
    // Six chains with their own weights; the empty asm makes the compiler treat the inputs as
    // changed each round, so nothing is hoisted out of the loop.
    return peak_rate(iterations, threads, 6.0 * 32.0, [](long rounds) {
        __m256i w0 = _mm256_set1_epi8(1), w1 = _mm256_set1_epi8(2), w2 = _mm256_set1_epi8(3);
        __m256i w3 = _mm256_set1_epi8(4), w4 = _mm256_set1_epi8(5), w5 = _mm256_set1_epi8(6);
        const __m256i x = _mm256_set1_epi8(7), ones = _mm256_set1_epi16(1);
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
        for (long i = 0; i < rounds; ++i) {
            asm volatile("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3), "+x"(w4), "+x"(w5));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(w0, x), ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(w1, x), ones));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(w2, x), ones));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(w3, x), ones));
            a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(_mm256_maddubs_epi16(w4, x), ones));
            a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(_mm256_maddubs_epi16(w5, x), ones));
        }
        const __m256i all = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                             _mm256_add_epi32(a4, a5));
        return _mm256_extract_epi32(all, 0);
    });
}

}  // namespace codeassist
