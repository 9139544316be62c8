// The C++ modules: the LRU layer against its recurrence written out with complex tensors, step and
// chunked forward against one pass, initialisation ranges, gradients, checkpoints, clone() and bad
// options. Each test runs on the CPU and, when a GPU is present, on CUDA with the same assertions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "torch_lru/modules.h"

namespace {

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA);
  return out;
}

torch_lru::LRU make_layer(int64_t H, int64_t N, torch::Device device, bool bidirectional = false) {
  torch::manual_seed(0);
  torch_lru::LRU layer(torch_lru::LRUOptions(H, N).r_min(0.4).r_max(0.99).bidirectional(bidirectional));
  layer->to(device, torch::kDouble);
  return layer;
}

torch::Tensor param(const torch_lru::LRU& layer, const std::string& name) {
  return layer->named_parameters()[name].detach();
}

// y = Re(C x) + D u with x_k = lambda x_{k-1} + gamma B u_k, one step at a time, complex matrices.
torch::Tensor reference(const torch_lru::LRU& layer, const torch::Tensor& u, const std::string& suffix = "",
                        bool reverse = false, bool with_D = true) {
  auto lam = torch::polar(torch::exp(-torch::exp(param(layer, "nu_log" + suffix))),
                          torch::exp(param(layer, "theta_log" + suffix)));
  auto B = torch::complex(param(layer, "B_re" + suffix), param(layer, "B_im" + suffix)) *
           torch::exp(param(layer, "gamma_log" + suffix)).unsqueeze(1);
  auto C = torch::complex(param(layer, "C_re" + suffix), param(layer, "C_im" + suffix));
  const int64_t L = u.size(1);
  auto x = torch::zeros({u.size(0), lam.size(0)}, lam.options());
  std::vector<torch::Tensor> ys(L);
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = reverse ? L - 1 - i : i;
    x = lam * x + torch::matmul(u.select(1, t).to(lam.scalar_type()), B.t());
    ys[t] = torch::real(torch::matmul(x, C.t()));
    if (with_D) ys[t] = ys[t] + param(layer, "D") * u.select(1, t);
  }
  return torch::stack(ys, 1);
}

TEST(LRU, ForwardMatchesRecurrenceInBothDirections) {
  for (auto device : devices()) {
    for (bool bidirectional : {false, true}) {
      auto layer = make_layer(6, 5, device, bidirectional);
      auto u = torch::randn({3, 37, 6}, torch::dtype(torch::kDouble).device(device));
      auto expected = reference(layer, u);
      if (bidirectional) expected = expected + reference(layer, u, "_rev", /*reverse=*/true, /*with_D=*/false);
      EXPECT_TRUE(torch::allclose(layer(u), expected, 0, 1e-11)) << device << " bidirectional " << bidirectional;
    }
  }
}

TEST(LRU, StepAndChunksMatchOnePass) {
  for (auto device : devices()) {
    auto layer = make_layer(4, 7, device);
    auto u = torch::randn({2, 50, 4}, torch::dtype(torch::kDouble).device(device));
    auto [y, final_state] = layer->forward_with_state(u);
    torch::Tensor state;
    std::vector<torch::Tensor> steps;
    for (int64_t t = 0; t < 50; ++t) {
      auto [y_t, next] = layer->step(u.select(1, t), state);
      steps.push_back(y_t);
      state = next;
    }
    EXPECT_TRUE(torch::allclose(torch::stack(steps, 1), y, 0, 1e-11)) << device;
    EXPECT_TRUE(torch::allclose(state, final_state, 0, 1e-11)) << device;
    torch::Tensor carried;
    std::vector<torch::Tensor> pieces;
    for (const auto& piece : u.split_with_sizes({13, 0, 30, 7}, 1)) {
      auto [y_piece, next] = layer->forward_with_state(piece, carried);
      pieces.push_back(y_piece);
      carried = next;
    }
    EXPECT_TRUE(torch::allclose(torch::cat(pieces, 1), y, 0, 1e-11)) << device;
  }
}

TEST(LRU, PaddingNeverChangesAValidOutput) {
  for (auto device : devices()) {
    auto layer = make_layer(4, 5, device, /*bidirectional=*/true);
    auto opts = torch::dtype(torch::kDouble).device(device);
    auto mask = torch::arange(20, device).unsqueeze(0) < torch::tensor({20, 8, 1}, device).unsqueeze(1);
    auto u = torch::randn({3, 20, 4}, opts);
    auto noisy = torch::where(mask.unsqueeze(-1), u, 1e3 * torch::randn_like(u));
    auto y = layer(u, mask), y_noisy = layer(noisy, mask);
    EXPECT_TRUE(torch::allclose(y.index({mask}), y_noisy.index({mask}), 0, 1e-9)) << device;
    auto alone = layer(u.slice(0, 1, 2).slice(1, 0, 8));
    EXPECT_TRUE(torch::allclose(y.slice(0, 1, 2).slice(1, 0, 8), alone, 0, 1e-10)) << device;
  }
}

