// The scan op from LibTorch C++: forward against the recurrence, gradients from
// torch::autograd::grad against the analytic gradient, bad input as c10::Error. Each test runs on
// the CPU and, when a GPU is present, on CUDA with the same assertions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <complex>
#include <string>
#include <vector>

#include "torch_lru/scan.h"

namespace {

using cd = std::complex<double>;

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA);
  return out;
}

struct Case {
  int64_t B, L, N;
  bool per_step, reverse, with_h0;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (auto [B, L, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {2, 17, 3}, {1, 3000, 2}, {3, 40, 33}}) {
    for (bool per_step : {false, true})
      for (bool reverse : {false, true})
        for (bool with_h0 : {false, true}) out.push_back({B, L, N, per_step, reverse, with_h0});
  }
  return out;
}

struct Inputs {
  torch::Tensor lam, x, h0;  // h0 undefined when absent
};

Inputs make_inputs(const Case& c, torch::ScalarType dtype, torch::Device device, int seed) {
  torch::manual_seed(seed);
  auto real = torch::TensorOptions().dtype(torch::kDouble);
  auto lam_shape = c.per_step ? std::vector<int64_t>{c.B, c.L, c.N} : std::vector<int64_t>{c.N};
  auto r = 0.8 + 0.19 * torch::rand(lam_shape, real);
  auto lam = at::isComplexType(dtype) ? torch::polar(r, 6.28 * torch::rand(lam_shape, real)) : r;
  auto x = torch::randn({c.B, c.L, c.N}, real.dtype(dtype));
  auto h0 = c.with_h0 ? torch::randn({c.B, c.N}, real.dtype(dtype)) : torch::Tensor();
  return {lam.to(dtype).to(device), x.to(device), c.with_h0 ? h0.to(device) : h0};
}

std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}

// A tensor's values as complex doubles on the host, flattened in row-major order.
std::vector<cd> host(const torch::Tensor& t) {
  auto v = t.detach().cpu().to(torch::kComplexDouble).contiguous();
  const auto* p = v.data_ptr<c10::complex<double>>();
  std::vector<cd> out(v.numel());
  for (size_t i = 0; i < out.size(); ++i) out[i] = {p[i].real(), p[i].imag()};
  return out;
}

// The inputs of one case on the host, indexed like the (B, L, N) tensors.
struct HostInputs {
  Case c;
  std::vector<cd> lam, x, h0;
  int64_t idx(int64_t b, int64_t t, int64_t n) const { return (b * c.L + t) * c.N + n; }
  cd a(int64_t b, int64_t t, int64_t n) const { return c.per_step ? lam[idx(b, t, n)] : lam[n]; }
  cd first(int64_t b, int64_t n) const { return c.with_h0 ? h0[b * c.N + n] : cd(0); }
};

HostInputs to_host(const Case& c, const Inputs& in) {
  return {c, host(in.lam), host(in.x), c.with_h0 ? host(in.h0) : std::vector<cd>()};
}

// The forward's logical step k happens at time t.
int64_t time_of(int64_t k, int64_t L, bool reverse) { return reverse ? L - 1 - k : k; }

// h from the definition, one scalar at a time, in complex double.
std::vector<cd> reference_h(const HostInputs& in) {
  const Case& c = in.c;
  std::vector<cd> h(c.B * c.L * c.N);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t n = 0; n < c.N; ++n) {
      cd state = in.first(b, n);
      for (int64_t k = 0; k < c.L; ++k) {
        const int64_t t = time_of(k, c.L, c.reverse);
        state = in.a(b, t, n) * state + in.x[in.idx(b, t, n)];
        h[in.idx(b, t, n)] = state;
      }
    }
  return h;
}

void expect_close(const torch::Tensor& got, const std::vector<cd>& want, double tol, const std::string& what) {
  auto flat = got.detach().cpu().to(torch::kComplexDouble).contiguous().view(-1);
  ASSERT_EQ(flat.numel(), static_cast<int64_t>(want.size())) << what;
  auto* p = flat.data_ptr<c10::complex<double>>();
  double scale = 1.0;
  for (const cd& w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_LE(std::abs(cd(p[i].real(), p[i].imag()) - want[i]), tol * scale) << what << " at element " << i;
  }
}

