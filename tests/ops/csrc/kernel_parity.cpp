// C-level parity of the CPU kernels against plain scalar loops in double precision.
//
// Linked with ssamba/ops/csrc/selective_scan_cpu.cpp and conv_silu_cpu.cpp, built for
// one target by one compiler (tests/ops/test_kernel_targets.py builds it for each, and
// runs the arm64 build under qemu). Calls the kernels through their C ABI as the Python
// binding does, over shapes that cover partial vectors and chunks, both directions, a
// carried state, one and two threads, and every optional operand, and compares the
// scan's forward and all of its gradients, and SiLU(conv)'s, with the loops below.
// Prints one line per case and "N passed, M failed"; exits 1 if any case failed.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

extern "C" {
int ssamba_scan_lanes();
int ssamba_scan_chunk_size();
int ssamba_scan_fwd(const float* u, const float* delta, const float* A, const float* Bt, const float* Ct,
                    const float* Dv, const float* z, const float* bias, int softplus, int reverse, float* out,
                    float* ckpt, const float* h0, float* hlast, int64_t batch, int64_t dim, int64_t L, int64_t NP,
                    int nthreads, const int64_t* starts);
int ssamba_scan_bwd(const float* u, const float* delta, const float* A, const float* Bt, const float* Ct,
                    const float* Dv, const float* z, const float* bias, int softplus, int reverse, const float* ckpt,
                    const float* gout, float* du, float* ddelta, float* dA, float* dB, float* dC, float* dD,
                    float* dz, float* dbias, int64_t batch, int64_t dim, int64_t L, int64_t NP, int nthreads,
                    const int64_t* starts, const int64_t* slot_base);
int ssamba_conv_silu_fwd(const float* x, const float* w, const float* bias, int reverse, float* out, int64_t batch,
                         int64_t channels, int64_t L, int K, int nthreads);
int ssamba_conv_silu_bwd(const float* x, const float* w, const float* bias, int reverse, const float* grad,
                         float* gx, float* gw, float* gb, int64_t batch, int64_t channels, int64_t L, int K,
                         int nthreads);
}

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

