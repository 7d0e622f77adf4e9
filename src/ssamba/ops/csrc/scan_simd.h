// SIMD arithmetic and threads shared by the CPU selective scan (selective_scan_cpu.cpp)
// and the roofline micro-benchmark that measures its bound (ssamba/benchmarks/csrc/
// scan_bound.cpp): 16-lane float vectors, the exp2/log/sigmoid/softplus polynomials,
// the transposing reduction, denormal flushing and the thread launcher. Header-only,
// everything in an anonymous namespace (each including file gets its own copy).

#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <thread>
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


typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

constexpr int W = 16;         // lanes per vector
// Time steps between the forward's checkpoints, and the backward's unit of work (a
// multiple of W). 32 keeps a chunk's working set in the backward - its states, decays,
// per-step sums and its rows of B, C, dB and dC, about 16 KB - inside a 32 KB L1: with 64
// it spilled, and the backward ran 0.75-0.97x as fast at L = 57 to 2048 (examples/
// kernel_ab.py, 2 threads, AMD EPYC), the forward within a few percent either way; 16
// was slower in both.
#ifndef SSAMBA_SCAN_CHUNK
#define SSAMBA_SCAN_CHUNK 32
#endif
constexpr int K = SSAMBA_SCAN_CHUNK;
static_assert(K % W == 0, "chunk length must be a multiple of the vector width");
constexpr float LOG2E = 1.44269504088896341f;

#define INLINE static inline __attribute__((always_inline))

INLINE v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

INLINE v16 loadv(const float* p) {
    v16 v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
INLINE void storev(float* p, v16 v) { std::memcpy(p, &v, sizeof(v)); }

// The lanes in the opposite order.
INLINE v16 reversev(v16 v) {
    return __builtin_shuffle(v, (vi16){15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
}

INLINE float hsum(v16 v) {  // halving sum (memcpy halves: portable to GCC < 12)
    v8 a, b;
    std::memcpy(&a, &v, sizeof(a));
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof(a), sizeof(b));
    a += b;
    v4 c, e;
    std::memcpy(&c, &a, sizeof(c));
    std::memcpy(&e, reinterpret_cast<const char*>(&a) + sizeof(c), sizeof(e));
    c += e;
    return (c[0] + c[2]) + (c[1] + c[3]);
}

// out[i] = sum of the lanes of r[i], i < 16 (a transposing reduction on AVX-512).
INLINE void reduce16(const v16* r, float* out) {
#if defined(__AVX512F__)
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
    for (int i = 0; i < 16; ++i) out[i] = hsum(r[i]);
#endif
}

INLINE v16 vmax(v16 a, v16 b) { return a > b ? a : b; }
INLINE v16 vmin(v16 a, v16 b) { return a < b ? a : b; }

// 2^r for |r| <= 1/2 (a little beyond is fine): a degree-5 polynomial fitted to minimise
// the relative error, with p(0) = 1. One multiply-add fewer than the degree-6 one it
// replaced, in every state update; tests/ops/test_scan_cpu.py bounds the error through
// softplus and sigmoid.
INLINE v16 exp2_poly(v16 r) {
    v16 p = splat(1.326472721e-03f);
    p = p * r + 9.671512650e-03f;
    p = p * r + 5.550733743e-02f;
    p = p * r + 2.402224209e-01f;
    p = p * r + 6.931469776e-01f;
    return p * r + 1.0f;
}

INLINE v16 vround(v16 x) {  // to the nearest integer
#if defined(__AVX512F__)
    return _mm512_mask_roundscale_ps(x, 0xFFFF, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const v16 magic = splat(12582912.0f);  // 1.5 * 2^23
    return (x + magic) - magic;
#endif
}

// p * 2^n for integral n, with proper underflow to 0 and overflow to inf.
INLINE v16 vscale(v16 p, v16 n) {
#if defined(__AVX512F__)
    return _mm512_scalef_ps(p, n);
#else
    const v16 nc = vmin(vmax(n, splat(-127.0f)), splat(128.0f));
    v16 res = p * (v16)((__builtin_convertvector(nc, vi16) + 127) << 23);
    res = n < splat(-126.0f) ? splat(0.0f) : res;
    return n > splat(127.0f) ? splat(__builtin_inff()) : res;
#endif
}

// 2^x, with exp2_poly's error.
INLINE v16 vexp2(v16 x) {
    const v16 n = vround(x);
    return vscale(exp2_poly(x - n), n);
}

// e^x, as accurate for large |x| as near 0. The reduction x - n ln 2 is done in two parts
// (Cody and Waite), so nothing is lost to the rounding of x * log2(e), whose error grows
// with |x|; the remainder's product with log2(e) is small and rounds harmlessly.
INLINE v16 vexp(v16 x) {
    const v16 n = vround(x * LOG2E);
    v16 r = x - n * 0.693145751953125f;  // ln 2's leading 16 bits: n * this is exact
    r = r - n * 1.4286068203e-06f;     // the rest of ln 2
    return vscale(exp2_poly(r * LOG2E), n);
}

// 1/x: on AVX-512 a 14-bit estimate refined by one Newton step (~1 ulp); vdivps has a
// far lower throughput.
INLINE v16 vrcp(v16 x) {
#if defined(__AVX512F__)
    const v16 r = _mm512_rcp14_ps(x);
    return r * (2.0f - x * r);
#else
    return 1.0f / x;
#endif
}

// log1p(y) for y in [0, 1], relative error ~1e-7, accurate for tiny y: log1p(y) =
// 2 atanh(s) with s = y / (2 + y) in [0, 1/3], and 2 atanh(s) = 2s (1 + w/3 + w^2/5 + ...)
// with w = s^2 <= 1/9, whose terms past w^6/13 add less than 2e-8 relative.
INLINE v16 vlog1p_01(v16 y) {
    const v16 s = y * vrcp(y + 2.0f);
    const v16 w = s * s;
    v16 q = splat(1.0f / 13.0f);
    q = q * w + 1.0f / 11.0f;
    q = q * w + 1.0f / 9.0f;
    q = q * w + 1.0f / 7.0f;
    q = q * w + 1.0f / 5.0f;
    q = q * w + 1.0f / 3.0f;
    q = q * w + 1.0f;
    return (s + s) * q;
}

// 1 / (1 + exp(-x)); the clamp keeps vrcp away from inf (sigmoid(-80) ~ 1.8e-35).
INLINE v16 vsigmoid(v16 x) { return vrcp(vexp(vmin(-x, splat(80.0f))) + 1.0f); }

// torch.nn.functional.softplus (beta=1, threshold=20) and its derivative sigmoid(x)
// (1 above the threshold, as in torch).
INLINE v16 vsoftplus(v16 x, v16* deriv) {
    const v16 e = vexp(-vmax(x, -x));  // exp(-|x|)
    const v16 sp = vmax(x, splat(0.0f)) + vlog1p_01(e);
    const vi16 lin = x > splat(20.0f);
    if (deriv) {
        const v16 sg = (x >= splat(0.0f) ? splat(1.0f) : e) * vrcp(e + 1.0f);
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
