// libtorch calls that tch does not expose, for lit: the CPU generator state (exact resume),
// autocast on any device type with any dtype (mixed precision), the global determinism and cuDNN
// flags, and tracing a function into a graph that lit reads (ONNX export).
// Every C++ exception becomes an error string that the caller frees with `lit_shim_free_error`.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/anomaly_mode.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/fixup_trace_scope_blocks.h>
#include <torch/csrc/jit/passes/normalize_ops.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "shim_error.h"


// A C++ exception while tracing abandons the trace, so that the next one can start.
#define TRACE_TRY(context, ...) LIT_TRY_OR(context, torch::jit::tracer::abandon(), __VA_ARGS__)

static c10::DeviceType device_type(int cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }

// Writes one value's id and, when the tracer recorded it, its dtype and sizes:
// `<id> <scalar type or -1> <rank or -1> <dims...>`.
static void write_value(std::ostringstream& out, const torch::jit::Value* v) {
  out << v->unique();
  auto tt = v->type()->cast<c10::TensorType>();
  if (!tt) {
    out << " -1 -1";
    return;
  }
  auto dtype = tt->scalarType();
  out << ' ' << (dtype ? static_cast<int>(*dtype) : -1);
  auto sizes = tt->sizes().concrete_sizes();
  if (!sizes) {
    out << " -1";
    return;
  }
  out << ' ' << sizes->size();
  for (auto d : *sizes) out << ' ' << d;
}

// tch's recurrent layers (`nn::lstm(..).seq(x)`, `nn::gru`, `nn::rnn`) start from zeros whose
// sizes come from `x.size()`, which the tracer records as constants: the traced graph would run
// only at the example's batch size (and libtorch's LSTM kernel crashes on a state of the wrong
// size). Makes the batch dimension of such a zero initial state `aten::size(input, batch_dim)`.
static void free_recurrent_batch(const std::shared_ptr<torch::jit::Graph>& graph) {
  using namespace torch::jit;
  std::vector<Node*> rnns;
  for (auto* node : graph->nodes()) {
    auto kind = node->kind();
    bool rnn = kind == c10::aten::lstm || kind == c10::aten::gru || kind == c10::aten::rnn_tanh ||
               kind == c10::aten::rnn_relu;
    // The `input` overloads: (input, hx, params, has_biases, num_layers, dropout, train,
    // bidirectional, batch_first).
    if (rnn && node->inputs().size() == 9) rnns.push_back(node);
  }
  for (auto* rnn : rnns) {
    auto batch_first = toIValue(rnn->input(8));
    if (!batch_first || !batch_first->isBool()) continue;
    Value* input = rnn->input(0);
    // The (consumer, input index) pairs that hold an initial state: lstm's `[h, c]` list, or the
    // other layers' `hx`.
    std::vector<std::pair<Node*, size_t>> states;
    if (rnn->kind() == c10::aten::lstm) {
      Node* list = rnn->input(1)->node();
      if (list->kind() != c10::prim::ListConstruct) continue;
      for (size_t i = 0; i < list->inputs().size(); ++i) states.emplace_back(list, i);
    } else {
      states.emplace_back(rnn, 1);
    }
    for (auto [consumer, i] : states) {
      Node* zeros = consumer->input(i)->node();
      if (zeros->kind() != c10::aten::zeros || zeros->inputs().empty()) continue;
      Node* sizes = zeros->input(0)->node();
      if (sizes->kind() != c10::prim::ListConstruct || sizes->inputs().size() != 3) continue;
      if (input->node()->kind() != c10::prim::Param && !input->node()->isBefore(consumer)) continue;
      WithInsertPoint guard(consumer);
      Value* dim = graph->insertConstant(static_cast<int64_t>(batch_first->toBool() ? 0 : 1));
      Node* size = graph->insertNode(graph->create(c10::aten::size, {input, dim}));
      size->output()->setType(c10::IntType::get());
      Node* shape = graph->insertNode(
          graph->createList(c10::IntType::get(), {sizes->input(0), size->output(), sizes->input(2)}));
      Value* old_sizes = zeros->input(0);
      Node* fresh = graph->insertNode(
          graph->createClone(zeros, [&](Value* v) { return v == old_sizes ? shape->output() : v; }));
      consumer->replaceInput(i, fresh->output());
    }
  }
  EliminateDeadCode(graph);
}

