// Fused CPU selective scan (forward + hand-written backward) for ssamba.
//
// Plain C++17 with a C ABI, loaded through ctypes (no torch headers: it compiles in a
// few seconds). All inputs are fp32 and contiguous; the Python side (scan_cpu.py)
// converts, transposes and pads them. Layouts:
//
//   u, delta, z, out, du, ddelta, dz, gout : (batch, dim, L)
//   A                                      : (dim, NP)         NP = N rounded up to W lanes
//   Bt, Ct                                 : (batch, L, NP)    B, C transposed, zero padded
//   Dv, bias                               : (dim,)            optional (nullptr)
//   ckpt                                   : (batch*dim, nchunks, NP) state entering each chunk
//   h0, hlast (forward, optional)          : (batch*dim, NP) state before the first step / after the last
//   dA, dD, dbias (per-channel partials)   : (batch, dim, NP) / (batch, dim)
//   dB, dC (per-thread slots)              : (nslots, L, NP)   nslots <= threads + batch
//
// The recurrence per channel (b, d) and state n:
//   dt = softplus(delta + bias);  h = exp(dt*A) * h + dt*u*B;  y = C.h + D*u;  out = y*silu(z)
// runs over L with the state held in SIMD registers (W states per vector, W chosen for the
// target in scan_simd.h: 16 with AVX-512, 8 with AVX2, 4 with SSE2 or NEON; GCC vector
// extensions, with a few AVX-512 intrinsics where they pay: scalef-based exp2, rcp14, and
// a transposing reduction that turns the per-step dot products C.h into a few ops a step).
// Channels are split over worker threads. The forward stores the state at the start of
// every chunk of K steps when a backward will follow; the backward recomputes a chunk's
// states and decays from that checkpoint into a thread-local buffer, then walks the
// chunk in reverse. Extra memory: the checkpoints (batch*dim*ceil(L/K)*NP floats), the
// dB/dC slots, O(batch*dim*NP) partial sums and O(K*NP) per thread; never a
// (batch, L, dim, N) tensor.

#include <initializer_list>

#include "scan_simd.h"