TEST(LRU, InitialisationOnTheRing) {
  torch::manual_seed(0);
  const double r_min = 0.9, r_max = 0.999, max_phase = 0.314;
  torch_lru::LRU layer(torch_lru::LRUOptions(32, 5000).r_min(r_min).r_max(r_max).max_phase(max_phase));
  auto modulus = layer->eigenvalues().abs();
  auto phase = torch::exp(param(layer, "theta_log"));
  EXPECT_GE(modulus.min().item<double>(), r_min - 1e-6);
  EXPECT_LE(modulus.max().item<double>(), r_max + 1e-6);
  EXPECT_GE(phase.min().item<double>(), 0.0);
  EXPECT_LE(phase.max().item<double>(), max_phase);
  auto gamma = torch::exp(param(layer, "gamma_log"));
  EXPECT_TRUE(torch::allclose(gamma, torch::sqrt(1 - modulus.square()), 1e-4, 1e-6));
  EXPECT_NEAR(param(layer, "B_re").std().item<double>(), 1 / std::sqrt(64.0), 0.005);
  EXPECT_NEAR(param(layer, "C_im").std().item<double>(), 1 / std::sqrt(5000.0), 0.0005);
}

TEST(LRUModel, GradientsReachEveryParameter) {
  for (auto device : devices()) {
    torch::manual_seed(0);
    torch_lru::LRUModel model(
        torch_lru::LRUModelOptions(3, 16, 8).n_layers(2).vocab_size(10).bidirectional(true).dual(true));
    model->to(device);
    auto x = torch::randint(10, {4, 12}, torch::dtype(torch::kLong).device(device));
    auto mask = torch::ones({4, 12}, torch::dtype(torch::kBool).device(device));
    model(x, mask, x.flip(1), mask).logsumexp(-1).sum().backward();
    for (const auto& p : model->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key() << " on " << device;
    }
  }
}

// Every ablation layer in the same model: gradients reach every parameter, a few optimiser steps
// lower the loss on a fixed batch, and clone() keeps the outputs.
TEST(LRUModel, EveryLayerTrainsAndClones) {
  for (const auto& name : torch_lru::layer_names()) {
    for (auto device : devices()) {
      SCOPED_TRACE(name + " on " + device.str());
      torch::manual_seed(0);
      torch_lru::LRUModel model(
          torch_lru::LRUModelOptions(3, 16, 8).n_layers(2).vocab_size(10).bidirectional(true).layer(name));
      model->to(device);
      auto x = torch::randint(10, {8, 20}, torch::dtype(torch::kLong).device(device));
      auto y = torch::randint(3, {8}, torch::dtype(torch::kLong).device(device));
      auto mask = torch::arange(20, device).unsqueeze(0) < torch::randint(1, 21, {8, 1}, device);
      torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
      double first = 0, last = 0;
      for (int step = 0; step < 30; ++step) {
        auto loss = torch::nn::functional::cross_entropy(model(x, mask), y);
        optimizer.zero_grad();
        loss.backward();
        if (step == 0) {
          for (const auto& p : model->named_parameters()) {
            ASSERT_TRUE(p.value().grad().defined()) << p.key();
            EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
          }
          first = loss.item<double>();
        }
        last = loss.item<double>();
        optimizer.step();
      }
      EXPECT_LT(last, 0.8 * first);
      model->eval();
      auto copy = std::dynamic_pointer_cast<torch_lru::LRUModelImpl>(model->clone());
      ASSERT_TRUE(copy);
      EXPECT_TRUE(torch::equal(copy->forward(x, mask), model(x, mask)));
    }
  }
}

