// A LibTorch program using the scan op forward and backward, with no Python at run time.
// Build: scripts/build_cpp.sh; run: build/scan_example.
#include <torch/torch.h>

#include <iostream>

#include "torch_lru/scan.h"

int main() {
  torch::manual_seed(0);
  const int64_t B = 2, L = 1000, N = 8;
  const auto opts = torch::TensorOptions().dtype(torch::kComplexFloat);
  // |lam| in [0.9, 1): a slowly decaying memory, as the LRU initialises it.
  auto lam = torch::polar(0.9 + 0.1 * torch::rand({N}), 6.28 * torch::rand({N})).requires_grad_();
  auto x = torch::randn({B, L, N}, opts).requires_grad_();

  auto h = torch_lru::scan(lam, x);
  // Check the last step against the recurrence computed directly.
  auto expected = torch::zeros({B, N}, opts);
  for (int64_t t = 0; t < L; ++t) expected = lam.detach() * expected + x.detach().select(1, t);
  const double err = (h.detach().select(1, L - 1) - expected).abs().max().item<double>();

  auto loss = torch::real(h).pow(2).mean();
  auto grads = torch::autograd::grad({loss}, {lam, x});
  std::cout << "h: " << h.sizes() << ", loss " << loss.item<float>() << ", |grad lam| "
            << grads[0].abs().sum().item<float>() << ", grad x " << grads[1].sizes()
            << ", max error at t = L-1: " << err << "\n";
  if (!(err < 1e-3) || !grads[0].isfinite().all().item<bool>()) {
    std::cerr << "scan_example: unexpected result\n";
    return 1;
  }
  std::cout << "ok\n";
  return 0;
}