namespace {

struct Params {
    const float *u, *delta, *A, *Bt, *Ct, *Dv, *z, *bias, *gout;
    float *out, *ckpt;
    const float* h0;  // forward: the state before the first step (nullptr: zero)
    float* hlast;     // forward: where the state after the last step goes (nullptr: nowhere)
    float *du, *ddelta, *dA, *dB, *dC, *dD, *dz, *dbias;
    int64_t batch, dim, L, NP;
    int nv, softplus, reverse;
    const int64_t *starts, *slot_base;
};

// Scan order vs memory order: with p.reverse the scan's step t is the sequence's element
// L-1-t (the backward direction of a bidirectional layer, with no flipped copies).
// load_seq/store_seq move steps [c0, c0+kn) of one channel's sequence to/from a K-long
// buffer (zero tail on load); row_of gives the memory row of step c0 and row_step the
// row stride per step, for the (L, NP) B/C layouts.
INLINE void load_seq(const Params& p, float* dst, const float* seq, int64_t c0, int kn) {
    if (!p.reverse && kn == K) {
        std::memcpy(dst, seq + c0, sizeof(float) * K);  // a fixed size: inlined as vector moves
        return;
    }
    if (!p.reverse) {
        std::memcpy(dst, seq + c0, sizeof(float) * kn);
    } else if (kn == K) {
        const float* low = seq + (p.L - c0 - K);  // the chunk's lowest memory element
        for (int q = 0; q < K; q += W) storev(dst + q, reversev(loadv(low + K - W - q)));
        return;
    } else {
        const float* src = seq + (p.L - 1 - c0);
        for (int i = 0; i < kn; ++i) dst[i] = src[-i];
    }
    for (int i = kn; i < K; ++i) dst[i] = 0.0f;
}

INLINE void store_seq(const Params& p, float* seq, const float* src, int64_t c0, int kn) {
    if (!p.reverse && kn == K) {
        std::memcpy(seq + c0, src, sizeof(float) * K);
    } else if (!p.reverse) {
        std::memcpy(seq + c0, src, sizeof(float) * kn);
    } else if (kn == K) {
        float* low = seq + (p.L - c0 - K);
        for (int q = 0; q < K; q += W) storev(low + K - W - q, reversev(loadv(src + q)));
    } else {
        float* dst = seq + (p.L - 1 - c0);
        for (int i = 0; i < kn; ++i) dst[-i] = src[i];
    }
}

// Asks for scan steps [c0, c0+K) of each sequence (nullptr: skipped) ahead of use. Where
// the walk runs against memory order - the backward of a forward-running direction
// visits a channel's chunks last to first, the forward of a reverse-running one too -
// the hardware prefetchers did not fetch the next chunk in time, and the copies of its
// inputs into the chunk buffers stalled on cache misses (seen with perf;
// lab/kernel_ab.py measures the difference).
INLINE void prefetch_chunk(const Params& p, int64_t c0, std::initializer_list<const float*> seqs) {
    const int64_t first = p.reverse ? p.L - c0 - K : c0;  // lowest memory index of the chunk
    for (const float* seq : seqs) {
        if (!seq) continue;
        for (int i = 0; i < K; i += 64 / (int)sizeof(float)) __builtin_prefetch(seq + std::max<int64_t>(0, first + i), 0, 3);
    }
}

INLINE int64_t row_of(const Params& p, int64_t c0) { return p.reverse ? p.L - 1 - c0 : c0; }
INLINE int64_t row_step(const Params& p) { return p.reverse ? -p.NP : p.NP; }

// dt (and softplus derivative) for one chunk; buffers are K long. Leaves the chunk of u
// in ub for the caller.
INLINE void chunk_dt(const Params& p, const float* delta, const float* u, int64_t c0, float bias, int kn,
                     float* dtb, float* dtub, float* sgb, float* ub) {
    alignas(64) float xb[K];
    load_seq(p, xb, delta, c0, kn);
    load_seq(p, ub, u, c0, kn);
    for (int k = 0; k < K; k += W) {
        vf x = loadv(xb + k) + bias;
        vf dt = x;
        if (p.softplus) {
            vf sg;
            dt = vsoftplus(x, sgb ? &sg : nullptr);
            if (sgb) storev(sgb + k, sg);
        } else if (sgb) {
            storev(sgb + k, splat(1.0f));
        }
        storev(dtb + k, dt);
        storev(dtub + k, dt * loadv(ub + k));
    }
}

// Per-thread scratch: chunk states/decays and per-step vectors waiting for reduce_lanes.
struct Work {
    std::vector<vf> buf;
    vf *hbuf, *abuf, *accb, *s1b, *s2b, *ext;
    explicit Work(int nv) : buf((size_t)(2 * K + 1) * nv + 3 * K + 6 * nv) {
        hbuf = buf.data();                 // [K+1][nv]: hbuf[0] = checkpoint, hbuf[k+1] = h_k
        abuf = hbuf + (K + 1) * nv;        // [K][nv]: exp(dt_k A)
        accb = abuf + K * nv;              // [K]
        s1b = accb + K;                    // [K]
        s2b = s1b + K;                     // [K]
        ext = s2b + K;                     // 6 * nv registers for the generic-width path
    }
};

template <int NVT>
void fwd_channel(const Params& p, int64_t b, int64_t d, Work& w) {
    const int nv = NVT > 0 ? NVT : p.nv;
    const int64_t L = p.L, NP = p.NP, S = row_step(p), ch = b * p.dim + d;
    const float* u = p.u + ch * L;
    const float* delta = p.delta + ch * L;
    const float* z = p.z ? p.z + ch * L : nullptr;
    float* out = p.out + ch * L;
    const float* Bt = p.Bt + b * L * NP;
    const float* Ct = p.Ct + b * L * NP;
    const float bias = p.bias ? p.bias[d] : 0.0f;
    const float Dd = p.Dv ? p.Dv[d] : 0.0f;
    const int64_t nchunks = (L + K - 1) / K;

    constexpr int R = NVT > 0 ? NVT : 1;
    vf h_loc[R], A2_loc[R];
    vf *h = h_loc, *A2 = A2_loc;
    if (NVT == 0) {
        h = w.ext;
        A2 = w.ext + nv;
    }
    for (int j = 0; j < nv; ++j) {
        h[j] = p.h0 ? loadv(p.h0 + ch * NP + j * W) : splat(0.0f);
        A2[j] = loadv(p.A + d * NP + j * W) * LOG2E;
    }
    vf* __restrict accb = w.accb;

    alignas(64) float dtb[K], dtub[K], yb[K], ub[K], zb[K];
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t c0 = c * K;
        const int kn = (int)std::min<int64_t>(K, L - c0);
        if (p.reverse && c + 1 < nchunks) prefetch_chunk(p, c0 + K, {u, delta, z, out});
        if (p.ckpt) {
            float* cp = p.ckpt + (ch * nchunks + c) * NP;
            for (int j = 0; j < nv; ++j) storev(cp + j * W, h[j]);
        }
        chunk_dt(p, delta, u, c0, bias, kn, dtb, dtub, nullptr, ub);
        const float* Bp = Bt + row_of(p, c0) * NP;
        const float* Cp = Ct + row_of(p, c0) * NP;
        for (int k = 0; k < kn; ++k) {
            const vf dt = splat(dtb[k]), dtu = splat(dtub[k]);
            vf acc = splat(0.0f);
            for (int j = 0; j < nv; ++j) {
                const vf a = vexp2(dt * A2[j]);
                h[j] = a * h[j] + dtu * loadv(Bp + k * S + j * W);
                acc += loadv(Cp + k * S + j * W) * h[j];
            }
            accb[k] = acc;
        }
        for (int k = kn; k < K; ++k) accb[k] = splat(0.0f);
        for (int k = 0; k < K; k += W) reduce_lanes(accb + k, yb + k);
        if (z) load_seq(p, zb, z, c0, kn);
        for (int k = 0; k < K; k += W) {
            vf o = loadv(yb + k) + loadv(ub + k) * Dd;
            if (z) {
                vf zz = loadv(zb + k);
                o = o * zz * vsigmoid(zz);
            }
            storev(yb + k, o);
        }
        store_seq(p, out, yb, c0, kn);
    }
    if (p.hlast)
        for (int j = 0; j < nv; ++j) storev(p.hlast + ch * NP + j * W, h[j]);
}