uint64_t rng_state = 0x9E3779B97F4A7C15ull;
double uniform() {  // in [0, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}
double normal() { return std::sqrt(-2.0 * std::log(1.0 - uniform())) * std::cos(6.283185307179586 * uniform()); }
Vec randn(size_t n, double scale = 1.0, double shift = 0.0) {
    Vec v(n);
    for (auto& x : v) x = (float)(scale * normal() + shift);
    return v;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

int passed = 0, failed = 0;

// The largest |got - want| relative to the largest |want| (both over the whole tensor).
void expect_close(const char* name, const char* what, const std::vector<float>& got, const DVec& want,
                  double tol) {
    double err = 0.0, scale = 1e-30;
    bool finite = got.size() == want.size();
    for (size_t i = 0; finite && i < want.size(); ++i) {
        if (!std::isfinite(got[i])) finite = false;
        err = std::fmax(err, std::fabs((double)got[i] - want[i]));
        scale = std::fmax(scale, std::fabs(want[i]));
    }
    const double rel = err / scale;
    const bool ok = finite && rel <= tol;
    std::printf("%s %-44s %-7s rel err %.2e\n", ok ? "ok  " : "FAIL", name, what, finite ? rel : INFINITY);
    (ok ? passed : failed)++;
}

struct ScanCase {
    int batch, dim, L, N, softplus, reverse, with_z, with_D, with_bias, with_h0, nthreads;
};

void scan_case(const ScanCase& c) {
    const int lanes = ssamba_scan_lanes(), chunk = ssamba_scan_chunk_size();
    const int64_t B = c.batch, D = c.dim, L = c.L, N = c.N;
    const int64_t NP = std::max<int64_t>(lanes, (N + lanes - 1) / lanes * lanes);
    Vec u = randn(B * D * L), delta = randn(B * D * L, 0.7, -1.0), z = randn(B * D * L, 1.5);
    Vec A(D * N), Bm = randn(B * N * L), Cm = randn(B * N * L), Dv = randn(D), bias = randn(D, 0.3);
    Vec h0 = randn(B * D * N), gout = randn(B * D * L);
    for (int64_t i = 0; i < D * N; ++i) A[i] = (float)(-(0.3 + 1.7 * uniform()));
    if (c.softplus && L > 3) delta[2] = 24.0f;  // above torch's softplus threshold: linear
    const float* zp = c.with_z ? z.data() : nullptr;
    const float* Dp = c.with_D ? Dv.data() : nullptr;
    const float* bp = c.with_bias ? bias.data() : nullptr;

    // The kernel's layouts: A (D, NP), B and C time-major (B, L, NP), states (B*D, NP).
    Vec Ak(D * NP, 0.0f), Bt(B * L * NP, 0.0f), Ct(B * L * NP, 0.0f), h0k(B * D * NP, 0.0f);
    for (int64_t d = 0; d < D; ++d)
        for (int64_t n = 0; n < N; ++n) Ak[d * NP + n] = A[d * N + n];
    for (int64_t b = 0; b < B; ++b)
        for (int64_t n = 0; n < N; ++n)
            for (int64_t t = 0; t < L; ++t) {
                Bt[(b * L + t) * NP + n] = Bm[(b * N + n) * L + t];
                Ct[(b * L + t) * NP + n] = Cm[(b * N + n) * L + t];
            }
    for (int64_t ch = 0; ch < B * D; ++ch)
        for (int64_t n = 0; n < N; ++n) h0k[ch * NP + n] = h0[ch * N + n];

    // The thread partition and dB/dC slots, as ssamba.ops.scan_cpu._partition makes them.
    const int T = c.nthreads;
    std::vector<int64_t> starts(T + 1), slot_base(T), slot_batch;
    for (int t = 0; t <= T; ++t) starts[t] = t * B * D / T;
    for (int t = 0; t < T; ++t) {
        slot_base[t] = (int64_t)slot_batch.size();
        if (starts[t + 1] > starts[t])
            for (int64_t b = starts[t] / D; b <= (starts[t + 1] - 1) / D; ++b) slot_batch.push_back(b);
    }
    const int64_t nslots = (int64_t)slot_batch.size(), nchunks = (L + chunk - 1) / chunk;

    Vec out(B * D * L), hlast(B * D * NP), ckpt(B * D * nchunks * NP);
    Vec du(B * D * L), ddelta(B * D * L), dz(B * D * L), dA(B * D * NP), dD(B * D), dbias(B * D);
    Vec dB(std::max<int64_t>(1, nslots) * L * NP, 0.0f), dC(std::max<int64_t>(1, nslots) * L * NP, 0.0f);
    const float* h0p = c.with_h0 ? h0k.data() : nullptr;
    int rc = ssamba_scan_fwd(u.data(), delta.data(), Ak.data(), Bt.data(), Ct.data(), Dp, zp, bp, c.softplus,
                             c.reverse, out.data(), ckpt.data(), h0p, hlast.data(), B, D, L, NP, T, starts.data());
    if (rc == 0)
        rc = ssamba_scan_bwd(u.data(), delta.data(), Ak.data(), Bt.data(), Ct.data(), Dp, zp, bp, c.softplus,
                             c.reverse, ckpt.data(), gout.data(), du.data(), ddelta.data(), dA.data(), dB.data(),
                             dC.data(), c.with_D ? dD.data() : nullptr, c.with_z ? dz.data() : nullptr,
                             c.with_bias ? dbias.data() : nullptr, B, D, L, NP, T, starts.data(), slot_base.data());

    // The scalar recurrence, forward then reverse-mode by hand, in double.
    DVec r_out(B * D * L), r_hlast(B * D * N), r_du(B * D * L, 0.0), r_ddelta(B * D * L), r_dz(B * D * L, 0.0);
    DVec r_dA(D * N, 0.0), r_dB(B * N * L, 0.0), r_dC(B * N * L, 0.0), r_dD(D, 0.0), r_dbias(D, 0.0);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t d = 0; d < D; ++d) {
            const int64_t ch = b * D + d, row = ch * L;
            std::vector<DVec> hs(L + 1, DVec(N, 0.0));  // hs[s]: the state before scan step s
            if (c.with_h0)
                for (int64_t n = 0; n < N; ++n) hs[0][n] = h0[ch * N + n];
            DVec dt(L), y(L);
            auto pos = [&](int64_t s) { return c.reverse ? L - 1 - s : s; };  // scan step -> element
            for (int64_t s = 0; s < L; ++s) {
                const int64_t t = pos(s);
                const double x = delta[row + t] + (c.with_bias ? bias[d] : 0.0);
                dt[s] = !c.softplus ? x : (x > 20.0 ? x : std::log1p(std::exp(x)));
                double acc = c.with_D ? Dv[d] * u[row + t] : 0.0;
                for (int64_t n = 0; n < N; ++n) {
                    hs[s + 1][n] = std::exp(dt[s] * A[d * N + n]) * hs[s][n] + dt[s] * u[row + t] * Bm[(b * N + n) * L + t];
                    acc += Cm[(b * N + n) * L + t] * hs[s + 1][n];
                }
                y[s] = acc;
                r_out[row + t] = c.with_z ? acc * z[row + t] * sigmoid(z[row + t]) : acc;
            }
            for (int64_t n = 0; n < N; ++n) r_hlast[ch * N + n] = hs[L][n];
            DVec carry(N, 0.0);
            for (int64_t s = L - 1; s >= 0; --s) {
                const int64_t t = pos(s);
                const double x = delta[row + t] + (c.with_bias ? bias[d] : 0.0), uu = u[row + t];
                double gy = gout[row + t];
                if (c.with_z) {
                    const double zz = z[row + t], sg = sigmoid(zz);
                    r_dz[row + t] = gy * y[s] * sg * (1.0 + zz * (1.0 - sg));
                    gy *= zz * sg;
                }
                if (c.with_D) {
                    r_dD[d] += gy * uu;
                    r_du[row + t] += gy * Dv[d];
                }
                double gdt = 0.0;
                for (int64_t n = 0; n < N; ++n) {
                    const double a = std::exp(dt[s] * A[d * N + n]), Bv = Bm[(b * N + n) * L + t];
                    const double g = carry[n] + gy * Cm[(b * N + n) * L + t];
                    r_dC[(b * N + n) * L + t] += gy * hs[s + 1][n];
                    r_dB[(b * N + n) * L + t] += g * dt[s] * uu;
                    r_dA[d * N + n] += g * hs[s][n] * a * dt[s];
                    gdt += g * (hs[s][n] * a * A[d * N + n] + uu * Bv);
                    r_du[row + t] += g * dt[s] * Bv;
                    carry[n] = g * a;
                }
                const double dsp = !c.softplus || x > 20.0 ? 1.0 : sigmoid(x);
                r_ddelta[row + t] = gdt * dsp;
                r_dbias[d] += gdt * dsp;
            }
        }

    // The kernel's partials reduced to the operands' shapes.
    Vec k_hlast(B * D * N), k_dA(D * N, 0.0f), k_dB(B * N * L, 0.0f), k_dC(B * N * L, 0.0f), k_dD(D, 0.0f),
        k_dbias(D, 0.0f);
    for (int64_t ch = 0; ch < B * D; ++ch)
        for (int64_t n = 0; n < N; ++n) {
            k_hlast[ch * N + n] = hlast[ch * NP + n];
            k_dA[(ch % D) * N + n] += dA[ch * NP + n];
        }
    for (int64_t ch = 0; ch < B * D; ++ch) {
        k_dD[ch % D] += dD[ch];
        k_dbias[ch % D] += dbias[ch];
    }
    for (int64_t s = 0; s < nslots; ++s)
        for (int64_t t = 0; t < L; ++t)
            for (int64_t n = 0; n < N; ++n) {
                k_dB[(slot_batch[s] * N + n) * L + t] += dB[(s * L + t) * NP + n];
                k_dC[(slot_batch[s] * N + n) * L + t] += dC[(s * L + t) * NP + n];
            }

    char name[160];
    std::snprintf(name, sizeof(name), "scan %dx%dx%d N=%d%s%s%s%s%s%s T=%d", c.batch, c.dim, c.L, c.N,
                  c.softplus ? " softplus" : "", c.reverse ? " reverse" : "", c.with_z ? " z" : "",
                  c.with_D ? " D" : "", c.with_bias ? " bias" : "", c.with_h0 ? " h0" : "", c.nthreads);
    if (rc != 0) {
        std::printf("FAIL %s: kernel returned %d\n", name, rc);
        failed++;
        return;
    }
    const double tol = 2e-5;
    expect_close(name, "out", out, r_out, tol);
    expect_close(name, "hlast", k_hlast, r_hlast, tol);
    expect_close(name, "du", du, r_du, tol);
    expect_close(name, "ddelta", ddelta, r_ddelta, tol);
    expect_close(name, "dA", k_dA, r_dA, tol);
    expect_close(name, "dB", k_dB, r_dB, tol);
    expect_close(name, "dC", k_dC, r_dC, tol);
    if (c.with_z) expect_close(name, "dz", dz, r_dz, tol);
    if (c.with_D) expect_close(name, "dD", k_dD, r_dD, tol);
    if (c.with_bias) expect_close(name, "dbias", k_dbias, r_dbias, tol);
}

void conv_case(int batch, int channels, int L, int K, int reverse, int with_bias, int nthreads) {
    const int64_t B = batch, C = channels;
    Vec x = randn(B * C * L), w = randn(C * K, 0.5), bias = randn(C, 0.3), grad = randn(B * C * L);
    Vec out(B * C * L), gx(B * C * L), gw(C * K), gb(C);
    const float* bp = with_bias ? bias.data() : nullptr;
    int rc = ssamba_conv_silu_fwd(x.data(), w.data(), bp, reverse, out.data(), B, C, L, K, nthreads);
    if (rc == 0)
        rc = ssamba_conv_silu_bwd(x.data(), w.data(), bp, reverse, grad.data(), gx.data(), gw.data(),
                                  with_bias ? gb.data() : nullptr, B, C, L, K, nthreads);
    // Tap i reads x[t + off_i], off_i = -(K-1-i) (causal) or +(K-1-i) (reverse).
    DVec r_out(B * C * L), r_gx(B * C * L, 0.0), r_gw(C * K, 0.0), r_gb(C, 0.0);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < L; ++t) {
                const int64_t row = (b * C + c) * L;
                double pre = with_bias ? bias[c] : 0.0;
                for (int i = 0; i < K; ++i) {
                    const int64_t src = t + (reverse ? (K - 1 - i) : -(K - 1 - i));
                    if (src >= 0 && src < L) pre += (double)w[c * K + i] * x[row + src];
                }
                const double sg = sigmoid(pre), gp = grad[row + t] * sg * (1.0 + pre * (1.0 - sg));
                r_out[row + t] = pre * sg;
                r_gb[c] += gp;
                for (int i = 0; i < K; ++i) {
                    const int64_t src = t + (reverse ? (K - 1 - i) : -(K - 1 - i));
                    if (src >= 0 && src < L) {
                        r_gx[row + src] += gp * w[c * K + i];
                        r_gw[c * K + i] += gp * x[row + src];
                    }
                }
            }
    char name[120];
    std::snprintf(name, sizeof(name), "conv %dx%dx%d K=%d%s%s T=%d", batch, channels, L, K, reverse ? " reverse" : "",
                  with_bias ? " bias" : "", nthreads);
    if (rc != 0) {
        std::printf("FAIL %s: kernel returned %d\n", name, rc);
        failed++;
        return;
    }
    expect_close(name, "out", out, r_out, 1e-5);
    expect_close(name, "gx", gx, r_gx, 1e-5);
    expect_close(name, "gw", gw, r_gw, 1e-5);
    if (with_bias) expect_close(name, "gb", gb, r_gb, 1e-5);
}

}  // namespace

