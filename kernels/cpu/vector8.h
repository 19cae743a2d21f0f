// 8-lane float vectors: AVX2 intrinsics where the build has them, GCC/Clang vector extensions
// elsewhere. Both give the same sums in the same order (lane_sum, lane_sums8), so the
// portable build's fp32 results equal the AVX2 build's.
#pragma once

#include <cmath>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace codeassist {

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

// silu(g) = g * sigmoid(g), the sigmoid from t = e^-|g| (never overflows): 1 / (1 + t) for
// g >= 0, t / (1 + t) below.
inline V8 silu8(V8 g) {
#if defined(__AVX2__) && defined(__FMA__)
    const V8 t = exp_nonpositive(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));  // -|g|
    const V8 above = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_GE_OQ);
    const V8 numerator = _mm256_blendv_ps(t, _mm256_set1_ps(1.0f), above);
#else
    const V8 t = exp_nonpositive(g > 0 ? -g : g);
    const V8 numerator = g >= 0 ? v_zero() + 1.0f : t;
#endif
    return g * numerator / (t + 1.0f);
}

}  // namespace codeassist
