// A small C interface to torch.distributed's engine (c10d): a TCPStore rendezvous and a Gloo
// process group with the collectives lit needs. Every C++ exception becomes an error string
// returned to Rust (freed with lit_c10d_free_error); nothing unwinds across the FFI boundary.
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <c10/util/Logging.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shim_error.h"

struct lit_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};


// c10d logs each failed connection attempt to stderr with its C++ stack; lit reports the
// failure itself, once, so these logs are off while the group is being joined.
struct QuietC10Logs {
  int saved = FLAGS_caffe2_log_level;
  QuietC10Logs() { FLAGS_caffe2_log_level = 3; }
  ~QuietC10Logs() { FLAGS_caffe2_log_level = saved; }
};

static c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1: return c10d::ReduceOp::MAX;
    case 2: return c10d::ReduceOp::MIN;
    default: return c10d::ReduceOp::SUM;
  }
}

extern "C" {

void lit_c10d_free_error(char* error) { std::free(error); }

char* lit_c10d_new_gloo(const char* host, int port, int rank, int world, long join_timeout_ms, long timeout_ms,
                        lit_pg** out) {
  LIT_TRY("in c10d", {
    QuietC10Logs quiet;
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = false;
    // The store is the rendezvous: joining waits this long; the collectives have their own.
    opts.timeout = std::chrono::milliseconds(join_timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(host)));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    *out = new lit_pg{store, pg};
  })
}

void lit_c10d_free(lit_pg* pg) { delete pg; }

char* lit_c10d_allreduce(lit_pg* pg, at::Tensor* tensor, int op) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    pg->pg->allreduce(tensors, opts)->wait();
  })
}

char* lit_c10d_broadcast(lit_pg* pg, at::Tensor* tensor, int root) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    pg->pg->broadcast(tensors, opts)->wait();
  })
}

char* lit_c10d_allgather(lit_pg* pg, at::Tensor* input, at::Tensor* output) {
  // `output` has world * input.numel() elements: rank r's tensor lands in slice r.
  LIT_TRY("in c10d", {
    int world = pg->pg->getSize();
    auto flat = output->view({world, -1});
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world; ++r) outputs[0].push_back(at::empty_like(*input));
    std::vector<at::Tensor> inputs{*input};
    pg->pg->allgather(outputs, inputs)->wait();
    for (int r = 0; r < world; ++r) flat[r].copy_(outputs[0][r].reshape({-1}));
  })
}

char* lit_c10d_barrier(lit_pg* pg) {
  LIT_TRY("in c10d", { pg->pg->barrier()->wait(); })
}

}  // extern "C"