// The RG-LRU: stepping token by token and running in pieces with the state carried give one
// pass's outputs and final state; padding keeps the state of the last valid step.
TEST(RGLRU, StepChunksAndPaddingMatchOnePass) {
  for (auto device : devices()) {
    SCOPED_TRACE(device.str());
    torch::manual_seed(0);
    torch_lru::RGLRU layer(torch_lru::LRUOptions(6, 8).gate_blocks(2));
    layer->to(device, torch::kDouble);
    auto opts = torch::dtype(torch::kDouble).device(device);
    auto u = torch::randn({2, 11, 6}, opts);
    auto [y, final_state] = layer->forward_with_state(u);
    ASSERT_EQ(final_state.sizes(), (std::vector<int64_t>{2, 4, 8}));
    torch::Tensor state;
    std::vector<torch::Tensor> steps;
    for (int64_t t = 0; t < 11; ++t) {
      auto [y_t, s] = layer->step(u.select(1, t), state);
      steps.push_back(y_t);
      state = s;
    }
    EXPECT_TRUE(torch::allclose(torch::stack(steps, 1), y, 0, 1e-12));
    EXPECT_TRUE(torch::allclose(state, final_state, 0, 1e-12));
    auto [y1, s1] = layer->forward_with_state(u.narrow(1, 0, 4), layer->init_state(2));
    auto [y2, s2] = layer->forward_with_state(u.narrow(1, 4, 7), s1);
    EXPECT_TRUE(torch::allclose(torch::cat({y1, y2}, 1), y, 0, 1e-12));
    EXPECT_TRUE(torch::allclose(s2, final_state, 0, 1e-12));
    auto mask = torch::arange(11, device).unsqueeze(0) < torch::tensor({11, 5}, device).unsqueeze(1);
    auto [ym, sm] = layer->forward_with_state(u, {}, mask);
    auto [alone, alone_state] = layer->forward_with_state(u.narrow(0, 1, 1).narrow(1, 0, 5));
    EXPECT_TRUE(torch::allclose(ym[1].narrow(0, 0, 5), alone[0], 0, 1e-12));
    EXPECT_TRUE(torch::allclose(sm[1], alone_state[0], 0, 1e-12));
  }
}

// Hawk's block (RMSNorm, RG-LRU block, gated MLP) steps as it runs, in both norm placements.
TEST(HawkBlock, StepMatchesForward) {
  for (bool prenorm : {true, false}) {
    torch::manual_seed(0);
    torch_lru::LRUBlockOptions options(torch_lru::LRUOptions(8, 12));
    options.layer("rglru").norm("rms").prenorm(prenorm).block("hawk");
    torch_lru::HawkBlock block(options);
    block->to(torch::kDouble);
    block->eval();
    auto x = torch::randn({2, 9, 8}, torch::kDouble);
    torch::Tensor state;
    std::vector<torch::Tensor> steps;
    for (int64_t t = 0; t < 9; ++t) {
      auto [y_t, s] = block->step(x.select(1, t), state);
      steps.push_back(y_t);
      state = s;
    }
    EXPECT_TRUE(torch::allclose(torch::stack(steps, 1), block->forward(x), 0, 1e-10)) << "prenorm " << prenorm;
    EXPECT_EQ(block->mlp_up->options.out_features(), 24);
  }
  torch_lru::LRUBlockOptions both_ways(torch_lru::LRUOptions(8, 12).bidirectional(true));
  both_ways.layer("tanh_rnn").block("hawk");
  torch_lru::HawkBlock block(both_ways);
  block->eval();
  EXPECT_THROW(block->step(torch::randn({1, 8})), c10::Error);
}

// Streaming: after the last token, LRUModel::step's logits equal forward's, for every layer, both
// blocks and every pooling, with padding (per-step logits at valid positions for "none").
TEST(LRUModel, StreamedLogitsEqualTheWholeSequence) {
  for (const auto& layer : torch_lru::layer_names()) {
    for (const std::string block : {"lru", "hawk"}) {
      for (const std::string pooling : {"mean", "last", "none"}) {
        SCOPED_TRACE(layer + " / " + block + " / " + pooling);
        torch::manual_seed(0);
        torch_lru::LRUModel model(torch_lru::LRUModelOptions(4, 12, 8)
                                      .n_layers(2)
                                      .vocab_size(9)
                                      .layer(layer)
                                      .block_kind(block)
                                      .pooling(pooling)
                                      .norm(block == "hawk" ? "rms" : "layer"));
        model->to(torch::kDouble);
        model->eval();
        torch::NoGradGuard no_grad;
        auto x = torch::randint(9, {3, 11}, torch::kLong);
        auto mask = torch::arange(11).unsqueeze(0) < torch::tensor({11, 6, 1}).unsqueeze(1);
        auto whole = model(x, mask);
        auto state = model->init_state(3);
        torch::Tensor logits;
        for (int64_t t = 0; t < 11; ++t) {
          std::tie(logits, state) = model->step(x.select(1, t), state, mask.select(1, t));
          if (pooling == "none") {
            auto valid = mask.select(1, t);
            EXPECT_TRUE(torch::allclose(logits.index({valid}), whole.select(1, t).index({valid}), 0, 1e-10));
          }
        }
        if (pooling != "none") EXPECT_TRUE(torch::allclose(logits, whole, 0, 1e-10));
      }
    }
  }
  torch_lru::LRUModel both(torch_lru::LRUModelOptions(2, 8, 4).vocab_size(5).bidirectional(true));
  EXPECT_THROW(both->init_state(1), c10::Error);
}

