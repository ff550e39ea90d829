//! `cargo xtask setup`: the Python venv (torch, diffusers and the oracle's packages, pinned in
//! `requirements.txt`) and the release binaries.
//!
//! The venv lives in a cache directory keyed by the hash of `requirements.txt` and the Python
//! version (`$XDG_CACHE_HOME/sdxl-harness/venv-<16 hex>`, else `~/.cache/...`), and
//! `<project root>/.venv` is a symlink to it, so a second clone of the same revision links the
//! existing venv in a fraction of a second instead of installing ~5 GB again. A marker file is
//! written only after `pip install` succeeded; a venv without it is a leftover of an interrupted
//! install and is rebuilt.
//!
//! libtorch for `cargo build`: `.cargo/config.toml` sets `LIBTORCH = .venv/libtorch` (relative to
//! the project root), and setup makes `<venv>/libtorch` a symlink to the wheel's
//! `lib/python3.X/site-packages/torch`, so no path in the repository names a Python version and no
//! variable has to be exported.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::{project_root, run_checked};

/// Written into the venv after a successful install; its presence is what "installed" means.
const MARKER: &str = "sdxl-harness-installed";
/// Name of the link inside the venv that `LIBTORCH` in `.cargo/config.toml` points through.
const LIBTORCH_LINK: &str = "libtorch";
/// An install lock older than this is taken to be left behind by a killed process.
const STALE_LOCK: Duration = Duration::from_secs(30 * 60);

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`setup` takes no arguments, got `{arg}`");
    }
    let started = Instant::now();
    let venv = ensure()?;
    eprintln!(
        "setup: venv ready at {} ({:.2} s)",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    run_checked(
        Command::new(cargo())
            .args(["build", "--release", "--workspace", "--bins"])
            .stdout(Stdio::from(std::io::stderr())),
    )?;
    eprintln!("setup: done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The Python interpreter of the project venv (`<project root>/.venv/bin/python`).
pub fn venv_python() -> PathBuf {
    project_root().join(".venv").join("bin").join("python")
}

/// Makes sure `<project root>/.venv` links to an installed venv for the current
/// `requirements.txt`, installing it if needed, and returns `<project root>/.venv`.
pub fn ensure() -> Result<PathBuf> {
    let root = project_root();
    let requirements = root.join("requirements.txt");
    let key = venv_key(&requirements)?;
    let venv = cache_dir()?.join(format!("venv-{key}"));
    if !venv.join(MARKER).is_file() {
        install_locked(&venv, &requirements)?;
    }
    let link = root.join(".venv");
    link_venv(&link, &venv)?;
    Ok(link)
}

/// `$XDG_CACHE_HOME/sdxl-harness`, or `$HOME/.cache/sdxl-harness`.
fn cache_dir() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        // The XDG spec says relative values are to be ignored.
        if xdg.is_absolute() {
            return Ok(xdg.join("sdxl-harness"));
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute())
        .context("neither XDG_CACHE_HOME nor HOME is set to an absolute path; cannot place the venv cache")?;
    Ok(home.join(".cache").join("sdxl-harness"))
}

/// First 16 hex digits of sha256(requirements.txt bytes, NUL, Python version): a new pin or a new
/// interpreter gives a new venv. Computed by `python3` itself, which setup needs anyway.
fn venv_key(requirements: &Path) -> Result<String> {
    const HASH: &str = "import hashlib, sys; \
        data = open(sys.argv[1], 'rb').read() + b'\\0' + sys.version.encode(); \
        print(hashlib.sha256(data).hexdigest()[:16])";
    if !requirements.is_file() {
        bail!("{} does not exist", requirements.display());
    }
    let output = Command::new("python3")
        .args(["-c", HASH])
        .arg(requirements)
        .output()
        .context("could not run `python3` (setup needs Python 3.11 as `python3` on PATH)")?;
    if !output.status.success() {
        bail!(
            "python3 failed to hash {}: {}",
            requirements.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if key.len() != 16 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("python3 printed an unexpected hash {key:?}");
    }
    Ok(key)
}

/// Installs under an exclusive lock directory so that two clones setting up at once do not
/// write into the same venv.
fn install_locked(venv: &Path, requirements: &Path) -> Result<()> {
    let parent = venv.parent().context("venv path has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    let lock = venv.with_extension("lock");
    let waited = Instant::now();
    loop {
        match fs::create_dir(&lock) {
            Ok(()) => break,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                if venv.join(MARKER).is_file() {
                    return Ok(()); // another process finished the install meanwhile
                }
                let age = fs::metadata(&lock)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                    .unwrap_or_default();
                if age > STALE_LOCK {
                    eprintln!("setup: removing stale lock {}", lock.display());
                    let _ = fs::remove_dir(&lock);
                    continue;
                }
                if waited.elapsed().as_secs() % 30 == 0 {
                    eprintln!(
                        "setup: waiting for another install to finish ({})",
                        lock.display()
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("could not create {}", lock.display()))
            }
        }
    }
    let result = if venv.join(MARKER).is_file() {
        Ok(())
    } else {
        install(venv, requirements)
    };
    let _ = fs::remove_dir(&lock);
    result
}

fn install(venv: &Path, requirements: &Path) -> Result<()> {
    if venv.exists() {
        eprintln!(
            "setup: removing incomplete venv {} (no marker)",
            venv.display()
        );
        fs::remove_dir_all(venv)
            .with_context(|| format!("could not remove incomplete venv {}", venv.display()))?;
    }
    let started = Instant::now();
    eprintln!(
        "setup: installing {} into {} (torch pulls ~5 GB of CUDA runtime wheels)",
        requirements.display(),
        venv.display()
    );
    run_checked(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    let python = venv.join("bin").join("python");
    run_checked(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(requirements)
            .stdout(Stdio::from(std::io::stderr())),
    )?;
    link_libtorch(venv)?;
    fs::write(
        venv.join(MARKER),
        fs::read(requirements)
            .with_context(|| format!("could not read {}", requirements.display()))?,
    )
    .with_context(|| format!("could not write the marker in {}", venv.display()))?;
    eprintln!(
        "setup: installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `<venv>/libtorch` → `lib/python3.X/site-packages/torch` (relative, so it survives a move).
fn link_libtorch(venv: &Path) -> Result<()> {
    let lib = venv.join("lib");
    let mut found = Vec::new();
    for entry in fs::read_dir(&lib).with_context(|| format!("could not list {}", lib.display()))? {
        let entry = entry?;
        let torch = entry.path().join("site-packages").join("torch");
        if entry.file_name().to_string_lossy().starts_with("python") && torch.is_dir() {
            found.push(
                Path::new("lib")
                    .join(entry.file_name())
                    .join("site-packages")
                    .join("torch"),
            );
        }
    }
    let [target] = found.as_slice() else {
        bail!(
            "expected exactly one lib/python*/site-packages/torch in {}, found {found:?}",
            venv.display()
        );
    };
    let link = venv.join(LIBTORCH_LINK);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link)
        .with_context(|| format!("could not link {} to {}", link.display(), target.display()))
}

/// Points `link` (the project's `.venv`) at `venv`, leaving it alone when it already does.
fn link_venv(link: &Path, venv: &Path) -> Result<()> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if fs::read_link(link).ok().as_deref() == Some(venv) {
                return Ok(());
            }
            fs::remove_file(link)
                .with_context(|| format!("could not replace the old link {}", link.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a symlink; setup manages it as a link into the venv cache. \
             Move it away and run `cargo xtask setup` again",
            link.display()
        ),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("could not inspect {}", link.display()))
        }
    }
    std::os::unix::fs::symlink(venv, link)
        .with_context(|| format!("could not link {} to {}", link.display(), venv.display()))
}

/// The cargo that runs xtask (so `cargo +toolchain xtask setup` builds with that toolchain).
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}
