// Trains a small LRUModel with LibTorch alone on a generated task that needs memory: classify a
// token sequence by its first token, reading the model's output at the last step only. Prints the
// loss and accuracy as they improve; exits non-zero if the model has not learnt the task.
// Build: scripts/build_cpp.sh; run: build/train_example [steps].
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "torch_lru/modules.h"

namespace {

constexpr int64_t kVocab = 4, kLength = 32, kBatch = 32;

// Random tokens; the label is the first one, which the last step must still remember.
std::pair<torch::Tensor, torch::Tensor> make_batch(int64_t batch) {
  auto tokens = torch::randint(kVocab, {batch, kLength}, torch::kLong);
  return {tokens, tokens.select(1, 0).clone()};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 300;
  torch::manual_seed(0);
  torch_lru::LRUModel model(torch_lru::LRUModelOptions(/*d_output=*/kVocab, /*d_model=*/32, /*d_state=*/32)
                                .n_layers(2)
                                .vocab_size(kVocab)
                                .pooling("last")
                                .r_min(0.9)
                                .r_max(0.999)
                                .norm("layer"));
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0.01));

  double first_loss = 0.0, loss_value = 0.0;
  for (int64_t step = 1; step <= steps; ++step) {
    auto [x, label] = make_batch(kBatch);
    auto loss = torch::nn::functional::cross_entropy(model(x), label);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    loss_value = loss.item<double>();
    if (step == 1) first_loss = loss_value;
    if (step % 50 == 0 || step == 1) std::printf("step %4lld  loss %.4f\n", static_cast<long long>(step), loss_value);
  }

  model->eval();
  torch::NoGradGuard no_grad;
  auto [x, label] = make_batch(1024);
  const double accuracy = model(x).argmax(-1).eq(label).to(torch::kDouble).mean().item<double>();
  std::printf("held-out accuracy %.3f (chance %.3f), loss %.4f -> %.4f\n", accuracy, 1.0 / kVocab, first_loss,
              loss_value);
  if (!(accuracy > 0.9 && loss_value < 0.5 * first_loss)) {
    std::fprintf(stderr, "train_example: the model did not learn the task\n");
    return 1;
  }
  return 0;
}
