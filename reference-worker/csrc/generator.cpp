// Per-image CPU generators for the reference worker (PROTOCOL B.8): tch exposes only libtorch's
// global generator, but diffusers draws each image's noise from its own
// `torch.Generator("cpu").manual_seed(seed)`. These few functions create such generators and draw
// `at::randn` from them, so the streams equal PyTorch's exactly (same mt19937 state, same normal
// sampling code). No C++ exception crosses the C boundary: failures come back as a malloc'd
// message that the caller frees with `rw_free_error`.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/randn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace {
char* copy_message(const char* message) {
  size_t length = std::strlen(message);
  char* copy = static_cast<char*>(std::malloc(length + 1));
  if (copy != nullptr) std::memcpy(copy, message, length + 1);
  return copy;
}

void set_error(char** error, const char* message) {
  if (error != nullptr) *error = copy_message(message);
}
}  // namespace

extern "C" {

// Equivalent of `torch.Generator("cpu").manual_seed(seed)`.
void* rw_generator_new(uint64_t seed, char** error) {
  try {
    return new at::Generator(at::detail::createCPUGenerator(seed));
  } catch (const std::exception& e) {
    set_error(error, e.what());
  } catch (...) {
    set_error(error, "unknown C++ exception in rw_generator_new");
  }
  return nullptr;
}

void rw_generator_free(void* generator) { delete static_cast<at::Generator*>(generator); }

// Equivalent of `torch.randn(sizes, generator=generator, dtype=scalar_type)` on the CPU. Returns a
// heap `at::Tensor*`, the representation tch's `C_tensor` pointers have.
void* rw_generator_randn(void* generator, const int64_t* sizes, size_t ndim, int8_t scalar_type,
                         char** error) {
  try {
    auto* gen = static_cast<at::Generator*>(generator);
    auto options = at::TensorOptions()
                       .dtype(static_cast<at::ScalarType>(scalar_type))
                       .device(at::kCPU);
    return new at::Tensor(at::randn(at::IntArrayRef(sizes, ndim), *gen, options));
  } catch (const std::exception& e) {
    set_error(error, e.what());
  } catch (...) {
    set_error(error, "unknown C++ exception in rw_generator_randn");
  }
  return nullptr;
}

void rw_free_error(char* error) { std::free(error); }

}  // extern "C"
