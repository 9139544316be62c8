// State-dict checkpoints in torch.save's format (a pickled dict of tensors in a zip archive), the
// format Python users already keep their models in.
#include <fstream>
#include <iterator>
#include <map>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include "torch_lru/modules.h"

namespace torch_lru {

namespace {

// Parameters and buffers by their dotted names, as Module.state_dict() in Python lists them.
std::map<std::string, torch::Tensor> state_of(const torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) state[item.key()] = item.value();
  for (const auto& item : module.named_buffers(/*recurse=*/true)) state[item.key()] = item.value();
  return state;
}

// torch::pickle_save, but with plain (untagged) containers: Python's torch.load(weights_only=True)
// refuses the type tags pickle_save attaches to typed dicts.
std::vector<char> pickle_plain(const c10::IValue& value) {
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* data, size_t size) { pickled.insert(pickled.end(), data, data + size); },
                              nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::vector<char> archive;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
    const char* bytes = static_cast<const char*>(data);
    archive.insert(archive.end(), bytes, bytes + size);
    return size;
  });
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return archive;
}

}  // namespace

std::vector<char> pickle_tensors(const c10::Dict<std::string, at::Tensor>& tensors) {
  return pickle_plain(c10::IValue(tensors));
}

void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, tensor] : state_of(module)) dict.insert(name, tensor.detach().cpu());
  const std::vector<char> bytes = pickle_tensors(dict);
  // Written beside the target and renamed over it, so a crash never leaves half a checkpoint.
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary);
    TORCH_CHECK(out, "save_state_dict: cannot open ", partial, " for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    TORCH_CHECK(out.good(), "save_state_dict: writing ", partial, " failed");
  }
  TORCH_CHECK(std::rename(partial.c_str(), path.c_str()) == 0, "save_state_dict: cannot rename ", partial, " to ",
              path);
}

void load_state_dict(torch::nn::Module& module, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "load_state_dict: cannot open ", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue loaded;
  try {
    loaded = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    // LibTorch's unpickler cannot rebuild an OrderedDict, which is what state_dict() returns.
    TORCH_CHECK(false, "load_state_dict: cannot read ", path,
                " (a torch.save file of a plain dict of tensors is expected; from Python write it with "
                "torch_lru.save_state_dict(model, path) or torch.save(dict(model.state_dict()), path)): ",
                e.what_without_backtrace());
  }
  TORCH_CHECK(loaded.isGenericDict(), "load_state_dict: ", path, " holds a ", loaded.tagKind(),
              ", expected a state dict (str -> Tensor)");
  std::map<std::string, torch::Tensor> saved;
  for (const auto& entry : loaded.toGenericDict()) {
    TORCH_CHECK(entry.key().isString() && entry.value().isTensor(), "load_state_dict: ", path,
                " holds an entry that is not str -> Tensor");
    saved[entry.key().toStringRef()] = entry.value().toTensor();
  }
  auto state = state_of(module);
  std::string missing, unexpected;
  for (const auto& item : state) {
    if (!saved.count(item.first)) missing += " " + item.first;
  }
  for (const auto& item : saved) {
    if (!state.count(item.first)) unexpected += " " + item.first;
  }
  TORCH_CHECK(missing.empty() && unexpected.empty(), "load_state_dict: ", path,
              " does not match the module; missing keys:", missing.empty() ? " none" : missing,
              "; unexpected keys:", unexpected.empty() ? " none" : unexpected);
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : state) {
    const auto& value = saved.at(name);
    TORCH_CHECK(value.sizes() == tensor.sizes(), "load_state_dict: ", path, ": ", name, " has shape ", value.sizes(),
                " but the module's is ", tensor.sizes());
    tensor.copy_(value);
  }
}

}  // namespace torch_lru
