// A probe, not a kernel: the selective scan forward with inner channels across the vector
// lanes instead of states (lab/lanes_probe.py times it against the shipped forward).
//
// Each thread takes groups of W channels (the vector width) of one batch element; a vector holds one state
// n of W channels, so a step is 16 independent updates (one per state) with B[n] and
// C[n] broadcast, y = sum_n C[n] h[n] accumulates vertically (no horizontal reduction),
// and softplus(delta + bias), D*u and the gate are one vector each per step. Forward only,
// no checkpoints, d_state 16, softplus on; token-major layouts:
//
//   u, delta, z, out : (batch, L, dim)     At : (16, dim)     Bt, Ct : (batch, L, 16)
//   Dv, bias         : (dim,)
//
// probe_fwd_lanes_noact is the same walk with softplus and the SiLU gate left out (a
// timing variant: its output is not the scan's).

#include "scan_simd.h"

namespace {

template <bool ACT>
int fwd_lanes(const float* u, const float* delta, const float* At, const float* Bt, const float* Ct,
              const float* Dv, const float* z, const float* bias, float* out, int64_t batch, int64_t dim,
              int64_t L, int nthreads) {
    if (dim % W != 0 || nthreads < 1) return 1;
    const int64_t groups = dim / W, items = batch * groups;
    return run_threads(nthreads, [&](int th) {
        const float *__restrict pu = u, *__restrict pd = delta, *__restrict pz = z;
        const float *__restrict pB = Bt, *__restrict pC = Ct;
        float* __restrict po = out;
        const int64_t D = dim, T = L;
        for (int64_t i = items * th / nthreads; i < items * (th + 1) / nthreads; ++i) {
            const int64_t b = i / groups, d0 = (i % groups) * W;
            vf A2[16], h[16];
            for (int n = 0; n < 16; ++n) {
                A2[n] = loadv(At + n * D + d0) * LOG2E;
                h[n] = splat(0.0f);
            }
            const vf bv = loadv(bias + d0), Dd = loadv(Dv + d0);
            for (int64_t t = 0; t < T; ++t) {
                const int64_t row = (b * T + t) * D + d0;
                const vf x = loadv(pd + row) + bv;
                const vf dt = ACT ? vsoftplus(x, nullptr) : x;
                const vf uu = loadv(pu + row);
                const vf dtu = dt * uu;
                const float* Bp = pB + (b * T + t) * 16;
                const float* Cp = pC + (b * T + t) * 16;
                vf acc = splat(0.0f);
#pragma GCC unroll 16
                for (int n = 0; n < 16; ++n) {
                    h[n] = vexp2(dt * A2[n]) * h[n] + dtu * Bp[n];
                    acc += Cp[n] * h[n];
                }
                const vf zz = loadv(pz + row);
                storev(po + row, (acc + Dd * uu) * (ACT ? zz * vsigmoid(zz) : zz));
            }
        }
    });
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

EXPORT int probe_fwd_lanes(const float* u, const float* delta, const float* At, const float* Bt, const float* Ct,
                           const float* Dv, const float* z, const float* bias, float* out, int64_t batch,
                           int64_t dim, int64_t L, int nthreads) {
    return fwd_lanes<true>(u, delta, At, Bt, Ct, Dv, z, bias, out, batch, dim, L, nthreads);
}

EXPORT int probe_fwd_lanes_noact(const float* u, const float* delta, const float* At, const float* Bt,
                                 const float* Ct, const float* Dv, const float* z, const float* bias, float* out,
                                 int64_t batch, int64_t dim, int64_t L, int nthreads) {
    return fwd_lanes<false>(u, delta, At, Bt, Ct, Dv, z, bias, out, batch, dim, L, nthreads);
}

}  // extern "C"