template <int NVT>
void bwd_channel(const Params& p, int64_t b, int64_t d, float* dBs, float* dCs, Work& w) {
    const int nv = NVT > 0 ? NVT : p.nv;
    const int64_t L = p.L, NP = p.NP, S = row_step(p), ch = b * p.dim + d;
    const float* u = p.u + ch * L;
    const float* delta = p.delta + ch * L;
    const float* z = p.z ? p.z + ch * L : nullptr;
    const float* gout = p.gout + ch * L;
    float* du = p.du + ch * L;
    float* ddelta = p.ddelta + ch * L;
    float* dz = p.dz ? p.dz + ch * L : nullptr;
    const float* Bt = p.Bt + b * L * NP;
    const float* Ct = p.Ct + b * L * NP;
    const float bias = p.bias ? p.bias[d] : 0.0f;
    const float Dd = p.Dv ? p.Dv[d] : 0.0f;
    const int64_t nchunks = (L + K - 1) / K;

    vf* __restrict hbuf = w.hbuf;
    vf* __restrict abuf = w.abuf;
    vf* __restrict accb = w.accb;
    vf* __restrict s1b = w.s1b;
    vf* __restrict s2b = w.s2b;
    constexpr int R = NVT > 0 ? NVT : 1;
    // What runs from chunk to chunk - the state gradient carried backwards, the sums of
    // dA, dbias and dD - stays in memory (w.ext, which the output stores may alias, so
    // the compiler keeps it there) between the reverse walks, and is held in registers
    // only inside them: through the recomputing walk the registers go to the states.
    vf h_loc[R], A2_loc[R];
    vf *h = h_loc, *A2 = A2_loc;
    vf *carry_mem = w.ext + 2 * nv, *dA_mem = w.ext + 3 * nv, *sums = w.ext + 4 * nv;  // sums: dbias, dD
    if (NVT == 0) {
        h = w.ext;
        A2 = w.ext + nv;
    }
    for (int j = 0; j < nv; ++j) {
        A2[j] = loadv(p.A + d * NP + j * W) * LOG2E;
        carry_mem[j] = splat(0.0f);
        dA_mem[j] = splat(0.0f);
    }
    sums[0] = sums[1] = splat(0.0f);

    alignas(64) float dtb[K], dtub[K], sgb[K], gyb[K], yb[K], ub[K], zb[K], gb[K], S1[K], S2[K],
        szb[K];
    for (int64_t c = nchunks - 1; c >= 0; --c) {
        const int64_t c0 = c * K;
        const int kn = (int)std::min<int64_t>(K, L - c0);
        if (c > 0) prefetch_chunk(p, c0 - K, {u, delta, gout, z, du, ddelta, dz});
        chunk_dt(p, delta, u, c0, bias, kn, dtb, dtub, sgb, ub);
        load_seq(p, gb, gout, c0, kn);
        if (z) {
            load_seq(p, zb, z, c0, kn);
            for (int k = 0; k < K; k += W) {
                const vf zz = loadv(zb + k), sz = vsigmoid(zz);
                storev(szb + k, sz);
                storev(gyb + k, loadv(gb + k) * zz * sz);
            }
        } else {
            std::memcpy(gyb, gb, sizeof(gb));
        }

        // Recompute the chunk's states from its checkpoint; dC needs no reverse pass.
        const float* cp = p.ckpt + (ch * nchunks + c) * NP;
        for (int j = 0; j < nv; ++j) {
            h[j] = loadv(cp + j * W);
            hbuf[j] = h[j];
        }
        const float* Bp = Bt + row_of(p, c0) * NP;
        const float* Cp = Ct + row_of(p, c0) * NP;
        float* dCp = dCs + row_of(p, c0) * NP;
        for (int k = 0; k < kn; ++k) {
            const vf dt = splat(dtb[k]), dtu = splat(dtub[k]), gy = splat(gyb[k]);
            vf acc = splat(0.0f);
            for (int j = 0; j < nv; ++j) {
                const vf a = vexp2(dt * A2[j]);
                h[j] = a * h[j] + dtu * loadv(Bp + k * S + j * W);
                abuf[k * nv + j] = a;
                hbuf[(k + 1) * nv + j] = h[j];
                storev(dCp + k * S + j * W, loadv(dCp + k * S + j * W) + gy * h[j]);
                acc += loadv(Cp + k * S + j * W) * h[j];  // y, for dz: cheaper than a second loop version
            }
            accb[k] = acc;
        }
        if (z) {
            for (int k = kn; k < K; ++k) accb[k] = splat(0.0f);
            for (int k = 0; k < K; k += W) reduce_lanes(accb + k, yb + k);
            alignas(64) float dzb[K];
            for (int k = 0; k < K; k += W) {
                const vf zz = loadv(zb + k), s = loadv(szb + k);
                const vf y = loadv(yb + k) + loadv(ub + k) * Dd;
                storev(dzb + k, loadv(gb + k) * y * s * (zz * (1.0f - s) + 1.0f));
            }
            store_seq(p, dz, dzb, c0, kn);
        }

        // Reverse through the chunk: g = dL/dh_k = carry + gy_k C_k; carry <- exp(dt_k A) g.
        float* dBp = dBs + row_of(p, c0) * NP;
        vf carry_loc[R], dA_loc[R];
        vf *carry = carry_mem, *dAacc = dA_mem;
        if (NVT > 0) {
            carry = carry_loc;
            dAacc = dA_loc;
            for (int j = 0; j < nv; ++j) {
                carry[j] = carry_mem[j];
                dAacc[j] = dA_mem[j];
            }
        }
        for (int k = kn - 1; k >= 0; --k) {
            const vf dt = splat(dtb[k]), dtu = splat(dtub[k]), gy = splat(gyb[k]);
            vf s1 = splat(0.0f), s2 = splat(0.0f);
            for (int j = 0; j < nv; ++j) {
                const vf a = abuf[k * nv + j];
                const vf g = carry[j] + gy * loadv(Cp + k * S + j * W);
                const vf t = g * hbuf[k * nv + j] * a;  // dL/d(dt*A), per state
                dAacc[j] += t * dt;
                s1 += t * A2[j];  // t * A / ln 2: one register per state vector fewer than keeping A
                s2 += g * loadv(Bp + k * S + j * W);
                storev(dBp + k * S + j * W, loadv(dBp + k * S + j * W) + g * dtu);
                carry[j] = a * g;
            }
            s1b[k] = s1;
            s2b[k] = s2;
        }
        if (NVT > 0)
            for (int j = 0; j < nv; ++j) {
                carry_mem[j] = carry[j];
                dA_mem[j] = dAacc[j];
            }
        for (int k = kn; k < K; ++k) s1b[k] = s2b[k] = splat(0.0f);
        for (int k = 0; k < K; k += W) {
            reduce_lanes(s1b + k, S1 + k);
            reduce_lanes(s2b + k, S2 + k);
        }
        // dt-gradient = S1 + u S2; du = dt S2 + gy D; all tails are zero padded.
        for (int k = 0; k < K; k += W) {
            const vf s2 = loadv(S2 + k), uu = loadv(ub + k), gy = loadv(gyb + k);
            const vf dd = (loadv(S1 + k) * LN2 + uu * s2) * loadv(sgb + k);
            storev(S1 + k, dd);
            storev(gb + k, loadv(dtb + k) * s2 + gy * Dd);
            sums[0] += dd;
            sums[1] += gy * uu;
        }
        store_seq(p, ddelta, S1, c0, kn);
        store_seq(p, du, gb, c0, kn);
    }
    for (int j = 0; j < nv; ++j) storev(p.dA + ch * NP + j * W, dA_mem[j]);
    if (p.dD) p.dD[ch] = hsum(sums[1]);
    if (p.dbias) p.dbias[ch] = hsum(sums[0]);
}

