// 2-D NHWC convolutions on oneDNN, as XLA FFI handlers (jax.ffi): forward, gradient with respect
// to the input, gradient with respect to the kernel. Kernels are HWIO (Flax's layout); padding is
// explicit (top, bottom, left, right). float32, or bfloat16 with float32 accumulation where the
// CPU has bfloat16 convolutions. The bias variants add a bias and, optionally, apply a ReLU in the
// forward primitive (a post-op), and sum the bias gradient in the kernel-gradient primitive, as
// PyTorch does: no separate passes over the activations for them.
//
// oneDNN 3.x API (3.2 from PyPI's onednn-cpu-gomp; on AVX2 its brgemm kernels are the ones PyTorch
// runs). Primitives are built once per (direction, shapes, dtypes, strides, padding) and kept; each
// call has its own stream and each calling thread its own scratchpad, so the handlers may run
// concurrently (one per device). oneDNN's threads are OpenMP's: OMP_NUM_THREADS, else every core
// the process may use.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Dims = memory::dims;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  int64_t n, h, w, c;     // input (NHWC)
  int64_t kh, kw, o;      // kernel (HWIO: kh, kw, c, o)
  int64_t oh, ow;         // output (N, oh, ow, o)
  Dims strides, pad_l, pad_r;
  bool bias = false;      // forward: adds a bias; kernel gradient: also sums the bias gradient
  bool relu = false;      // forward: ReLU after the bias
};

memory::data_type to_dnnl(ffi::DataType t) {
  return t == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

memory::desc nhwc(int64_t n, int64_t h, int64_t w, int64_t c, memory::data_type t) {
  return memory::desc({n, c, h, w}, t, memory::format_tag::nhwc);
}

memory::desc hwio(const Geometry& g, memory::data_type t, memory::format_tag tag) {
  return memory::desc({g.o, g.c, g.kh, g.kw}, t, tag);
}

// Kernel memory in the layout the primitive wants, with a reorder from/to Flax's HWIO when they
// differ. Reorders of the (small) kernel are cheap next to the convolution.
struct KernelLayout {
  memory::desc user, wanted;
  std::unique_ptr<dnnl::reorder> reorder;  // null when the layouts are equal
};

KernelLayout kernel_layout(const memory::desc& user, const memory::desc& wanted, bool to_user) {
  KernelLayout k{user, wanted, nullptr};
  if (user != wanted) {
    auto& e = cpu_engine();
    k.reorder = to_user
        ? std::make_unique<dnnl::reorder>(dnnl::reorder::primitive_desc(e, wanted, e, user))
        : std::make_unique<dnnl::reorder>(dnnl::reorder::primitive_desc(e, user, e, wanted));
  }
  return k;
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

memory::desc bias_desc(const Geometry& g, memory::data_type t) {
  return g.bias ? memory::desc({g.o}, t, memory::format_tag::x) : memory::desc();
}

// The forward convolution (with the bias when g.bias; the bias has the kernel's dtype). Also the
// hint of the backward ones.
dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, memory::data_type x_t,
                                                     memory::data_type k_t, memory::data_type y_t,
                                                     const dnnl::primitive_attr& attr) {
  return dnnl::convolution_forward::primitive_desc(
      cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      nhwc(g.n, g.h, g.w, g.c, x_t), hwio(g, k_t, memory::format_tag::any), bias_desc(g, k_t),
      nhwc(g.n, g.oh, g.ow, g.o, y_t), g.strides, g.pad_l, g.pad_r, attr);
}

// One cached convolution: the primitive, its scratchpad size and the kernel's layout.
struct Conv {
  std::unique_ptr<dnnl::primitive> primitive;
  memory::desc scratchpad;
  KernelLayout kernel;
};

enum class Direction { kForward, kInputGrad, kKernelGrad };

std::shared_ptr<Conv> build(Direction d, const Geometry& g, memory::data_type a_t,
                            memory::data_type b_t, memory::data_type out_t) {
  auto& e = cpu_engine();
  auto attr = user_scratchpad();
  auto conv = std::make_shared<Conv>();
  if (d == Direction::kForward) {  // a = x, b = kernel, out = y
    if (g.relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    auto pd = forward_pd(g, a_t, b_t, out_t, attr);
    conv->kernel = kernel_layout(hwio(g, b_t, memory::format_tag::hwio), pd.weights_desc(), false);
    conv->scratchpad = pd.scratchpad_desc();
    conv->primitive = std::make_unique<dnnl::convolution_forward>(pd);
  } else if (d == Direction::kInputGrad) {  // a = dy, b = kernel, out = dx
    auto hint = forward_pd(g, out_t, b_t, a_t, dnnl::primitive_attr());
    dnnl::convolution_backward_data::primitive_desc pd(
        e, dnnl::algorithm::convolution_direct, nhwc(g.n, g.h, g.w, g.c, out_t),
        hwio(g, b_t, memory::format_tag::any), nhwc(g.n, g.oh, g.ow, g.o, a_t), g.strides,
        g.pad_l, g.pad_r, hint, attr);
    conv->kernel = kernel_layout(hwio(g, b_t, memory::format_tag::hwio), pd.weights_desc(), false);
    conv->scratchpad = pd.scratchpad_desc();
    conv->primitive = std::make_unique<dnnl::convolution_backward_data>(pd);
  } else {  // a = x, b = dy, out = dkernel (and dbias; float32 also for bfloat16 inputs)
    // The hint's kernel has the input's dtype: no forward convolution takes bf16 x, f32 kernel.
    auto hint = forward_pd(g, a_t, a_t, b_t, dnnl::primitive_attr());
    dnnl::convolution_backward_weights::primitive_desc pd(
        e, dnnl::algorithm::convolution_direct, nhwc(g.n, g.h, g.w, g.c, a_t),
        hwio(g, out_t, memory::format_tag::any), bias_desc(g, out_t),
        nhwc(g.n, g.oh, g.ow, g.o, b_t), g.strides, g.pad_l, g.pad_r, hint, attr);
    conv->kernel =
        kernel_layout(hwio(g, out_t, memory::format_tag::hwio), pd.diff_weights_desc(), true);
    conv->scratchpad = pd.scratchpad_desc();
    conv->primitive = std::make_unique<dnnl::convolution_backward_weights>(pd);
  }
  return conv;
}

std::string cache_key(Direction d, const Geometry& g, memory::data_type a_t, memory::data_type b_t,
                      memory::data_type out_t) {
  std::string key;
  for (int64_t v : {int64_t(d), g.n, g.h, g.w, g.c, g.kh, g.kw, g.o, g.oh, g.ow, g.strides[0],
                    g.strides[1], g.pad_l[0], g.pad_l[1], g.pad_r[0], g.pad_r[1], int64_t(g.bias),
                    int64_t(g.relu), int64_t(a_t), int64_t(b_t), int64_t(out_t)}) {
    key += std::to_string(v) + ',';
  }
  return key;
}

std::shared_ptr<Conv> cached(Direction d, const Geometry& g, memory::data_type a_t,
                             memory::data_type b_t, memory::data_type out_t) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<Conv>> cache;
  const std::string key = cache_key(d, g, a_t, b_t, out_t);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, build(d, g, a_t, b_t, out_t)).first;
  return it->second;
}