extern "C" {

void lit_shim_free_error(char* error) { std::free(error); }

// ----- random generator -----

char* lit_rng_get_cpu_state(at::Tensor** out) {
  LIT_TRY("reading the generator state", {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new at::Tensor(gen.get_state());
  })
}

char* lit_rng_set_cpu_state(at::Tensor* state) {
  LIT_TRY("restoring the generator state", {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
  })
}

// ----- autocast -----

// Enables autocast on CPU or CUDA with `dtype` (a c10::ScalarType); writes the previous enabled
// flag and dtype, which `lit_autocast_exit` restores.
char* lit_autocast_enter(int cuda, int dtype, int* was_enabled, int* old_dtype) {
  LIT_TRY("entering autocast", {
    auto dev = device_type(cuda);
    *was_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *old_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::increment_nesting();
  })
}

char* lit_autocast_exit(int cuda, int was_enabled, int old_dtype) {
  LIT_TRY("leaving autocast", {
    auto dev = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, was_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(old_dtype));
  })
}

int lit_autocast_is_enabled(int cuda) { return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0; }

// ----- global flags -----

char* lit_set_deterministic(int deterministic, int warn_only) {
  LIT_TRY("setting deterministic algorithms", {
    at::globalContext().setDeterministicAlgorithms(deterministic != 0, warn_only != 0);
    at::globalContext().setDeterministicCuDNN(deterministic != 0);
  })
}

char* lit_set_cudnn_benchmark(int benchmark) {
  LIT_TRY("setting the cuDNN benchmark flag", { at::globalContext().setBenchmarkCuDNN(benchmark != 0); })
}

// `param.grad = None`: the gradient is dropped, not zeroed (PyTorch's `zero_grad()` default);
// the next backward allocates it afresh.
char* lit_clear_grad(at::Tensor* param) {
  LIT_TRY("clearing a gradient", { param->mutable_grad().reset(); })
}

// Makes the parallel ATen operations of the calling thread run on it alone: OpenMP's team size is
// a per-thread setting, so a data-loading thread that sets it to 1 no longer starts a team that
// competes with the training thread's for the cores (ATen's own `set_num_threads` is global).
char* lit_single_threaded_here() {
  LIT_TRY("making a thread single-threaded", {
    at::get_num_threads();  // ATen's per-thread set-up first, which would undo the setting
    using SetNumThreads = void (*)(int);
    if (auto set = reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) set(1);
  })
}

// ----- fused optimizer steps (what torch.optim's `fused=True` calls) -----

static std::vector<at::Tensor> tensor_list(at::Tensor** tensors, int n) {
  std::vector<at::Tensor> list;
  list.reserve(n);
  for (int i = 0; i < n; ++i) list.push_back(*tensors[i]);
  return list;
}

// One Adam (or, `decoupled`, AdamW) step of `n` parameters of one group, in libtorch's fused
// kernel. `max_exp_avg_sqs` is read only with `amsgrad`; `step` is the step count (already
// incremented), shared by every parameter.
char* lit_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs, at::Tensor** exp_avg_sqs,
                     at::Tensor** max_exp_avg_sqs, int n, at::Tensor* step, double lr, double beta1, double beta2,
                     double weight_decay, double eps, int amsgrad, int decoupled) {
  LIT_TRY("a fused Adam step", {
    auto p = tensor_list(params, n);
    auto g = tensor_list(grads, n);
    auto m = tensor_list(exp_avgs, n);
    auto v = tensor_list(exp_avg_sqs, n);
    auto vmax = amsgrad ? tensor_list(max_exp_avg_sqs, n) : std::vector<at::Tensor>();
    std::vector<at::Tensor> steps(n, *step);
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, vmax, steps, lr, beta1, beta2, weight_decay, eps, amsgrad != 0, false);
    } else {
      at::_fused_adam_(p, g, m, v, vmax, steps, lr, beta1, beta2, weight_decay, eps, amsgrad != 0, false);
    }
  })
}

