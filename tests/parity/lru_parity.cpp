// The C++ side of the Python/C++ parity tests (tests/test_parity.py). Usage:
//   lru_parity init OUT_STATE key=value...         seeds, builds an LRUModel, saves its state dict
//   lru_parity run STATE INPUTS OUTPUTS key=value... loads a state dict, runs the model on the
//                                                    inputs ({"x", "mask"?, "x2"?, "mask2"?}) and
//                                                    saves {"y": logits}
// Model options are LRUModelOptions' names (d_output=10 pooling=last ...), plus seed=S and
// train=0|1 (the module's mode when run).
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "torch_lru/modules.h"

namespace {

using Args = std::map<std::string, std::string>;

Args parse(int argc, char** argv, int first) {
  Args args;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    TORCH_CHECK(eq != std::string::npos, "lru_parity: expected key=value, got ", a);
    args[a.substr(0, eq)] = a.substr(eq + 1);
  }
  return args;
}

torch_lru::LRUModel make_model(Args& a) {
  auto take = [&](const char* key, const std::string& fallback) {
    auto it = a.find(key);
    std::string v = it == a.end() ? fallback : it->second;
    if (it != a.end()) a.erase(it);
    return v;
  };
  auto i = [&](const char* k, const char* d) { return std::stoll(take(k, d)); };
  auto f = [&](const char* k, const char* d) { return std::stod(take(k, d)); };
  auto b = [&](const char* k, const char* d) { return take(k, d) == "1"; };
  torch_lru::LRUModelOptions o(i("d_output", "2"), i("d_model", "16"), i("d_state", "8"));
  o.n_layers(i("n_layers", "2"))
      .vocab_size(i("vocab_size", "0"))
      .d_input(i("d_input", "1"))
      .pooling(take("pooling", "mean"))
      .dual(b("dual", "0"))
      .r_min(f("r_min", "0"))
      .r_max(f("r_max", "1"))
      .max_phase(f("max_phase", "6.283185307179586"))
      .bidirectional(b("bidirectional", "0"))
      .norm(take("norm", "batch"))
      .prenorm(b("prenorm", "1"))
      .dropout(f("dropout", "0"))
      .layer(take("layer", "lru"))
      .block_kind(take("block", "lru"))
      .gate_blocks(i("gate_blocks", "1"))
      .a_min(f("a_min", "0.9"))
      .a_max(f("a_max", "0.999"));
  torch::manual_seed(i("seed", "0"));
  const bool train = b("train", "0");
  for (const auto& [key, value] : a) TORCH_CHECK(false, "lru_parity: unknown option ", key, "=", value);
  torch_lru::LRUModel model(o);
  model->train(train);
  return model;
}

c10::Dict<c10::IValue, c10::IValue> read_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "lru_parity: cannot open ", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes).toGenericDict();
}

torch::Tensor get(const c10::Dict<c10::IValue, c10::IValue>& d, const std::string& key) {
  return d.contains(key) ? d.at(key).toTensor() : torch::Tensor();
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "init" && argc >= 3) {
    Args a = parse(argc, argv, 3);
    auto model = make_model(a);
    torch_lru::save_state_dict(*model, argv[2]);
    return 0;
  }
  if (cmd == "run" && argc >= 5) {
    Args a = parse(argc, argv, 5);
    auto model = make_model(a);
    torch_lru::load_state_dict(*model, argv[2]);
    const auto inputs = read_dict(argv[3]);
    auto y = model(get(inputs, "x"), get(inputs, "mask"), get(inputs, "x2"), get(inputs, "mask2"));
    c10::Dict<std::string, at::Tensor> out;
    out.insert("y", y.detach());
    const auto bytes = torch_lru::pickle_tensors(out);
    std::ofstream(argv[4], std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    // The running statistics a training-mode pass updated, for the test to compare too.
    torch_lru::save_state_dict(*model, std::string(argv[4]) + ".state");
    return 0;
  }
  std::fprintf(stderr, "usage: lru_parity init OUT_STATE key=value... | run STATE INPUTS OUTPUTS key=value...\n");
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "lru_parity: %s\n", e.what());
  return 1;
}