using FwdFn = void (*)(const Params&, int64_t, int64_t, Work&);
using BwdFn = void (*)(const Params&, int64_t, int64_t, float*, float*, Work&);

FwdFn pick_fwd(int nv) {
    switch (nv) {
        case 1: return fwd_channel<1>;
        case 2: return fwd_channel<2>;
        case 3: return fwd_channel<3>;
        case 4: return fwd_channel<4>;
        case 5: return fwd_channel<5>;
        case 6: return fwd_channel<6>;
        case 7: return fwd_channel<7>;
        case 8: return fwd_channel<8>;
        default: return fwd_channel<0>;
    }
}

BwdFn pick_bwd(int nv) {
    switch (nv) {
        case 1: return bwd_channel<1>;
        case 2: return bwd_channel<2>;
        case 3: return bwd_channel<3>;
        case 4: return bwd_channel<4>;
        case 5: return bwd_channel<5>;
        case 6: return bwd_channel<6>;
        case 7: return bwd_channel<7>;
        case 8: return bwd_channel<8>;
        default: return bwd_channel<0>;
    }
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

EXPORT int ssamba_scan_abi_version() { return 3; }
EXPORT int ssamba_scan_chunk_size() { return K; }
EXPORT int ssamba_scan_lanes() { return W; }
#ifdef _OPENMP
EXPORT int ssamba_scan_openmp() { return 1; }
#else
EXPORT int ssamba_scan_openmp() { return 0; }
#endif

// Forward. ckpt may be null (inference). starts: nthreads+1 channel offsets (flat b*dim+d).
// h0 / hlast (may be null): the state entering the first step and left after the last, so
// that a long sequence can be scanned in consecutive pieces (inference; with reverse the
// pieces go from the last to the first).
EXPORT int ssamba_scan_fwd(const float* u, const float* delta, const float* A, const float* Bt,
                    const float* Ct, const float* Dv, const float* z, const float* bias,
                    int softplus, int reverse, float* out, float* ckpt, const float* h0, float* hlast,
                    int64_t batch, int64_t dim, int64_t L, int64_t NP, int nthreads,
                    const int64_t* starts) {
    if (NP <= 0 || NP % W != 0 || L < 0 || nthreads < 1) return 1;
    Params p{};
    p.u = u; p.delta = delta; p.A = A; p.Bt = Bt; p.Ct = Ct; p.Dv = Dv; p.z = z; p.bias = bias;
    p.out = out; p.ckpt = ckpt; p.h0 = h0; p.hlast = hlast;
    p.batch = batch; p.dim = dim; p.L = L; p.NP = NP; p.nv = (int)(NP / W);
    p.softplus = softplus; p.reverse = reverse; p.starts = starts;
    FwdFn fn = pick_fwd(p.nv);
    return run_threads(nthreads, [&](int t) {
        Work work(p.nv);
        for (int64_t c = starts[t]; c < starts[t + 1]; ++c) fn(p, c / dim, c % dim, work);
    });
}

// Backward. dB/dC: (nslots, L, NP) zero-initialised slots; thread t writes the batches it
// touches into slots slot_base[t] + (b - starts[t] / dim). dz/dD/dbias may be null.
EXPORT int ssamba_scan_bwd(const float* u, const float* delta, const float* A, const float* Bt,
                    const float* Ct, const float* Dv, const float* z, const float* bias,
                    int softplus, int reverse, const float* ckpt, const float* gout, float* du,
                    float* ddelta, float* dA, float* dB, float* dC, float* dD, float* dz,
                    float* dbias, int64_t batch, int64_t dim, int64_t L, int64_t NP,
                    int nthreads, const int64_t* starts, const int64_t* slot_base) {
    if (NP <= 0 || NP % W != 0 || L < 0 || nthreads < 1) return 1;
    Params p{};
    p.u = u; p.delta = delta; p.A = A; p.Bt = Bt; p.Ct = Ct; p.Dv = Dv; p.z = z; p.bias = bias;
    p.gout = gout; p.ckpt = const_cast<float*>(ckpt);
    p.du = du; p.ddelta = ddelta; p.dA = dA; p.dB = dB; p.dC = dC; p.dD = dD; p.dz = dz;
    p.dbias = dbias;
    p.batch = batch; p.dim = dim; p.L = L; p.NP = NP; p.nv = (int)(NP / W);
    p.softplus = softplus; p.reverse = reverse; p.starts = starts; p.slot_base = slot_base;
    BwdFn fn = pick_bwd(p.nv);
    return run_threads(nthreads, [&](int t) {
        Work work(p.nv);
        const int64_t b0 = starts[t] / dim;
        for (int64_t c = starts[t]; c < starts[t + 1]; ++c) {
            const int64_t b = c / dim;
            const int64_t slot = slot_base[t] + (b - b0);
            fn(p, b, c % dim, dB + slot * L * NP, dC + slot * L * NP, work);
        }
    });
}


}  // extern "C"