// One SGD step of `n` parameters of one group, in libtorch's fused kernel. `buffers` are the
// momentum buffers (none when `momentum` is 0); on the first step the kernel fills them.
char* lit_fused_sgd(at::Tensor** params, at::Tensor** grads, at::Tensor** buffers, int n, double weight_decay,
                    double momentum, double lr, double dampening, int nesterov, int first_step) {
  LIT_TRY("a fused SGD step", {
    auto bufs = momentum != 0.0 ? tensor_list(buffers, n) : std::vector<at::Tensor>();
    at::_fused_sgd_(tensor_list(params, n), tensor_list(grads, n), bufs, weight_decay, momentum, lr, dampening,
                    nesterov != 0, false, first_step != 0);
  })
}

char* lit_set_detect_anomaly(int enabled) {
  LIT_TRY("setting anomaly detection", { torch::autograd::AnomalyMode::set_enabled(enabled != 0); })
}

// ----- profiler -----

// Starts libtorch's autograd profiler; `lit_profile_end` stops it and writes a Chrome trace to
// `path`.
char* lit_profile_begin(const char* path, void** recorder) {
  LIT_TRY("starting the profiler", { *recorder = new torch::autograd::profiler::RecordProfile(std::string(path)); })
}

char* lit_profile_end(void* recorder) {
  LIT_TRY("writing the profiler trace",
           { delete static_cast<torch::autograd::profiler::RecordProfile*>(recorder); })
}

// ----- tracing -----

// Starts a trace (none may be running).
static std::shared_ptr<torch::jit::tracer::TracingState> start_trace() {
  if (torch::jit::tracer::isTracing()) throw std::runtime_error("cannot nest tracing calls");
  auto state = std::make_shared<torch::jit::tracer::TracingState>();
  torch::jit::tracer::setTracingState(state);
  return state;
}

// Makes `inputs` the traced graph's inputs, typed with their dtypes and sizes (`typed`) or as
// plain tensors.
static void add_trace_inputs(torch::jit::tracer::TracingState& state, at::Tensor** inputs, int ninputs, bool typed) {
  for (int i = 0; i < ninputs; ++i) {
    auto value = state.graph->addInput();
    if (typed) {
      value->inferTypeFrom(*inputs[i]);
    } else {
      value->setType(torch::jit::TensorType::get());
    }
    state.setValue(*inputs[i], value);
  }
}

// The running trace, with `outputs` registered as its graph's outputs.
static std::shared_ptr<torch::jit::tracer::TracingState> end_trace(at::Tensor** outputs, int noutputs) {
  auto state = torch::jit::tracer::getTracingState();
  if (state == nullptr) throw std::runtime_error("not tracing");
  for (int i = 0; i < noutputs; ++i) state->graph->registerOutput(state->getOutput(*outputs[i], i));
  return state;
}

// Starts tracing with `inputs` as the graph's inputs.
char* lit_trace_begin(at::Tensor** inputs, int ninputs) {
  TRACE_TRY("starting a trace", {
    auto state = start_trace();
    add_trace_inputs(*state, inputs, ninputs, true);
  })
}

