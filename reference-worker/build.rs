//! Links the reference worker against the libtorch that torch-sys found (the torch wheel in the
//! project venv, through `LIBTORCH` in `.cargo/config.toml`):
//! - an rpath to its `lib/` directory, so the binaries run from a plain shell;
//! - the per-image generator shim (`csrc/generator.cpp`), compiled against the same wheel's
//!   headers (`<torch>/include` and `<torch>/include/torch/csrc/api/include`, which is what
//!   `torch.utils.cpp_extension.include_paths()` returns for a CPU build).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The PyTorch release tch 0.24 is built for; torch-sys checks it only when it runs Python, so
/// check the wheel's `version.py` here and fail with a message that says what to do.
const TORCH_VERSION: &str = "2.11.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/generator.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");

    // Exported by torch-sys (`links = "tch"`): the directory it linked libtorch from.
    let lib = env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            fail("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)")
        });
    // Canonical, so the binary keeps the libraries it was built against even if `.venv` is later
    // re-pointed at a venv for other requirements.
    let lib = fs::canonicalize(&lib).unwrap_or_else(|error| {
        fail(&format!(
            "libtorch directory {} is not there ({error}); run `cargo xtask setup`",
            lib.display()
        ))
    });
    let torch = lib
        .parent()
        .unwrap_or_else(|| fail(&format!("{} has no parent", lib.display())));
    check_version(torch);
    // Built against this directory: when it goes (an old cached venv deleted), link again,
    // against whatever `.venv` holds now, instead of keeping a binary without its libraries.
    println!("cargo:rerun-if-changed={}", lib.display());

    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());

    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .file("csrc/generator.cpp")
        .compile("reference_worker_generator");
}

fn check_version(torch: &Path) {
    let version_py = torch.join("version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    // A libtorch zip has no version.py (torch-sys checks its build-version file instead).
    let Ok(text) = fs::read_to_string(&version_py) else {
        return;
    };
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("__version__ = "))
        .map(|value| value.trim().trim_matches(['\'', '"']))
        .unwrap_or("unknown");
    let release = version.split('+').next().unwrap_or(version);
    if release != TORCH_VERSION {
        fail(&format!(
            "{} is torch {version}, but tch 0.24 needs torch {TORCH_VERSION}; \
             fix requirements.txt and run `cargo xtask setup`",
            torch.display()
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("reference-worker build: {message}");
    std::process::exit(1);
}