// Working memory, kept per thread and grown as needed: allocating it per call (large blocks are
// fresh pages from the OS every time) cost more than some convolutions. Uninitialised: oneDNN
// writes before it reads. Two slots: the scratchpad and the reordered kernel.
void* scratch_buffer(int slot, size_t size) {
  thread_local std::unique_ptr<uint8_t[]> buffers[2];
  thread_local size_t sizes[2] = {0, 0};
  if (size > sizes[slot]) {
    buffers[slot].reset(new uint8_t[size]);
    sizes[slot] = size;
  }
  return buffers[slot].get();
}

// Runs one convolution. `a`, `b`, `out` are the arguments in the order of Direction's comments;
// `bias` is the forward's bias or the kernel gradient's bias gradient (when g.bias).
void run(Direction d, const Geometry& g, ffi::AnyBuffer a, ffi::AnyBuffer b, void* out,
         ffi::DataType out_type, void* bias = nullptr) {
  auto a_t = to_dnnl(a.element_type()), b_t = to_dnnl(b.element_type());
  auto out_t = to_dnnl(out_type);
  auto conv = cached(d, g, a_t, b_t, out_t);
  auto& e = cpu_engine();
  dnnl::stream stream(e);
  memory scratchpad(conv->scratchpad, e, scratch_buffer(0, conv->scratchpad.get_size()));

  const KernelLayout& k = conv->kernel;
  void* kernel_buffer = scratch_buffer(1, k.reorder ? k.wanted.get_size() : 0);
  void* user_kernel = d == Direction::kKernelGrad ? out : b.untyped_data();
  memory user(k.user, e, user_kernel);
  memory kernel = k.reorder ? memory(k.wanted, e, kernel_buffer) : user;
  if (k.reorder && d != Direction::kKernelGrad) {
    k.reorder->execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, kernel}});
  }

  if (d == Direction::kForward) {
    memory x(nhwc(g.n, g.h, g.w, g.c, a_t), e, a.untyped_data());
    memory y(nhwc(g.n, g.oh, g.ow, g.o, out_t), e, out);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, kernel},
                                         {DNNL_ARG_DST, y}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
    if (g.bias) args.emplace(DNNL_ARG_BIAS, memory(bias_desc(g, b_t), e, bias));
    conv->primitive->execute(stream, args);
  } else if (d == Direction::kInputGrad) {
    memory dy(nhwc(g.n, g.oh, g.ow, g.o, a_t), e, a.untyped_data());
    memory dx(nhwc(g.n, g.h, g.w, g.c, out_t), e, out);
    conv->primitive->execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, kernel},
                                      {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
  } else {
    memory x(nhwc(g.n, g.h, g.w, g.c, a_t), e, a.untyped_data());
    memory dy(nhwc(g.n, g.oh, g.ow, g.o, b_t), e, b.untyped_data());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy},
                                         {DNNL_ARG_DIFF_WEIGHTS, kernel},
                                         {DNNL_ARG_SCRATCHPAD, scratchpad}};
    if (g.bias) args.emplace(DNNL_ARG_DIFF_BIAS, memory(bias_desc(g, out_t), e, bias));
    conv->primitive->execute(stream, args);
    if (k.reorder) k.reorder->execute(stream, {{DNNL_ARG_FROM, kernel}, {DNNL_ARG_TO, user}});
  }
  stream.wait();
}

Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel,
                  ffi::Span<const int64_t> y, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                  int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Geometry{x[0], x[1], x[2], x[3], kernel[0], kernel[1], kernel[3], y[1], y[2],
                  {stride_h, stride_w}, {pad_top, pad_left}, {pad_bottom, pad_right}};
}