std::string describe(const Case& c, torch::ScalarType dtype, torch::Device device) {
  return std::string(c10::toString(dtype)) + " " + device.str() + " B=" + std::to_string(c.B) +
         " L=" + std::to_string(c.L) + " N=" + std::to_string(c.N) + (c.per_step ? " per-step" : " per-channel") +
         (c.reverse ? " reverse" : "") + (c.with_h0 ? " h0" : "");
}

TEST(Scan, ForwardMatchesRecurrence) {
  for (auto device : devices())
    for (auto dtype : {torch::kFloat, torch::kDouble, torch::kComplexFloat, torch::kComplexDouble})
      for (const Case& c : cases()) {
        const auto in = make_inputs(c, dtype, device, 1);
        auto h = torch_lru::scan(in.lam, in.x, opt(in.h0), c.reverse);
        EXPECT_EQ(h.sizes(), in.x.sizes());
        EXPECT_EQ(h.scalar_type(), dtype);
        const bool single = dtype == torch::kFloat || dtype == torch::kComplexFloat;
        expect_close(h, reference_h(to_host(c, in)), single ? 2e-5 : 1e-12, describe(c, dtype, device));
      }
}

// Gradients of loss = Re(sum conj(w) * h) from torch::autograd::grad, against the analytic ones:
// with d_k = sum_{s >= k} w_s * prod_{r = k+1..s} conj(a_r),
// dL/dx_k = d_k, dL/da (at step k) = conj(h_{k-1}) d_k, dL/dh0 = conj(a_0) d_0 (conjugate Wirtinger).
TEST(Scan, AutogradMatchesAnalyticGradient) {
  for (auto device : devices())
    for (auto dtype : {torch::kDouble, torch::kComplexDouble})
      for (const Case& c : cases()) {
        if (c.L > 100) continue;  // the analytic sums are quadratic in L
        auto in = make_inputs(c, dtype, device, 2);
        in.lam.requires_grad_();
        in.x.requires_grad_();
        if (in.h0.defined()) in.h0.requires_grad_();
        auto w = torch::randn(in.x.sizes(), in.x.options().requires_grad(false));
        auto h = torch_lru::scan(in.lam, in.x, opt(in.h0), c.reverse);
        auto loss = at::isComplexType(dtype) ? torch::real((w.conj() * h).sum()) : (w * h).sum();
        std::vector<torch::Tensor> wrt{in.lam, in.x};
        if (in.h0.defined()) wrt.push_back(in.h0);
        auto grads = torch::autograd::grad({loss}, wrt);

        const auto hin = to_host(c, in);
        const auto href = reference_h(hin);
        const auto hw = host(w);
        std::vector<cd> gx(c.B * c.L * c.N), glam(c.per_step ? c.B * c.L * c.N : c.N), gh0(c.B * c.N);
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t n = 0; n < c.N; ++n)
            for (int64_t k = 0; k < c.L; ++k) {
              const int64_t t = time_of(k, c.L, c.reverse);
              cd d = 0, prod = 1;
              for (int64_t s = k; s < c.L; ++s) {
                const int64_t ts = time_of(s, c.L, c.reverse);
                if (s > k) prod *= std::conj(hin.a(b, ts, n));
                d += prod * hw[hin.idx(b, ts, n)];
              }
              gx[hin.idx(b, t, n)] = d;
              const cd hprev = k == 0 ? hin.first(b, n) : href[hin.idx(b, time_of(k - 1, c.L, c.reverse), n)];
              (c.per_step ? glam[hin.idx(b, t, n)] : glam[n]) += std::conj(hprev) * d;
              if (k == 0) gh0[b * c.N + n] = std::conj(hin.a(b, t, n)) * d;
            }
        const auto what = describe(c, dtype, device);
        expect_close(grads[0], glam, 1e-10, what + " grad lam");
        expect_close(grads[1], gx, 1e-10, what + " grad x");
        if (in.h0.defined()) expect_close(grads[2], gh0, 1e-10, what + " grad h0");
      }
}

