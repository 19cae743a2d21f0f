// The CPU kernels' C entry points, compiled once per instruction set by kernels/cpu_gemm.py
// together with that set's int8 source (int8_avx512.cpp, int8_avx2.cpp or int8_portable.cpp).
//
// Small-batch linear layers: out = x @ w.T + bias for the 1 to kMaxRows rows of a decode or
// verify pass, with fp32 weights or GGUF-quantized (packed) weights.
//
// fp32 weights: BLAS and oneDNN GEMMs are tuned for many rows; for 2-8 rows they cost 2-4x
// one row on the project's CPU, although the weights (which dominate the memory traffic) are
// the same. Here each weight vector is loaded once and multiplied with up to four input rows
// while it sits in registers, so a verify pass over 4 tokens costs little more than one.
//
// Packed weights are read at 4.5-8.5 bits per weight instead of 32. The AVX-512 and AVX2
// builds multiply them with int8-quantized activations; the portable build dequantizes four
// weight rows at a time into a buffer that stays in cache and runs the fp32 tiles over it.
//
// Every output element is summed in the same order whatever the number of rows, so a verify
// pass over n tokens yields bit for bit the numbers of n single-token passes.
//
// The library also holds the row-wise steps of a decoder layer that cost a decode pass most
// in torch calls (RMS norm: seven tensor operations; rotary embedding: eight; attention;
// SiLU times up), and a whole decoder layer of packed weights in one call built from them.
// Each treats every row alone, so they keep the row-count independence too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

using namespace codeassist;

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
// formats through int8 activations (int8_gemm); otherwise it is bit for bit small_batch_gemm over the
// dequantized weights.
extern "C" int quant_gemm(int format, const float* x, const uint8_t* w, const float* bias, float* out,
                          long m_len, long n_len, long k_len, int threads) {
    if (!valid_shape(format, m_len, n_len, k_len)) return -1;
    if (format != F32 && format != F16 && int8_gemm(format, x, w, bias, out, m_len, n_len, k_len, threads)) return 0;
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

// This build's int8 multiply-adds per second (see common.h): the peak bench decode reports against.
extern "C" double int8_peak_probe(long iterations, int threads) { return int8_peak_macs(iterations, threads); }

// Rows [0, n_len) of a packed tensor -> out (n_len x k_len floats): prefill tiles.
extern "C" int dequantize_rows(int format, const uint8_t* w, float* out, long n_len, long k_len, int threads) {
    const BlockShape shape = block_shape(format);
    if (shape.weights == 0 || n_len < 0 || k_len < 1 || k_len % shape.weights) return -1;
    const long row_bytes = k_len / shape.weights * shape.bytes;
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
    for (long n = 0; n < n_len; ++n) dequant_row(format, w + n * row_bytes, k_len, out + n * k_len);
    return 0;
}

// out[i] = silu(gate[i]) * up[i] (count a multiple of 8).
extern "C" int silu_mul(const float* gate, const float* up, float* out, long count) {
    if (count < 0 || count % 8) return -1;
    for (long i = 0; i < count; i += 8) {
        const V8 y = silu8(v_load(gate + i)) * v_load(up + i);
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
