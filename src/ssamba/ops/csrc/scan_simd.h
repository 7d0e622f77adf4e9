// SIMD arithmetic and threads shared by the CPU selective scan (selective_scan_cpu.cpp),
// the SiLU(conv) kernel (conv_silu_cpu.cpp) and the roofline micro-benchmark that
// measures the scan's bound (ssamba/benchmarks/csrc/scan_bound.cpp): float vectors as
// wide as the target's registers, the exp2/log/sigmoid/softplus polynomials, the
// transposing reduction, denormal flushing and the thread launcher. Header-only,
// everything in an anonymous namespace (each including file gets its own copy).
//
// The lane count W is chosen at compile time from the target: 16 with AVX-512, 8 with
// AVX/AVX2, 4 otherwise (SSE2, the x86-64 baseline; NEON on arm64; anything else).
// Vectors wider than the registers would be split by the compiler into several, and the
// kernels' state tiles, sized in vectors, would no longer fit the register file (an
// AVX2 build with 16-lane vectors spilled in every inner loop). -DSSAMBA_SIMD_WIDTH=N
// (4, 8 or 16) overrides the choice. GCC >= 9 and clang >= 14: GNU vector extensions
// only, with a few AVX-512 intrinsics where they pay.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace {

#ifndef SSAMBA_SIMD_WIDTH
#if defined(__AVX512F__)
#define SSAMBA_SIMD_WIDTH 16
#elif defined(__AVX__)
#define SSAMBA_SIMD_WIDTH 8
#else
#define SSAMBA_SIMD_WIDTH 4
#endif
#endif

constexpr int W = SSAMBA_SIMD_WIDTH;  // lanes per vector
static_assert(W == 4 || W == 8 || W == 16, "SSAMBA_SIMD_WIDTH must be 4, 8 or 16");
#if SSAMBA_SIMD_WIDTH == 16 && defined(__AVX512F__)
#define SSAMBA_AVX512 1  // the 16-lane vectors are zmm registers: the intrinsics below apply
#endif

typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

// Time steps between the forward's checkpoints, and the backward's unit of work (a
// multiple of W). 32 keeps a chunk's working set in the backward - its states, decays,
// per-step sums and its rows of B, C, dB and dC, about 16 KB - inside a 32 KB L1; 64
// spilled out of it and 16 was slower (docs/performance.md, "Constants").
#ifndef SSAMBA_SCAN_CHUNK
#define SSAMBA_SCAN_CHUNK 32
#endif
constexpr int K = SSAMBA_SCAN_CHUNK;
static_assert(K % W == 0, "chunk length must be a multiple of the vector width");
constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2 = 0.693147180559945309f;

#define INLINE static inline __attribute__((always_inline))

// A lane permutation of two vectors with indices known at compile time (0..W-1 pick a's
// lanes, W..2W-1 b's): clang's and GCC >= 12's __builtin_shufflevector, else GCC's
// __builtin_shuffle, which older GCC has and clang lacks.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SSAMBA_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SSAMBA_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

INLINE vf splat(float x) { return vf{} + x; }