TEST(Scan, EmptyInputs) {
  for (auto device : devices()) {
    auto x = torch::randn({0, 4, 3}, torch::TensorOptions().device(device).requires_grad(true));
    auto lam = torch::rand({3}, torch::TensorOptions().device(device).requires_grad(true));
    auto h = torch_lru::scan(lam, x);
    EXPECT_EQ(h.sizes(), x.sizes());
    auto g = torch::autograd::grad({h.sum()}, {lam}, {}, std::nullopt, false, true);
    EXPECT_EQ(g[0].sizes(), lam.sizes());
  }
}

void expect_error(const std::function<void()>& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing: " << message;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(Scan, BadInputsRaiseErrors) {
  for (auto device : devices()) {
    auto o = torch::TensorOptions().device(device).dtype(torch::kComplexFloat);
    auto x = torch::randn({2, 5, 3}, o);
    auto lam = torch::randn({3}, o);
    expect_error([&] { torch_lru::scan(lam, torch::randn({5, 3}, o)); }, "x must have shape (B, L, N)");
    expect_error([&] { torch_lru::scan(torch::randn({4}, o), x); }, "lam of shape (N,) must match x");
    expect_error([&] { torch_lru::scan(torch::randn({2, 5}, o), x); }, "lam must have shape (N,) or (B, L, N)");
    expect_error([&] { torch_lru::scan(torch::randn({2, 4, 3}, o), x); }, "lam of shape (B, L, N) must match x");
    expect_error([&] { torch_lru::scan(lam, x, torch::randn({3, 3}, o)); }, "h0 must have shape (B, N)");
    expect_error([&] { torch_lru::scan(lam.to(torch::kComplexDouble), x); }, "lam and x must have the same dtype");
    expect_error([&] { torch_lru::scan(torch::real(lam).to(torch::kHalf), torch::real(x).to(torch::kHalf)); },
                 "unsupported dtype");
    if (device.is_cuda()) expect_error([&] { torch_lru::scan(lam.cpu(), x); }, "must be on the same device");
  }
}

TEST(Scan, OutMayBeXButShareNoOtherMemory) {
  for (auto device : devices()) {
    auto o = torch::TensorOptions().device(device).dtype(torch::kComplexFloat);
    const int64_t B = 2, L = 5, N = 3;
    auto x = torch::randn({B, L, N}, o), lam = torch::randn({N}, o) * 0.5, h0 = torch::randn({B, N}, o);
    const auto want = torch_lru::scan(lam, x, h0);
    auto inplace = x.clone();
    torch_lru::scan_out(inplace, lam, inplace, h0);  // out may be x itself
    EXPECT_TRUE(torch::allclose(inplace, want));
    auto flat = torch::zeros({B * L * N + N}, o);
    auto shifted = flat.slice(0, N).view({B, L, N});
    auto out = flat.slice(0, 0, B * L * N).view({B, L, N});
    expect_error([&] { torch_lru::scan_out(out, lam, shifted, h0); }, "torch_lru::scan.out: out overlaps x in part");
    auto buf = torch::zeros({B, L, N}, o);
    expect_error([&] { torch_lru::scan_out(buf, buf[0][0], x, h0); },
                 "torch_lru::scan.out: lam shares memory with out");
    expect_error([&] { torch_lru::scan_out(buf, buf, x, h0); }, "torch_lru::scan.out: lam shares memory with out");
    expect_error([&] { torch_lru::scan_out(buf, lam, x, buf.select(1, 2)); },
                 "torch_lru::scan.out: h0 shares memory with out");
    expect_error([&] { torch_lru::scan_out(buf, torch::randn({N + 1}, o), x); }, "torch_lru::scan.out: lam of shape");
  }
}

}  // namespace
