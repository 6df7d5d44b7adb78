// Reads and restores libtorch's default CPU generator state (what torch.get_rng_state and
// torch.set_rng_state do), for exact resume from checkpoints. C++ exceptions become error strings.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

static char* rng_error(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) std::memcpy(out, message.c_str(), message.size() + 1);
  return out;
}

extern "C" {

void lit_rng_free_error(char* error) { std::free(error); }

char* lit_rng_get_cpu_state(at::Tensor** out) {
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new at::Tensor(gen.get_state());
    return nullptr;
  } catch (const std::exception& e) {
    return rng_error(e.what());
  } catch (...) {
    return rng_error("unknown C++ exception reading the generator state");
  }
}

char* lit_rng_set_cpu_state(at::Tensor* state) {
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
    return nullptr;
  } catch (const std::exception& e) {
    return rng_error(e.what());
  } catch (...) {
    return rng_error("unknown C++ exception restoring the generator state");
  }
}

}  // extern "C"