TEST(LRUModel, CheckpointRoundTripAndClone) {
  torch::manual_seed(1);
  auto options = torch_lru::LRUModelOptions(4, 8, 6).n_layers(2).vocab_size(7);
  torch_lru::LRUModel model(options);
  model->eval();
  auto x = torch::randint(7, {3, 9}, torch::kLong);
  auto expected = model(x);
  const std::string path = ::testing::TempDir() + "torch_lru_checkpoint.pt";
  torch_lru::save_state_dict(*model, path);
  torch::manual_seed(2);
  torch_lru::LRUModel other(options);
  other->eval();
  EXPECT_FALSE(torch::allclose(other(x), expected));
  torch_lru::load_state_dict(*other, path);
  EXPECT_TRUE(torch::equal(other(x), expected));
  auto copy = std::dynamic_pointer_cast<torch_lru::LRUModelImpl>(model->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->forward(x), expected));
  torch_lru::LRUModel wider(torch_lru::LRUModelOptions(4, 8, 7).n_layers(2).vocab_size(7));
  EXPECT_THROW(
      {
        try {
          torch_lru::load_state_dict(*wider, path);
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("blocks.0.lru.B_im has shape [6, 8] but the module's is [7, 8]"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      c10::Error);
  std::remove(path.c_str());
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos) << e.what_without_backtrace();
  }
}

TEST(Modules, BadOptionsAndInputsRaiseErrors) {
  expect_error([] { torch_lru::LRU(4, 0); }, "d_state must be positive, got 0");
  expect_error([] { torch_lru::LRU(torch_lru::LRUOptions(4, 4).r_min(0.9).r_max(0.5)); }, "r_min <= r_max");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).pooling("max")); },
               "pooling must be one of {mean, last, none}, got \"max\"");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).norm("group")); },
               "kind must be one of {batch, layer, rms}");
  torch_lru::LRU layer(4, 3);
  expect_error([&] { layer(torch::randn({2, 4})); }, "must have shape (B, L, H), got 2 dimensions");
  expect_error([&] { layer(torch::randn({2, 5, 6})); }, "last dimension must be d_model = 4");
  expect_error([&] { layer->step(torch::randn({2, 5, 4})); }, "must have shape (B, H)");
  torch_lru::LRU both(torch_lru::LRUOptions(4, 3).bidirectional(true));
  expect_error([&] { both->step(torch::randn({2, 4})); }, "bidirectional layer cannot run step by step");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).vocab_size(-1)); },
               "vocab_size must be positive (or 0 for feature inputs), got -1");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2, 0)); }, "d_model must be positive, got 0");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).d_input(0)); },
               "d_input must be positive, got 0");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).dropout(1.0)); }, "dropout must be in [0, 1)");
  torch_lru::LRUModel model(torch_lru::LRUModelOptions(2, 8, 4).n_layers(1).vocab_size(5));
  expect_error([&] { model(torch::randn({2, 3, 1})); }, "x must be token ids (B, L)");
  expect_error([&] { model(torch::tensor({{0, 1, 5}})); }, "x holds token ids in [0, 5], outside [0, vocab_size = 5)");
  expect_error(
      [&] {
        model(torch::tensor({{-1, 1, 2}}));
      },
      "x holds token ids in [-1, 2], outside [0, vocab_size = 5)");
  expect_error([&] { torch_lru::load_state_dict(*model, "/nonexistent/model.pt"); }, "cannot open /nonexistent");
  expect_error(
      [] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).layer("gru")); },
      "unknown recurrent layer 'gru'; the layers are tanh_rnn, linear_dense, diag_complex, diag_exp, lru, s5, s4d");
  torch_lru::LRUBlock block(torch_lru::LRUBlockOptions(torch_lru::LRUOptions(4, 3).bidirectional(true)).layer("s5"));
  block->eval();
  expect_error([&] { block->step(torch::randn({2, 4})); }, "s5: a bidirectional layer cannot run step by step");
  expect_error([] { torch_lru::LRUModel(torch_lru::LRUModelOptions(2).block_kind("griffin")); },
               "LRUModel: block must be one of {lru, hawk}, got \"griffin\"");
}

TEST(Checkpoints, DamagedFilesAreNamedErrorsNeverCrashes) {
  torch::manual_seed(3);
  torch_lru::LRUModel model(torch_lru::LRUModelOptions(2, 8, 4).n_layers(1).vocab_size(5));
  const std::string path = ::testing::TempDir() + "torch_lru_damaged.pt";
  torch_lru::save_state_dict(*model, path);
  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string noise(300, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 2654435761u) >> 7);
  for (const std::string& bytes : {good.substr(0, good.size() / 2), good.substr(0, 64), std::string(), noise}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    expect_error([&] { torch_lru::load_state_dict(*model, path); }, "load_state_dict: cannot read " + path);
  }
  std::remove(path.c_str());
}

}  // namespace