int main() {
    std::printf("kernel lanes %d, chunk %d\n", ssamba_scan_lanes(), ssamba_scan_chunk_size());
    const ScanCase scans[] = {
        // batch, dim, L, N, softplus, reverse, z, D, bias, h0, threads
        {2, 3, 70, 16, 1, 0, 1, 1, 1, 0, 1},   // the Mamba case, a partial last chunk
        {2, 3, 70, 16, 1, 1, 1, 1, 1, 0, 2},   // reverse direction, two threads
        {1, 5, 33, 4, 0, 0, 0, 0, 0, 1, 1},    // N below one vector, no optional operands, h0
        {2, 3, 64, 20, 1, 1, 1, 0, 1, 1, 2},   // N over one vector (padded), whole chunks
        {1, 2, 1, 16, 1, 0, 1, 1, 1, 0, 1},    // one step
        {3, 2, 45, 36, 1, 0, 1, 1, 0, 0, 2},   // N padded to several vectors (the generic-width path at 4 lanes)
        {1, 1, 200, 7, 1, 1, 0, 1, 1, 1, 1},   // long, odd N, reverse with h0
    };
    for (const auto& c : scans) scan_case(c);
    conv_case(2, 5, 37, 4, 0, 1, 1);
    conv_case(2, 5, 37, 4, 1, 1, 2);
    conv_case(1, 3, 3, 4, 0, 0, 1);   // shorter than the taps
    conv_case(2, 4, 100, 16, 1, 1, 2);  // the tap limit
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