// Stops tracing with `outputs` as the graph's outputs and describes the graph, one line each:
//   input <value>
//   const <id> int <i> | float <f> | bool <b> | none | str <s> | ints <n> <i...> |
//                floats <n> <f...> | tensor <index into *tensors> | other <type>
//   node <kind> <ninputs> <input ids...> <noutputs> <output values...>
//   output <value>
// where <value> is `<id> <scalar type> <rank> <dims...>`. Tensor constants (the traced function's
// captured weights) are returned as new tensors that the caller owns.
char* lit_trace_end(at::Tensor** outputs, int noutputs, char** description, at::Tensor*** tensors,
                    int64_t* ntensors) {
  TRACE_TRY("ending a trace", {
    auto state = end_trace(outputs, noutputs);
    torch::jit::tracer::setTracingState(nullptr);
    auto graph = state->graph;
    free_recurrent_batch(graph);
    std::ostringstream out;
    out << std::setprecision(std::numeric_limits<double>::max_digits10);
    std::vector<at::Tensor> consts;
    for (auto* v : graph->inputs()) {
      out << "input ";
      write_value(out, v);
      out << '\n';
    }
    for (auto* node : graph->nodes()) {
      if (node->kind() == c10::prim::Constant) {
        out << "const " << node->output()->unique() << ' ';
        auto iv = torch::jit::toIValue(node->output());
        if (!iv || iv->isNone()) {
          out << "none";
        } else if (iv->isTensor()) {
          out << "tensor " << consts.size();
          consts.push_back(iv->toTensor());
        } else if (iv->isBool()) {
          out << "bool " << (iv->toBool() ? 1 : 0);
        } else if (iv->isInt()) {
          out << "int " << iv->toInt();
        } else if (iv->isDouble()) {
          out << "float " << iv->toDouble();
        } else if (iv->isString()) {
          out << "str " << iv->toStringRef();
        } else if (iv->isIntList()) {
          auto list = iv->toIntVector();
          out << "ints " << list.size();
          for (auto x : list) out << ' ' << x;
        } else if (iv->isDoubleList()) {
          auto list = iv->toDoubleVector();
          out << "floats " << list.size();
          for (auto x : list) out << ' ' << x;
        } else {
          out << "other " << iv->tagKind();
        }
        out << '\n';
        continue;
      }
      out << "node " << node->kind().toQualString() << ' ' << node->inputs().size();
      for (auto* v : node->inputs()) out << ' ' << v->unique();
      out << ' ' << node->outputs().size();
      for (auto* v : node->outputs()) {
        out << ' ';
        write_value(out, v);
      }
      out << '\n';
    }
    for (auto* v : graph->outputs()) {
      out << "output ";
      write_value(out, v);
      out << '\n';
    }
    *description = lit_error_string(out.str());
    *ntensors = static_cast<int64_t>(consts.size());
    *tensors = static_cast<at::Tensor**>(std::malloc(sizeof(at::Tensor*) * (consts.size() + 1)));
    for (size_t i = 0; i < consts.size(); ++i) (*tensors)[i] = new at::Tensor(consts[i]);
  })
}

// Starts tracing into a new TorchScript module (written to `*module`) holding `params`, named
// `names`: the module's parameters (buffers where `buffers[i]` is set, e.g. batch norm's running
// statistics), read through `prim::GetAttr` so that they are saved as its state, not as
// constants. The module has a `training` attribute, false, as an `nn.Module` in eval mode
// (`torch.jit.freeze` reads it).
char* lit_script_trace_begin(at::Tensor** params, const char** names, const int* buffers, int nparams,
                             at::Tensor** inputs, int ninputs, void** module) {
  TRACE_TRY("starting a trace", {
    auto modl = std::make_unique<torch::jit::Module>("lit");
    for (int i = 0; i < nparams; ++i) {
      if (buffers[i]) {
        modl->register_buffer(names[i], *params[i]);
      } else {
        modl->register_parameter(names[i], *params[i], false);
      }
    }
    modl->register_attribute("training", c10::BoolType::get(), false);
    auto state = start_trace();
    auto* self = state->graph->insertInput(0, "self")->setType(modl->_ivalue()->type());
    for (int i = 0; i < nparams; ++i) state->setValue(*params[i], state->graph->insertGetAttr(self, names[i]));
    add_trace_inputs(*state, inputs, ninputs, false);
    *module = modl.release();
  })
}

// Ends the trace begun by `lit_script_trace_begin`, adds it as the module's `forward` and
// serialises the module (torch.jit.save's format) into a new buffer; frees the module.
char* lit_script_trace_end(void* module, at::Tensor** outputs, int noutputs, char** bytes, int64_t* len) {
  std::unique_ptr<torch::jit::Module> modl(static_cast<torch::jit::Module*>(module));
  TRACE_TRY("ending a trace", {
    auto state = end_trace(outputs, noutputs);
    free_recurrent_batch(state->graph);
    torch::jit::FixupTraceScopeBlocks(state->graph, modl.get());
    torch::jit::NormalizeOps(state->graph);
    torch::jit::tracer::setTracingState(nullptr);
    auto fn = modl->_ivalue()->compilation_unit()->create_function("forward", state->graph);
    modl->type()->addMethod(fn);
    std::ostringstream out;
    modl->save(out);
    std::string data = out.str();
    *len = static_cast<int64_t>(data.size());
    *bytes = static_cast<char*>(std::malloc(data.size() + 1));
    std::memcpy(*bytes, data.data(), data.size());
  })
}

// Frees the description and the (already taken over) tensor pointer array of `lit_trace_end`.
void lit_trace_free(char* description, at::Tensor** tensors) {
  std::free(description);
  std::free(tensors);
}

}  // extern "C"
