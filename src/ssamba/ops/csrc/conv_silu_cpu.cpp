// SiLU(depthwise conv over time) for the Mamba mixer, forward and backward, on the CPU.
//
// Plain C++17 behind a C ABI, loaded through ctypes like the scan kernel (conv_cpu.py).
// fp32, contiguous. Layouts:
//
//   x, out, grad, gx : (batch, channels, L)
//   w                : (channels, K)          K taps, K <= 16
//   bias, gb         : (channels,)            optional (nullptr)
//   gw               : (channels, K)
//
// Tap i reads x[t + off_i] with off_i = -(K-1-i) (causal: Conv1d(padding=K-1), first L
// outputs) or +(K-1-i) (reverse: the causal conv of the time-flipped sequence, flipped
// back); reads outside [0, L) are zeros:
//
//   pre[t] = bias + sum_i w_i x[t + off_i];  out[t] = silu(pre[t])
//
// The backward recomputes pre (cheaper than storing it) and, with
// gp[t] = grad[t] * silu'(pre[t]):
//
//   gx[t] = sum_i w_i gp[t - off_i];  gw_i = sum_(b,t) gp[t] x[t + off_i];  gb = sum_(b,t) gp[t]
//
// Channels are split over threads (each owns its channels' weight gradients: no
// atomics). Each row is copied into a zero-padded buffer, then one pass computes pre,
// out or gp in blocks of W steps (one vector); rows are walked one channel and batch element at a
// time.

#include "scan_simd.h"

namespace {

constexpr int MAXK = 16;

struct ConvParams {
    const float *x, *w, *bias, *grad;
    float *out, *gx, *gw, *gb;
    int64_t batch, channels, L;
    int K, reverse;
};

// A row copied into the middle of a zero-filled buffer, so that every shifted read of
// a W-step block is one unaligned vector load: at(t) is the buffer address of step t,
// valid for t in [-PAD, L + PAD + 15) with PAD = MAXK - 1.
struct PaddedRow {
    static constexpr int PAD = MAXK - 1;
    std::vector<float> buf;
    float* at0 = nullptr;
    void fill(const float* row, int64_t L) {
        const size_t need = (size_t)(PAD + ((L + W - 1) / W) * W + PAD + W);
        if (buf.size() < need) buf.resize(need);
        at0 = buf.data() + PAD;
        std::fill(buf.data(), at0, 0.0f);
        std::memcpy(at0, row, sizeof(float) * L);
        std::fill(at0 + L, buf.data() + need, 0.0f);
    }
    inline __attribute__((always_inline)) vf load(int64_t t) const { return loadv(at0 + t); }
};

INLINE void store_part(float* dst, vf v, int n) {
    if (n == W) {
        storev(dst, v);
    } else {
        for (int l = 0; l < n; ++l) dst[l] = v[l];
    }
}

// pre[t0 .. t0+15] of one row.
INLINE vf pre_block(const PaddedRow& x, const float* w, float bias, const int64_t* off, int K, int64_t t0) {
    vf acc = splat(bias);
    for (int i = 0; i < K; ++i) acc += splat(w[i]) * x.load(t0 + off[i]);
    return acc;
}

void tap_offsets(const ConvParams& p, int64_t* off) {
    for (int i = 0; i < p.K; ++i) off[i] = p.reverse ? (p.K - 1 - i) : -(p.K - 1 - i);
}

void fwd_channel(const ConvParams& p, int64_t c, PaddedRow& x) {
    int64_t off[MAXK];
    tap_offsets(p, off);
    const float* w = p.w + c * p.K;
    const float bias = p.bias ? p.bias[c] : 0.0f;
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t row = (b * p.channels + c) * p.L;
        x.fill(p.x + row, p.L);
        float* out = p.out + row;
        for (int64_t t0 = 0; t0 < p.L; t0 += W) {
            const vf pre = pre_block(x, w, bias, off, p.K, t0);
            store_part(out + t0, pre * vsigmoid(pre), (int)std::min<int64_t>(W, p.L - t0));
        }
    }
}

