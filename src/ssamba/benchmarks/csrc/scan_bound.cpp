// Roofline micro-benchmark of the CPU selective scan (ssamba bench scan), apart from the
// shipped kernel: the forward inner loop's arithmetic with the kernel's own SIMD code
// (scan_simd.h), on operands held in registers. Built and cached like the kernel.

#include "scan_simd.h"

namespace {

// It runs the forward inner loop's
// arithmetic for one state vector of W lanes (scan_simd.h: the target's width) - a = exp2(dt*A) with the same vexp2,
// h = a*h + dtu*B, acc += C*h - on state and operands held in registers: B and C are
// loop-invariant registers, dt and dtu are broadcast from a K-long array that stays in
// L1 (as the kernel's dtb/dtub do), nothing else is loaded or stored inside the loop.
// CH independent channels are interleaved per thread, so the loop is limited by the
// core's vector-arithmetic throughput rather than by the FMA latency of the h chain.
// Timed by the caller; this is the floor for the scan's state updates on this CPU.
template <int CH>
float bound_loop(int64_t steps) {
    alignas(64) float dtb[K], dtub[K];
    for (int k = 0; k < K; ++k) {
        dtb[k] = 0.001f + 0.0005f * (float)k;
        dtub[k] = 0.002f * (float)(k % 7) - 0.005f;
    }
    vf h[CH], A2[CH], Bv[CH], Cv[CH], acc[CH];
    for (int c = 0; c < CH; ++c) {
        for (int i = 0; i < W; ++i) {
            A2[c][i] = -(float)(i + 1 + c) * LOG2E;
            Bv[c][i] = 0.5f + 0.01f * (float)(i - c);
            Cv[c][i] = 1.0f - 0.02f * (float)(i + c);
        }
        h[c] = splat(0.0f);
        acc[c] = splat(0.0f);
    }
    for (int64_t s = 0; s < steps; s += K) {
        // Make dtb/dtub opaque to the optimiser every chunk: no exp can be hoisted.
        __asm__ __volatile__("" : : "r"(dtb), "r"(dtub) : "memory");
        const int kn = (int)std::min<int64_t>(K, steps - s);
        for (int k = 0; k < kn; ++k) {
            const vf dt = splat(dtb[k]), dtu = splat(dtub[k]);
            for (int c = 0; c < CH; ++c) {
                const vf a = vexp2(dt * A2[c]);
                h[c] = a * h[c] + dtu * Bv[c];
                acc[c] += Cv[c] * h[c];
            }
        }
    }
    vf tot = splat(0.0f);
    for (int c = 0; c < CH; ++c) tot += acc[c] + h[c];
    return hsum(tot);
}

// The forward kernel's inner loop with its own memory traffic and nothing else: as
// bound_loop<1>, but each step loads its B and C rows (from chunk-long arrays that stay in
// L1, as the kernel's rows of one chunk do) and stores its C*h vector for the chunk's
// reduction, as fwd_channel does for N = 16 (NV = 16 / W state vectors a step). What the
// kernel would reach if its per-chunk work (softplus, the reductions, the gate, D*u,
// moving u/delta/z/out) were free. Runs vector_updates / NV steps.
constexpr int NV = W < 16 ? 16 / W : 1;

float inner_loop(int64_t vector_updates) {
    const int64_t steps = vector_updates / NV;
    alignas(64) float dtb[K], dtub[K], Bt[K * NV * W], Ct[K * NV * W];
    alignas(64) vf accb[K];
    for (int k = 0; k < K; ++k) {
        dtb[k] = 0.001f + 0.0005f * (float)k;
        dtub[k] = 0.002f * (float)(k % 7) - 0.005f;
        for (int i = 0; i < NV * W; ++i) {
            Bt[k * NV * W + i] = 0.5f + 0.01f * (float)(i - k % 5);
            Ct[k * NV * W + i] = 1.0f - 0.02f * (float)(i + k % 3);
        }
    }
    vf A2[NV], h[NV], tot = splat(0.0f);
    for (int j = 0; j < NV; ++j) {
        h[j] = splat(0.0f);
        for (int i = 0; i < W; ++i) A2[j][i] = -(float)(j * W + i + 1) * LOG2E;
    }
    for (int64_t s = 0; s < steps; s += K) {
        // Opaque inputs, and stores the optimiser must keep: as in bound_loop.
        __asm__ __volatile__("" : : "r"(dtb), "r"(dtub), "r"(Bt), "r"(Ct), "r"(accb) : "memory");
        const int kn = (int)std::min<int64_t>(K, steps - s);
        for (int k = 0; k < kn; ++k) {
            const vf dt = splat(dtb[k]), dtu = splat(dtub[k]);
            vf acc = splat(0.0f);
            for (int j = 0; j < NV; ++j) {
                const vf a = vexp2(dt * A2[j]);
                h[j] = a * h[j] + dtu * loadv(Bt + (k * NV + j) * W);
                acc += loadv(Ct + (k * NV + j) * W) * h[j];
            }
            accb[k] = acc;
        }
        tot += accb[0];
    }
    for (int j = 0; j < NV; ++j) tot += h[j];
    return hsum(tot);
}

using BoundFn = float (*)(int64_t);

BoundFn pick_bound(int ch) {
    switch (ch) {
        case 1: return bound_loop<1>;
        case 2: return bound_loop<2>;
        case 4: return bound_loop<4>;
        case 8: return bound_loop<8>;
        default: return nullptr;
    }
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

EXPORT int ssamba_bound_lanes() { return W; }

// Roofline micro-benchmark: vector_updates W-lane state updates (the forward's per-state
// arithmetic, see bound_loop), split evenly over nthreads threads started the way the
// scan starts its threads, each thread interleaving `channels` (1, 2, 4 or 8) independent
// states. Returns 0 (checksum in *sink) or an error code.
EXPORT int ssamba_scan_bound(int64_t vector_updates, int channels, int nthreads, float* sink) {
    BoundFn fn = pick_bound(channels);
    if (fn == nullptr || nthreads < 1 || vector_updates < 0) return 1;
    std::vector<float> sums(nthreads, 0.0f);
    const int rc = run_threads(nthreads, [&](int t) {
        const int64_t lo = t * vector_updates / nthreads, hi = (t + 1) * vector_updates / nthreads;
        sums[t] = fn((hi - lo) / channels);
    });
    float total = 0.0f;
    for (float v : sums) total += v;
    if (sink) *sink = total;
    return rc;
}

// The same for inner_loop: vector_updates W-lane updates with the forward kernel's per-step
// loads and stores, split evenly over nthreads threads.
EXPORT int ssamba_scan_inner_loop(int64_t vector_updates, int nthreads, float* sink) {
    if (nthreads < 1 || vector_updates < 0) return 1;
    std::vector<float> sums(nthreads, 0.0f);
    const int rc = run_threads(nthreads, [&](int t) {
        const int64_t lo = t * vector_updates / nthreads, hi = (t + 1) * vector_updates / nthreads;
        sums[t] = inner_loop(hi - lo);
    });
    float total = 0.0f;
    for (float v : sums) total += v;
    if (sink) *sink = total;
    return rc;
}

}  // extern "C"
