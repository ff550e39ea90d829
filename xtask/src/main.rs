//! `cargo xtask <command>`: the home of every developer and CI command of this project.
//!
//! Each command lives in its own module; `main` only dispatches.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod conformance;
mod fixtures;
mod goldens;
mod parity;
mod schema_check;
mod setup;
mod test;

const USAGE: &str = "\
cargo xtask <command>

commands:
  setup            the Python venv (requirements.txt, cached by hash) and the release binaries
  fixtures         regenerate fixtures/{models,schedulers,loras}/ with fixtures/oracle/ (--check: fail if stale)
  parity           render fixtures/parity/cases with the reference worker and diffusers, compare (≥ 40 dB)
  regenerate-goldens  render the golden matrix into golden/ (--check: compare instead; --filter, --shard K/N)
  conformance      the main job: transform every fixture and print the coverage table
  test             everything CI gates on (tests, clippy, fmt, snapshot and fixture checks)
  bench            criterion benches side by side with the Python reference, as ratios
  schema-check     fail on a breaking schema change without an x-version bump (--against REF)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&args) {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let result: Result<()> = match command.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "setup" => setup::run(rest),
        "conformance" => conformance::run(rest),
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "fixtures" => fixtures::run(rest),
        "parity" => parity::run(rest),
        "regenerate-goldens" => goldens::run(rest),
        "schema-check" => schema_check::run(rest),
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    };
    result.with_context(|| format!("cargo xtask {command} {}", rest.join(" ")))
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command from the project root, echoing it, and fails with its exit status.
pub fn run_checked(command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .current_dir(project_root())
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
