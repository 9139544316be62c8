// Links the installed torch_lru and runs the op once: h_t = 0.5 h_{t-1} + 1 gives h = 1, 1.5, 1.75.
#include <ATen/ATen.h>

#include <iostream>

#include "torch_lru/scan.h"

int main() {
  auto h = torch_lru::scan(at::full({1}, 0.5, at::kDouble), at::ones({1, 3, 1}, at::kDouble));
  const double last = h.select(1, 2).item<double>();
  std::cout << "installed torch_lru: h[-1] = " << last << "\n";
  return last == 1.75 ? 0 : 1;
}
