// Streams tokens one at a time through an LRUModel trained in Python, the way a server would: the
// checkpoint (torch_lru.save_state_dict in Python) is loaded with torch_lru::load_state_dict, the
// state is made once with init_state, and every token costs one LRUModel::step. Prints the
// latency per token, and checks that the streamed logits after the last token equal a forward
// pass over the whole sequence. Without a checkpoint it streams a freshly initialised model.
//
//   build-cpp/stream_example [MODEL.pt] [--batch=1] [--tokens=200] [--threads=1] [--d_model=128]
//       [--d_state=256] [--n_layers=6] [--vocab_size=16] [--d_output=10] [--layer=lru] [--block=lru]
//       [--norm=layer] [--pooling=mean]
// The model options must be those the checkpoint was trained with (load_state_dict names any key
// or shape that does not match).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "torch_lru/modules.h"

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags{{"batch", "1"},       {"tokens", "200"},  {"threads", "1"},
                                           {"d_model", "128"},   {"d_state", "256"}, {"n_layers", "6"},
                                           {"vocab_size", "16"}, {"d_output", "10"}, {"layer", "lru"},
                                           {"block", "lru"},     {"norm", "layer"},  {"pooling", "mean"}};
  std::string checkpoint;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos && flags.count(arg.substr(2, eq - 2))) {
      flags[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
    } else if (arg.rfind("--", 0) != 0 && checkpoint.empty()) {
      checkpoint = arg;
    } else {
      std::fprintf(stderr, "stream_example: unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  auto num = [&](const char* key) { return std::stoll(flags[key]); };
  try {
    torch::set_num_threads(static_cast<int>(num("threads")));
    torch_lru::LRUModel model(torch_lru::LRUModelOptions(num("d_output"), num("d_model"), num("d_state"))
                                  .n_layers(num("n_layers"))
                                  .vocab_size(num("vocab_size"))
                                  .layer(flags["layer"])
                                  .block_kind(flags["block"])
                                  .norm(flags["norm"])
                                  .pooling(flags["pooling"]));
    if (!checkpoint.empty()) torch_lru::load_state_dict(*model, checkpoint);
    model->eval();
    torch::InferenceMode inference;

    const int64_t batch = num("batch"), tokens = num("tokens");
    torch::manual_seed(0);
    auto sequence = torch::randint(num("vocab_size"), {batch, tokens}, torch::kLong);
    std::vector<double> rounds;
    torch::Tensor logits;
    for (int round = 0; round < 6; ++round) {  // the first round warms up
      auto state = model->init_state(batch);
      const auto start = std::chrono::steady_clock::now();
      for (int64_t t = 0; t < tokens; ++t) std::tie(logits, state) = model->step(sequence.select(1, t), state);
      const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
      if (round > 0) rounds.push_back(took.count() / static_cast<double>(tokens));
    }
    std::sort(rounds.begin(), rounds.end());
    const double us = rounds[rounds.size() / 2];
    auto whole = model->forward(sequence);
    if (flags["pooling"] == "none") whole = whole.select(1, tokens - 1);
    const double gap = (logits - whole).abs().max().item<double>();
    std::printf(
        "C++ LRUModel::step B=%lld %.1f us/token %.0f tokens/s (median of 5 rounds of %lld tokens); "
        "streamed vs whole-sequence logits: max difference %.2e\n",
        static_cast<long long>(batch), us, static_cast<double>(batch) * 1e6 / us, static_cast<long long>(tokens), gap);
    return gap < 1e-3 ? 0 : 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "stream_example: %s\n", e.what_without_backtrace());
    return 1;
  }
}
