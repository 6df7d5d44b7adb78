//! Compiles lit's two C++ shims against the libtorch that tch links: `torch_shim.cpp` (generator
//! state, autocast, determinism flags, tracing) and `c10d_shim.cpp` (torch.distributed's Gloo
//! backend, when Gloo's headers are installed: Debian's libgloo-dev, which `scripts/with-torch`
//! installs). Without them lit builds without those features and says so where they are asked for.
//! The c10d shim also gets NCCL (torch.distributed on CUDA devices) when the headers that the
//! torch wheel's NVIDIA packages install are there: `nvidia/nccl/include` (nccl.h) and
//! `nvidia/cu13/include` (the CUDA runtime; `nv/target` and `crt/` from `nvidia-cuda-cccl` and
//! `nvidia-cuda-crt`). NCCL's symbols link libtorch_cuda and the CUDA libraries into every lit
//! program, which is what makes CUDA devices visible to it (tch links libtorch_cuda only when
//! something uses it); `LIT_CUDA=0` at build time leaves NCCL out, for CPU-only programs that
//! should not load the CUDA libraries (about 270 MiB of resident memory).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/shim_error.h");
    println!("cargo:rustc-check-cfg=cfg(lit_shim)");
    println!("cargo:rerun-if-env-changed=LIT_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIT_CUDA");
    println!("cargo:rustc-check-cfg=cfg(lit_c10d)");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=lit: torch-sys did not report its libtorch directory; distributed training is disabled"
        );
        return;
    };
    let include = Path::new(&lib).parent().map(|torch| torch.join("include")).unwrap_or_default();
    let shim = cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .file("csrc/torch_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .try_compile("lit_shim");
    match shim {
        Ok(()) => println!("cargo:rustc-cfg=lit_shim"),
        Err(e) => println!(
            "cargo:warning=lit: the libtorch shim did not compile ({e}); checkpoints will not store generator state, and CPU autocast, determinism flags and ONNX export are unavailable"
        ),
    }
    let gloo = std::env::var("LIT_GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&gloo).join("gloo/config.h").exists() {
        println!(
            "cargo:warning=lit: Gloo headers not found in {gloo} (apt-get install libgloo-dev); distributed training is disabled"
        );
        return;
    }
    let c10d = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .std("c++17")
            .file("csrc/c10d_shim.cpp")
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .include(&gloo)
            .define("USE_C10D_GLOO", None)
            .define("USE_DISTRIBUTED", None)
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .warnings(false);
        build
    };
    // The torch wheel's site-packages: `…/site-packages/torch/lib` is libtorch's directory.
    let nvidia = Path::new(&lib).parent().and_then(Path::parent).map(|site| site.join("nvidia")).unwrap_or_default();
    let (nccl, cuda) = (nvidia.join("nccl/include"), nvidia.join("cu13/include"));
    let cpu_only = std::env::var("LIT_CUDA").is_ok_and(|v| v == "0");
    let with_nccl = !cpu_only
        && nccl.join("nccl.h").exists()
        && ["cuda_runtime.h", "nv/target", "crt/host_config.h"].iter().all(|h| cuda.join(h).exists());
    if with_nccl {
        let built = c10d()
            .include(&cuda)
            .include(&nccl)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("LIT_NCCL", None)
            .try_compile("lit_c10d");
        match built {
            Ok(()) => {
                println!("cargo:rustc-cfg=lit_c10d");
                return;
            }
            Err(e) => println!("cargo:warning=lit: the c10d shim did not compile with NCCL ({e}); building it without"),
        }
    } else if !cpu_only {
        println!(
            "cargo:warning=lit: NCCL or CUDA headers not found in {} (scripts/with-torch installs them); ddp on CUDA devices is disabled",
            nvidia.display()
        );
    }
    match c10d().try_compile("lit_c10d") {
        Ok(()) => println!("cargo:rustc-cfg=lit_c10d"),
        Err(e) => println!("cargo:warning=lit: the c10d shim did not compile ({e}); distributed training is disabled"),
    }
}
