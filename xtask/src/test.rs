//! `cargo xtask test`: everything CI gates on, in one command that also does the set-up a fresh
//! clone needs (the venv with the libtorch wheel, via `setup::ensure`).
//!
//! Order: cheap checks first (format), then lints, the whole test suite (insta in CI mode, so a
//! changed or missing snapshot fails instead of being written), the generated-fixture check, the
//! protocol schema gate, and the conformance run (the main job: goldens checked, parity of the
//! reference worker with diffusers, the transformer's fixtures; it must stay green too).

use std::process::Command;

use anyhow::{bail, Result};

use crate::{conformance, fixtures, run_checked, schema_check, setup};

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`test` takes no arguments, got `{arg}`");
    }
    setup::ensure()?;
    step("format", || {
        run_checked(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        run_checked(Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("tests", || {
        run_checked(
            Command::new("cargo")
                .args(["test", "--workspace"])
                // insta: never write snapshots here; a difference is a failure.
                .env("INSTA_UPDATE", "no")
                .env("CI", "true"),
        )
    })?;
    step("fixtures are what their scripts generate", || {
        fixtures::run(&["--check".to_string()])
    })?;
    step("protocol schema gate", || schema_check::run(&[]))?;
    // The main job: transformer fixtures, end to end, goldens (--check), parity with diffusers.
    step("conformance (goldens and parity included)", || {
        conformance::run(&[])
    })?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n=== xtask test: {name}");
    f().map_err(|e| e.context(format!("step `{name}` failed")))
}