template <typename F>
ffi::Error guarded(F&& f) {
  try {
    f();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
}

ffi::Error forward(ffi::AnyBuffer x, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> y,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), kernel.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
    run(Direction::kForward, g, x, kernel, y->untyped_data(), y->element_type());
  });
}

ffi::Error bias_forward(ffi::AnyBuffer x, ffi::AnyBuffer kernel, ffi::AnyBuffer bias,
                        ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pb, int64_t pl, int64_t pr, bool relu) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), kernel.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
    g.bias = true;
    g.relu = relu;
    run(Direction::kForward, g, x, kernel, y->untyped_data(), y->element_type(),
        bias.untyped_data());
  });
}

ffi::Error input_grad(ffi::AnyBuffer dy, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> dx,
                      int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    auto g = geometry(dx->dimensions(), kernel.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl,
                      pr);
    run(Direction::kInputGrad, g, dy, kernel, dx->untyped_data(), dx->element_type());
  });
}

ffi::Error kernel_grad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dkernel,
                       int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), dkernel->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl,
                      pr);
    run(Direction::kKernelGrad, g, x, dy, dkernel->untyped_data(), dkernel->element_type());
  });
}

ffi::Error kernel_bias_grad(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                            ffi::Result<ffi::AnyBuffer> dkernel, ffi::Result<ffi::AnyBuffer> dbias,
                            int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                            int64_t pr) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), dkernel->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl,
                      pr);
    g.bias = true;
    run(Direction::kKernelGrad, g, x, dy, dkernel->untyped_data(), dkernel->element_type(),
        dbias->untyped_data());
  });
}

// The geometry attributes every handler carries, after its arrays.
template <typename Binding>
auto with_geometry(Binding binding) {
  return std::move(binding)
      .template Attr<int64_t>("stride_h")
      .template Attr<int64_t>("stride_w")
      .template Attr<int64_t>("pad_top")
      .template Attr<int64_t>("pad_bottom")
      .template Attr<int64_t>("pad_left")
      .template Attr<int64_t>("pad_right");
}

// Two arrays in, one out: the plain forward, the input gradient, the kernel gradient.
auto conv_binding() {
  return with_geometry(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
                           .Ret<ffi::AnyBuffer>());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(QrnetOnednnConvForward, forward, conv_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrnetOnednnConvInputGrad, input_grad, conv_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrnetOnednnConvKernelGrad, kernel_grad, conv_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrnetOnednnConvBiasForward, bias_forward,
                              with_geometry(ffi::Ffi::Bind()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>())
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QrnetOnednnConvKernelBiasGrad, kernel_bias_grad,
                              with_geometry(ffi::Ffi::Bind()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>()));

// 1 when this CPU has oneDNN convolutions (all three directions, with and without the bias) in
// bfloat16, else 0. Python asks once; without them bfloat16 convolutions run in float32 on oneDNN.
extern "C" int qrnet_onednn_has_bf16() {
  try {
    Geometry g{1, 4, 4, 8, 3, 3, 8, 4, 4, {1, 1}, {1, 1}, {1, 1}};
    const auto bf16 = memory::data_type::bf16;
    build(Direction::kForward, g, bf16, bf16, bf16);
    build(Direction::kInputGrad, g, bf16, bf16, bf16);
    build(Direction::kKernelGrad, g, bf16, bf16, memory::data_type::f32);
    g.bias = g.relu = true;  // and the fused forms
    build(Direction::kForward, g, bf16, bf16, bf16);
    build(Direction::kKernelGrad, g, bf16, bf16, memory::data_type::f32);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}