void bwd_channel(const ConvParams& p, int64_t c, PaddedRow& x, PaddedRow& gp) {
    int64_t off[MAXK];
    tap_offsets(p, off);
    const float* w = p.w + c * p.K;
    const float bias = p.bias ? p.bias[c] : 0.0f;
    const int64_t L = p.L;
    vf gw_acc[MAXK], gb_acc = splat(0.0f);
    for (int i = 0; i < p.K; ++i) gw_acc[i] = splat(0.0f);
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t row = (b * p.channels + c) * L;
        x.fill(p.x + row, L);
        gp.fill(p.grad + row, L);  // grad, turned into gp in place below
        // gp = grad * silu'(pre), silu'(p) = s (1 + p (1 - s)); the zero tail of grad past
        // L keeps gp zero there, so that the sums need no masks.
        for (int64_t t0 = 0; t0 < L; t0 += W) {
            const vf pre = pre_block(x, w, bias, off, p.K, t0);
            const vf s = vsigmoid(pre);
            const vf g = gp.load(t0) * s * (pre * (1.0f - s) + 1.0f);
            storev(gp.at0 + t0, g);
            gb_acc += g;
            for (int i = 0; i < p.K; ++i) gw_acc[i] += g * x.load(t0 + off[i]);
        }
        if (p.gx) {
            float* gx = p.gx + row;
            for (int64_t t0 = 0; t0 < L; t0 += W) {
                vf acc = splat(0.0f);
                for (int i = 0; i < p.K; ++i) acc += splat(w[i]) * gp.load(t0 - off[i]);
                store_part(gx + t0, acc, (int)std::min<int64_t>(W, L - t0));
            }
        }
    }
    if (p.gw)
        for (int i = 0; i < p.K; ++i) p.gw[c * p.K + i] = hsum(gw_acc[i]);
    if (p.gb) p.gb[c] = hsum(gb_acc);
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

EXPORT int ssamba_conv_abi_version() { return 1; }
EXPORT int ssamba_conv_max_taps() { return MAXK; }

// out = silu(conv(x)); channels split evenly over nthreads threads.
EXPORT int ssamba_conv_silu_fwd(const float* x, const float* w, const float* bias, int reverse, float* out,
                                int64_t batch, int64_t channels, int64_t L, int K, int nthreads) {
    if (K < 1 || K > MAXK || L < 0 || nthreads < 1) return 1;
    ConvParams p{};
    p.x = x; p.w = w; p.bias = bias; p.out = out;
    p.batch = batch; p.channels = channels; p.L = L; p.K = K; p.reverse = reverse;
    return run_threads(nthreads, [&](int t) {
        PaddedRow xrow;
        const int64_t c0 = t * channels / nthreads, c1 = (t + 1) * channels / nthreads;
        for (int64_t c = c0; c < c1; ++c) fwd_channel(p, c, xrow);
    });
}

// Gradients of x, w and bias (each may be null: not computed) from grad = dL/d(out).
EXPORT int ssamba_conv_silu_bwd(const float* x, const float* w, const float* bias, int reverse, const float* grad,
                                float* gx, float* gw, float* gb, int64_t batch, int64_t channels, int64_t L, int K,
                                int nthreads) {
    if (K < 1 || K > MAXK || L < 0 || nthreads < 1) return 1;
    ConvParams p{};
    p.x = x; p.w = w; p.bias = bias; p.grad = grad; p.gx = gx; p.gw = gw; p.gb = gb;
    p.batch = batch; p.channels = channels; p.L = L; p.K = K; p.reverse = reverse;
    return run_threads(nthreads, [&](int t) {
        PaddedRow xrow, gprow;
        const int64_t c0 = t * channels / nthreads, c1 = (t + 1) * channels / nthreads;
        for (int64_t c = c0; c < c1; ++c) bwd_channel(p, c, xrow, gprow);
    });
}

}  // extern "C"
