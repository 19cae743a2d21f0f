// The AVX-512 VNNI build's int8 path. Built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mavx512vnni (and the AVX2 flags for the shared parts).
#include "x86_int8.h"

namespace codeassist {
namespace {

// 64 weights per instruction, no sign tricks.
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
struct Pack8_0 : layout::Q8_0 {
    static constexpr int kBlocks = 4, kPairs = 2, kOffset = 128;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(a + qs))),
                                                 _mm256_loadu_si256((const __m256i*)(b + qs)), 1);
            p[i] = {_mm512_xor_si512(w, _mm512_set1_epi8((char)0x80)), two_scales(a + d, b + d)};
        }
    }
};

struct Pack4_0 : layout::Q4_0 {
    static constexpr int kBlocks = 4, kPairs = 2, kOffset = 8;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            p[i] = {nibbles_64(a + qs, b + qs), two_scales(a + d, b + d)};
        }
    }
};

struct Pack5_0 : layout::Q5_0 {
    static constexpr int kBlocks = 4, kPairs = 2, kOffset = 16;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        for (int i = 0; i < 2; ++i) {
            const uint8_t *a = blocks[2 * i], *b = blocks[2 * i + 1];
            uint32_t ha, hb;  // bit j: the fifth bit of weight j
            std::memcpy(&ha, a + qh, 4);
            std::memcpy(&hb, b + qh, 4);
            const __m512i low = nibbles_64(a + qs, b + qs);
            const __mmask64 fifth = _cvtu64_mask64(ha | (uint64_t)hb << 32);
            p[i] = {_mm512_mask_add_epi8(low, fifth, low, _mm512_set1_epi8(0x10)), two_scales(a + d, b + d)};
        }
    }
};

// Q4_K, Q5_K: one 256-weight block, four pairs (sub-blocks 2c and 2c+1), and the eight mins
// as one vector.
template <typename L>
struct PackK : L {
    static constexpr bool kFive = L::kType == Q5_K;
    static constexpr int kBlocks = 1, kPairs = 4, kOffset = 0;
    static constexpr bool kHasMin = true;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256* mins) {
        const uint8_t* b = blocks[0];
        __m256 scales8;
        k_scales_times<L>(b, &scales8, mins);
        const __m512 lane_scales = _mm512_castps256_ps512(scales8);
        const uint8_t* low_bits = b + L::qs;
        const __m512i mask = _mm512_set1_epi8(0xF);
        __m512i high_bits = _mm512_setzero_si512();
        if constexpr (kFive) high_bits = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(b + L::qh)));
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256((const __m256i*)(low_bits + 32 * c));
            __m512i u = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), mask);
            if constexpr (kFive) {  // bit 2c of qh[l]: weight l of sub-block 2c; bit 2c+1: of sub-block 2c+1
                const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                                        _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
                u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(high_bits, bits), u, _mm512_set1_epi8(0x10));
            }
            const __m512i lanes = _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
            p[c] = {u, _mm512_permutexvar_ps(lanes, lane_scales)};
        }
    }
};

// Q6_K: one 256-weight block, four pairs; each int32 lane has one of 16 scales.
struct Pack6_K : layout::Q6_K {
    static constexpr int kBlocks = 1, kPairs = 4, kOffset = 32;
    static constexpr bool kHasMin = false;
    static void decode(const uint8_t* const* blocks, Pair* p, __m256*) {
        const uint8_t* b = blocks[0];
        const __m512 lane_scales = _mm512_mul_ps(
            _mm512_set1_ps(half_to_float(b + d)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + scales)))));
        const __m512i mask4 = _mm512_set1_epi8(0xF), mask2 = _mm512_set1_epi8(3);
        for (int half = 0; half < 2; ++half) {
            const __m512i low_bits = _mm512_loadu_si512(b + ql + 64 * half);  // weights l and l + 32 (low nibbles), l + 64 and l + 96 (high)
            const __m256i h = _mm256_loadu_si256((const __m256i*)(b + qh + 32 * half));
            const __m512i high_bits = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1);
            for (int part = 0; part < 2; ++part) {
                const __m512i low = _mm512_and_si512(part ? _mm512_srli_epi16(low_bits, 4) : low_bits, mask4);
                const __m512i high = _mm512_and_si512(part ? _mm512_srli_epi16(high_bits, 4) : high_bits, mask2);
                const int t = 2 * half + part;  // pair t: scales 4t .. 4t + 3, four lanes each
                const __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32(4 * t),
                    _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
                p[t] = {_mm512_or_si512(low, _mm512_slli_epi16(high, 4)), _mm512_permutexvar_ps(lanes, lane_scales)};
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
        case Q4_K: body(PackK<layout::Q4_K>{}); return true;
        case Q5_K: body(PackK<layout::Q5_K>{}); return true;
        case Q6_K: body(Pack6_K{}); return true;
        default: return false;
    }
}

}  // namespace

bool int8_gemm(int format, const float* x, const uint8_t* w, const float* bias, float* out, long m_len, long n_len,
               long k_len, int threads) {
    static thread_local Activations512 buffer;
    const Activations512& a = buffer;  // a reference: OpenMP workers must read the caller's buffer
    return with_packer(format, [&](auto packer) {
        using D = decltype(packer);
        prepare_activations(x, m_len, k_len, D::kOffset, D::kPairs * kPairWeights, D::kHasMin, buffer);
        parallel_rows(n_len, threads, [&](long begin, long end) {
            int8_rows_512<D>(a, w, bias, out, m_len, n_len, k_len, begin, end);
        });
    });
}

double int8_peak_macs(long iterations, int threads) {
    // The step every product above takes per 64 weights: one dpbusd, in twelve independent
    // chains (its latency times its throughput); the empty asm makes the compiler treat the
    // weights as changed each round, so nothing is hoisted out of the loop.
    return peak_rate(iterations, threads, 12.0 * 64.0, [](long rounds) {
        __m512i w = _mm512_set1_epi8(3);
        const __m512i x = _mm512_set1_epi8(5);
        __m512i acc[12];
        for (auto& a : acc) a = _mm512_setzero_si512();
        for (long i = 0; i < rounds; ++i) {
            asm volatile("" : "+v"(w));
            for (auto& a : acc) a = _mm512_dpbusd_epi32(a, w, x);
        }
        __m512i all = acc[0];
        for (int c = 1; c < 12; ++c) all = _mm512_add_epi32(all, acc[c]);
        return _mm_extract_epi32(_mm512_castsi512_si128(all), 0);
    });
}

}  // namespace codeassist
