// A small C interface to torch.distributed's engine (c10d): a TCPStore rendezvous, a Gloo
// process group with the collectives lit needs, and DDP's gradient Reducer (buckets all-reduced
// from autograd hooks while backward runs, as torch.nn.parallel.DistributedDataParallel does). Every C++ exception becomes an error string
// returned to Rust (freed with lit_c10d_free_error); nothing unwinds across the FFI boundary.
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <c10/util/Logging.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "shim_error.h"

#ifdef LIT_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct lit_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  // The same Gloo backend as a ProcessGroup, which the Reducer and broadcast_coalesced take
  // (what torch.distributed.init_process_group builds around a backend).
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

struct lit_work {
  c10::intrusive_ptr<c10d::Work> work;
};

struct lit_reducer {
  std::shared_ptr<c10d::Reducer> reducer;
  // DDP's logger: the Reducer reports to it (and, searching for unused parameters, needs it).
  std::shared_ptr<c10d::Logger> logger;
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
    auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, pg);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    *out = new lit_pg{store, pg, group};
  })
}

void lit_c10d_free(lit_pg* pg) { delete pg; }

char* lit_c10d_allreduce(lit_pg* pg, at::Tensor* tensor, int op) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    pg->group->allreduce(tensors, opts)->wait();
  })
}

// Starts a sum all-reduce of `tensor`; lit_c10d_work_wait finishes it.
char* lit_c10d_allreduce_async(lit_pg* pg, at::Tensor* tensor, lit_work** out) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> tensors{*tensor};
    *out = new lit_work{pg->group->allreduce(tensors)};
  })
}

// Waits for `work` and frees it.
char* lit_c10d_work_wait(lit_work* work) {
  std::unique_ptr<lit_work> owned(work);
  LIT_TRY("in c10d", { owned->work->wait(); })
}

// Rank `root`'s tensors on every process, packed into few messages (DDP's _broadcast_coalesced).
char* lit_c10d_broadcast_coalesced(lit_pg* pg, at::Tensor** tensors, size_t count, int root) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> list;
    for (size_t i = 0; i < count; ++i) list.push_back(*tensors[i]);
    c10d::broadcast_coalesced(pg->group, list, 250 * 1024 * 1024, root);
  })
}

// DDP's Reducer over `params`, set up as torch.nn.parallel.DistributedDataParallel sets it up:
// without find_unused_parameters every parameter starts in one bucket and the buckets are
// rebuilt after the first step in the order gradients became ready; with it, parameters are
// bucketed in reverse order under a 1 MiB first bucket and `bucket_bytes_cap`-sized others.
char* lit_c10d_reducer_new(lit_pg* pg, at::Tensor** params, const char** names, size_t count,
                           int64_t bucket_bytes_cap, int find_unused, int gradient_as_bucket_view,
                           lit_reducer** out) {
  LIT_TRY("in DDP's Reducer", {
    std::vector<at::Tensor> list;
    std::unordered_map<size_t, std::string> param_names;
    for (size_t i = 0; i < count; ++i) {
      list.push_back(*params[i]);
      param_names[i] = names[i];
    }
    const int64_t first_bucket_bytes_cap = std::min<int64_t>(1024 * 1024, bucket_bytes_cap);
    std::vector<size_t> limits;
    if (find_unused) {
      if (first_bucket_bytes_cap < bucket_bytes_cap) limits.push_back(first_bucket_bytes_cap);
      limits.push_back(bucket_bytes_cap);
    } else {
      limits.push_back(std::numeric_limits<size_t>::max());
    }
    std::vector<bool> sparse(count, false);
    auto assignment = c10d::compute_bucket_assignment_by_size(list, limits, sparse);
    auto buckets = std::get<0>(assignment);
    std::reverse(buckets.begin(), buckets.end());
    auto reducer = std::make_shared<c10d::Reducer>(
        list, buckets, pg->group, sparse, bucket_bytes_cap, find_unused != 0, gradient_as_bucket_view != 0,
        param_names, first_bucket_bytes_cap, /*skip_all_reduce_unused_params=*/false,
        /*use_python_reducer=*/false, std::vector<int64_t>{});
    auto logger = std::make_shared<c10d::Logger>(reducer);
    reducer->set_logger(logger);
    *out = new lit_reducer{reducer, logger};
  })
}

void lit_c10d_reducer_free(lit_reducer* reducer) {
  // The Reducer's destructor removes its autograd hooks; it may throw, which must not unwind here.
  try {
    delete reducer;
  } catch (...) {
  }
}

// Before the forward pass of a step whose gradients are synchronised (DDP's _pre_forward):
// counts the iteration and, once after the first step, rebuilds the buckets; `rebuilt` says
// whether it did.
char* lit_c10d_reducer_prepare_for_forward(lit_reducer* reducer, int* rebuilt) {
  LIT_TRY("in DDP's Reducer", {
    reducer->reducer->prepare_for_forward();
    *rebuilt = reducer->reducer->rebuild_buckets() ? 1 : 0;
  })
}

// After the forward pass: the next backward all-reduces the gradients, bucket by bucket as they
// become ready. With find_unused_parameters, `outputs` are searched for the parameters in use.
char* lit_c10d_reducer_prepare_for_backward(lit_reducer* reducer, at::Tensor** outputs, size_t count) {
  LIT_TRY("in DDP's Reducer", {
    std::vector<at::Tensor> list;
    for (size_t i = 0; i < count; ++i) list.push_back(*outputs[i]);
    reducer->reducer->prepare_for_backward(list);
  })
}

char* lit_c10d_broadcast(lit_pg* pg, at::Tensor* tensor, int root) {
  LIT_TRY("in c10d", {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    pg->group->broadcast(tensors, opts)->wait();
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
    pg->group->allgather(outputs, inputs)->wait();
    for (int r = 0; r < world; ++r) flat[r].copy_(outputs[0][r].reshape({-1}));
  })
}

// Whether this build has the NCCL backend.
int lit_c10d_has_nccl() {
#ifdef LIT_NCCL
  return 1;
#else
  return 0;
#endif
}

// Adds NCCL for CUDA tensors to the group (Gloo keeps the CPU's), as
// init_process_group("cpu:gloo,cuda:nccl") does; its communicators start at the first collective.
char* lit_c10d_add_nccl(lit_pg* pg, long timeout_ms) {
#ifdef LIT_NCCL
  LIT_TRY("in c10d (NCCL)", {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::PrefixStore>("nccl", pg->store);
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, pg->group->getRank(), pg->group->getSize(), options);
    pg->group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
  })
#else
  (void)pg;
  (void)timeout_ms;
  return lit_error_string("this build of lit has no NCCL backend");
#endif
}

char* lit_c10d_barrier(lit_pg* pg) {
  LIT_TRY("in c10d", { pg->pg->barrier()->wait(); })
}

}  // extern "C"
