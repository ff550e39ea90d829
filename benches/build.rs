//! An rpath to libtorch for the bench binaries (the render bench runs the reference
//! worker), so `cargo bench` runs from a plain shell as `reference-worker` does.
//!
//! reference-worker's build.rs reads `DEP_TCH_LIBTORCH_LIB`, which cargo only hands to packages
//! with torch-sys among their normal dependencies. Here torch-sys can only be a dev-dependency:
//! xtask depends on this crate's lib, and `cargo xtask setup` builds before the torch wheel is
//! installed. So the directory is found as torch-sys finds it: `LIBTORCH_LIB`, else `LIBTORCH`
//! (which `.cargo/config.toml` sets to `.venv/libtorch`), plus `lib/`. Before setup has made it,
//! the lib needs no libtorch and nothing is emitted.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(base) = env::var_os("LIBTORCH_LIB").or_else(|| env::var_os("LIBTORCH")) else {
        return;
    };
    let lib = PathBuf::from(base).join("lib");
    // Until `cargo xtask setup` has installed the wheel this path does not exist, and cargo
    // reruns the script on the next build.
    println!("cargo:rerun-if-changed={}", lib.display());
    // Canonical, as reference-worker's build.rs does: the binaries keep the libraries they were
    // built against even if `.venv` is re-pointed later.
    let Ok(lib) = fs::canonicalize(&lib) else {
        return;
    };
    // And when that directory goes (an old cached venv deleted), link again.
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-arg-benches=-Wl,-rpath,{}", lib.display());
}
