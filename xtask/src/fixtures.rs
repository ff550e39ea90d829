//! `cargo xtask fixtures [--check]`: regenerates every generated fixture tree with its committed
//! script (run by the venv's Python):
//!
//! - `fixtures/models/` by `fixtures/oracle/make_tiny_sdxl.py` (the tiny SDXL model);
//! - `fixtures/schedulers/` by `fixtures/oracle/dump_schedulers.py` (diffusers' scheduler tables
//!   and step outputs, the schedulers' unit-parity fixture);
//! - `fixtures/textual_inversions/` by `fixtures/oracle/make_textual_inversions.py` (tiny SDXL
//!   embeddings, `clip_l` + `clip_g`; the script also proves that diffusers loads them).
//! - `fixtures/controlnets/` by `fixtures/oracle/make_controlnets.py` (two tiny SDXL ControlNets,
//!   reloaded by diffusers as a check, and the control images in PNG, JPEG and WebP).
//! - `fixtures/loras/` by `fixtures/oracle/make_loras.py` (tiny LoRAs for the tiny model in the
//!   kohya-ss and PEFT layouts, each with the ranks, alphas and scalings diffusers loaded; after
//!   the models, whose UNet and text encoders they fit).
//!
//! `--check` regenerates into a temporary directory and fails listing every file that differs, is
//! missing or is extra.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{project_root, run_checked, setup};

/// One committed tree of generated files.
struct Generated {
    /// The committed folder, relative to the project root.
    dir: &'static str,
    script: &'static str,
    /// Arguments before the output folder.
    args: &'static [&'static str],
}

const GENERATED: [Generated; 5] = [
    Generated {
        dir: "fixtures/models",
        script: "fixtures/oracle/make_tiny_sdxl.py",
        args: &["--out-dir"],
    },
    Generated {
        dir: "fixtures/schedulers",
        script: "fixtures/oracle/dump_schedulers.py",
        args: &[],
    },
    Generated {
        dir: "fixtures/textual_inversions",
        script: "fixtures/oracle/make_textual_inversions.py",
        args: &[],
    },
    Generated {
        dir: "fixtures/controlnets",
        script: "fixtures/oracle/make_controlnets.py",
        args: &[],
    },
    Generated {
        dir: "fixtures/loras",
        script: "fixtures/oracle/make_loras.py",
        args: &[],
    },
];

pub fn run(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        [other, ..] => {
            bail!("unexpected argument `{other}` (usage: cargo xtask fixtures [--check])")
        }
    };
    setup::ensure()?;
    let root = project_root();
    let scratch =
        std::env::temp_dir().join(format!("sdxl-harness-fixtures-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let mut stale = 0;
    for generated in &GENERATED {
        let fresh = scratch.join(generated.dir);
        fs::create_dir_all(&fresh)
            .with_context(|| format!("could not create {}", fresh.display()))?;
        let result = generate(generated, &fresh).and_then(|()| {
            let committed = root.join(generated.dir);
            let diff = compare(&committed, &fresh)?;
            if check {
                Ok(report_check(generated.dir, &diff))
            } else {
                replace(generated.dir, &committed, &fresh, &diff).map(|()| 0)
            }
        });
        match result {
            Ok(count) => stale += count,
            Err(error) => {
                let _ = fs::remove_dir_all(&scratch);
                return Err(error);
            }
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    if stale > 0 {
        bail!(
            "{stale} fixture file(s) are stale; run `cargo xtask fixtures` and commit the result"
        );
    }
    Ok(())
}

fn generate(generated: &Generated, out_dir: &Path) -> Result<()> {
    run_checked(
        Command::new(setup::venv_python())
            .arg(generated.script)
            .args(generated.args)
            .arg(out_dir)
            .stdout(Stdio::from(std::io::stderr())),
    )
}

/// Relative paths of the files that differ between the committed tree and a fresh one.
#[derive(Default)]
struct Diff {
    changed: Vec<PathBuf>,
    missing: Vec<PathBuf>,
    extra: Vec<PathBuf>,
    unchanged: usize,
}

fn compare(committed: &Path, fresh: &Path) -> Result<Diff> {
    let old = files_under(committed)?;
    let new = files_under(fresh)?;
    let mut diff = Diff::default();
    for path in new.union(&old) {
        match (old.contains(path), new.contains(path)) {
            (true, true) => {
                let a = fs::read(committed.join(path)).with_context(|| {
                    format!("could not read {}", committed.join(path).display())
                })?;
                let b = fs::read(fresh.join(path))
                    .with_context(|| format!("could not read {}", fresh.join(path).display()))?;
                if a == b {
                    diff.unchanged += 1;
                } else {
                    diff.changed.push(path.clone());
                }
            }
            (false, true) => diff.missing.push(path.clone()),
            (true, false) => diff.extra.push(path.clone()),
            (false, false) => unreachable!("path came from one of the two sets"),
        }
    }
    Ok(diff)
}

/// Prints what is stale under `dir`; returns how many files are.
fn report_check(dir: &str, diff: &Diff) -> usize {
    for path in &diff.changed {
        eprintln!("fixtures: differs: {dir}/{}", path.display());
    }
    for path in &diff.missing {
        eprintln!("fixtures: missing: {dir}/{}", path.display());
    }
    for path in &diff.extra {
        eprintln!("fixtures: extra (not generated): {dir}/{}", path.display());
    }
    eprintln!("fixtures: {dir}: {} files up to date", diff.unchanged);
    diff.changed.len() + diff.missing.len() + diff.extra.len()
}

fn replace(dir: &str, models: &Path, fresh: &Path, diff: &Diff) -> Result<()> {
    for path in &diff.extra {
        let target = models.join(path);
        fs::remove_file(&target)
            .with_context(|| format!("could not remove {}", target.display()))?;
    }
    for path in diff.changed.iter().chain(&diff.missing) {
        let target = models.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        fs::copy(fresh.join(path), &target)
            .with_context(|| format!("could not write {}", target.display()))?;
    }
    if models.exists() {
        remove_empty_dirs(models)?;
    }
    eprintln!(
        "fixtures: {dir}: {} added, {} changed, {} removed, {} unchanged",
        diff.missing.len(),
        diff.changed.len(),
        diff.extra.len(),
        diff.unchanged
    );
    Ok(())
}

/// Every regular file below `dir`, relative to it (an absent `dir` has none).
fn files_under(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    if !dir.exists() {
        return Ok(files);
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)
            .with_context(|| format!("could not list {}", current.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .context("walked outside the fixture tree")?;
                files.insert(relative.to_path_buf());
            }
        }
    }
    Ok(files)
}

fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for entry in fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && remove_empty_dirs(&entry.path())? {
            fs::remove_dir(entry.path())?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}