INLINE vf loadv(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
INLINE void storev(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

template <int... J>
INLINE vf reversed(vf v, std::integer_sequence<int, J...>) {
    return SSAMBA_SHUFFLE(v, v, (W - 1 - J)...);
}
// The lanes in the opposite order.
INLINE vf reversev(vf v) { return reversed(v, std::make_integer_sequence<int, W>{}); }

INLINE float hsum(vf v) {  // the sum of the lanes, as a pairwise tree
    float s[W];
    std::memcpy(s, &v, sizeof(v));
    for (int n = W / 2; n > 0; n /= 2)
        for (int i = 0; i < n; ++i) s[i] += s[i + n];
    return s[0];
}

// One level of the transposing reduction. Each of a and b is made of blocks of B lanes,
// each block the partial sums of one vector of the input. The result has blocks of B/2:
// every block of a, then every block of b, each folded in half (its first half plus its
// second). Lane j of the first operand of the sum comes from lane fold_index(B, j).
constexpr int fold_index(int B, int j) {
    return (j / (B / 2)) / (W / B) * W + (j / (B / 2)) % (W / B) * B + j % (B / 2);
}
template <int B, int... J>
INLINE vf fold_pair(vf a, vf b, std::integer_sequence<int, J...>) {
    return SSAMBA_SHUFFLE(a, b, fold_index(B, J)...) + SSAMBA_SHUFFLE(a, b, (fold_index(B, J) + B / 2)...);
}
template <int B>
INLINE void fold_levels(vf* v, int n) {
    if constexpr (B > 1) {
        for (int i = 0; i < n / 2; ++i) v[i] = fold_pair<B>(v[2 * i], v[2 * i + 1], std::make_integer_sequence<int, W>{});
        fold_levels<B / 2>(v, n / 2);
    }
}

// out[i] = sum of the lanes of r[i], i < W: log2(W) levels of fold_pair, W - 1 shuffle
// pairs in all (on AVX-512, unpacks and 128-bit shuffles with the same result).
INLINE void reduce_lanes(const vf* r, float* out) {
#if defined(SSAMBA_AVX512)
    __m512 s[8], t[4];
    for (int i = 0; i < 8; ++i) {
        __m512 a = r[2 * i], b = r[2 * i + 1];
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    for (int i = 0; i < 4; ++i) {
        __m512 a = s[2 * i], b = s[2 * i + 1];
        t[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 res = _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out, res);
#else
    vf v[W];
    for (int i = 0; i < W; ++i) v[i] = r[i];
    fold_levels<W>(v, W);
    storev(out, v[0]);
#endif
}

INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }

// 2^r for |r| <= 1/2 (a little beyond is fine): a degree-5 polynomial fitted to minimise
// the relative error, with p(0) = 1. One multiply-add fewer than the degree-6 one it
// replaced, in every state update; tests/ops/test_scan_cpu.py bounds the error through
// softplus and sigmoid.
INLINE vf exp2_poly(vf r) {
    vf p = splat(1.326472721e-03f);
    p = p * r + 9.671512650e-03f;
    p = p * r + 5.550733743e-02f;
    p = p * r + 2.402224209e-01f;
    p = p * r + 6.931469776e-01f;
    return p * r + 1.0f;
}

INLINE vf vround(vf x) {  // to the nearest integer
#if defined(SSAMBA_AVX512)
    return _mm512_mask_roundscale_ps(x, 0xFFFF, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23
    return (x + magic) - magic;
#endif
}

// p * 2^n for integral n, with proper underflow to 0 and overflow to inf: without
// AVX-512's scalef, n is clamped to [-127, 128] and put in the exponent bits, where -127
// gives the bits of 0 (an exact 0) and 128 those of inf, so no compare is needed.
INLINE vf vscale(vf p, vf n) {
#if defined(SSAMBA_AVX512)
    return _mm512_scalef_ps(p, n);
#else
    const vf nc = vmin(vmax(n, splat(-127.0f)), splat(128.0f));
    return p * (vf)((__builtin_convertvector(nc, vi) + 127) << 23);
#endif
}

// 2^x, with exp2_poly's error.
INLINE vf vexp2(vf x) {
    const vf n = vround(x);
    return vscale(exp2_poly(x - n), n);
}

// e^x, as accurate for large |x| as near 0. The reduction x - n ln 2 is done in two parts
// (Cody and Waite), so nothing is lost to the rounding of x * log2(e), whose error grows
// with |x|; the remainder's product with log2(e) is small and rounds harmlessly.
INLINE vf vexp(vf x) {
    const vf n = vround(x * LOG2E);
    vf r = x - n * 0.693145751953125f;  // ln 2's leading 16 bits: n * this is exact
    r = r - n * 1.4286068203e-06f;     // the rest of ln 2
    return vscale(exp2_poly(r * LOG2E), n);
}

// 1/x: on AVX-512 a 14-bit estimate refined by one Newton step (~1 ulp); vdivps has a
// far lower throughput.
INLINE vf vrcp(vf x) {
#if defined(SSAMBA_AVX512)
    const vf r = _mm512_rcp14_ps(x);
    return r * (2.0f - x * r);
#else
    return 1.0f / x;
#endif
}

// log1p(y) for y in [0, 1], relative error ~1e-7, accurate for tiny y: log1p(y) =
// 2 atanh(s) with s = y / (2 + y) in [0, 1/3], and 2 atanh(s) = 2s (1 + w/3 + w^2/5 + ...)
// with w = s^2 <= 1/9, whose terms past w^6/13 add less than 2e-8 relative.
INLINE vf vlog1p_01(vf y) {
    const vf s = y * vrcp(y + 2.0f);
    const vf w = s * s;
    vf q = splat(1.0f / 13.0f);
    q = q * w + 1.0f / 11.0f;
    q = q * w + 1.0f / 9.0f;
    q = q * w + 1.0f / 7.0f;
    q = q * w + 1.0f / 5.0f;
    q = q * w + 1.0f / 3.0f;
    q = q * w + 1.0f;
    return (s + s) * q;
}

// 1 / (1 + exp(-x)); the clamp keeps vrcp away from inf (sigmoid(-80) ~ 1.8e-35).
INLINE vf vsigmoid(vf x) { return vrcp(vexp(vmin(-x, splat(80.0f))) + 1.0f); }

// torch.nn.functional.softplus (beta=1, threshold=20) and its derivative sigmoid(x)
// (1 above the threshold, as in torch).
INLINE vf vsoftplus(vf x, vf* deriv) {
    const vf e = vexp(-vmax(x, -x));  // exp(-|x|)
    const vf sp = vmax(x, splat(0.0f)) + vlog1p_01(e);
    const vi lin = x > splat(20.0f);
    if (deriv) {
        const vf sg = (x >= splat(0.0f) ? splat(1.0f) : e) * vrcp(e + 1.0f);
        *deriv = lin ? splat(1.0f) : sg;
    }
    return lin ? x : sp;
}

// Denormals: a state decaying through the subnormal range (e.g. silence in audio) makes
// every FMA take a microcode assist (measured: 6x slower). Flush them to zero while the
// kernel runs; the caller's floating-point mode is restored afterwards.
class FlushDenormals {
   public:
    FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
        saved_ = _mm_getcsr();
        _mm_setcsr(saved_ | 0x8040);  // FTZ | DAZ
#elif defined(__aarch64__)
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
        uint64_t fz = saved_ | (1ull << 24);
        __asm__ __volatile__("msr fpcr, %0" : : "r"(fz));
#endif
    }
    ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
        _mm_setcsr(saved_);
#elif defined(__aarch64__)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
    }
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

   private:
#if defined(__aarch64__)
    uint64_t saved_ = 0;
#else
    unsigned int saved_ = 0;
#endif
};

// Runs fn(0..nthreads-1). Returns 0, or 2 if a thread could not be started or fn threw
// (e.g. out of memory).
//
// Built with OpenMP, the slices run on an OpenMP team. Loaded into a process where
// PyTorch has already loaded its libgomp.so.1, that is PyTorch's own thread pool: the
// workers that spin for a while after every torch op pick the slices up instead of
// competing for the cores with threads of ours. (With std::thread, the kernel's second
// thread ran no faster than one inside a model step on a 2-core machine.) A team smaller
// than asked for (nested regions, thread limits) still runs every slice.
template <typename F>
int run_threads(int nthreads, F&& fn) {
    std::atomic<int> failed{0};
    auto body = [&](int t) {
        try {
            FlushDenormals ftz;
            fn(t);
        } catch (...) {
            failed = 1;
        }
    };
    if (nthreads <= 1) {
        body(0);
        return failed ? 2 : 0;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        const int team = omp_get_num_threads();
        for (int t = omp_get_thread_num(); t < nthreads; t += team) body(t);
    }
#else
    std::vector<std::thread> pool;
    pool.reserve(nthreads - 1);
    try {
        for (int i = 1; i < nthreads; ++i) pool.emplace_back(body, i);
    } catch (...) {
        failed = 1;
    }
    if (!failed) body(0);
    for (auto& t : pool) t.join();
#endif
    return failed ? 2 : 0;
}

}  // namespace
