// How lit's C++ shims report errors: every entry point returns nullptr on success, or an error
// message allocated with malloc, which the Rust side copies and hands back to be freed.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

static inline char* lit_error_string(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) std::memcpy(out, message.c_str(), message.size() + 1);
  return out;
}

// Runs the statements after `cleanup`; a C++ exception runs `cleanup`, then becomes the error
// message (`context` names what was being done when the exception is not a std::exception).
#define LIT_TRY_OR(context, cleanup, ...)                              \
  try {                                                                \
    __VA_ARGS__;                                                       \
    return nullptr;                                                    \
  } catch (const std::exception& e) {                                  \
    cleanup;                                                           \
    return lit_error_string(e.what());                                 \
  } catch (...) {                                                      \
    cleanup;                                                           \
    return lit_error_string("unknown C++ exception " context);         \
  }

#define LIT_TRY(context, ...) LIT_TRY_OR(context, (void)0, __VA_ARGS__)
