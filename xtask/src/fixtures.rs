//! `cargo xtask fixtures [--check]`: regenerates `fixtures/models/` with
//! `fixtures/oracle/make_tiny_sdxl.py` (run by the venv's Python); `--check` regenerates into a
//! temporary directory and fails listing every file that differs, is missing or is extra.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{project_root, run_checked, setup};

const SCRIPT: &str = "fixtures/oracle/make_tiny_sdxl.py";
const MODELS: &str = "fixtures/models";

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
    fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    let result = generate(&scratch).and_then(|()| {
        let models = root.join(MODELS);
        let diff = compare(&models, &scratch)?;
        if check {
            report_check(&diff)
        } else {
            replace(&models, &scratch, &diff)
        }
    });
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn generate(out_dir: &Path) -> Result<()> {
    run_checked(
        Command::new(setup::venv_python())
            .arg(SCRIPT)
            .arg("--out-dir")
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

fn report_check(diff: &Diff) -> Result<()> {
    let stale = diff.changed.len() + diff.missing.len() + diff.extra.len();
    for path in &diff.changed {
        eprintln!("fixtures: differs: {MODELS}/{}", path.display());
    }
    for path in &diff.missing {
        eprintln!("fixtures: missing: {MODELS}/{}", path.display());
    }
    for path in &diff.extra {
        eprintln!(
            "fixtures: extra (not generated): {MODELS}/{}",
            path.display()
        );
    }
    if stale > 0 {
        bail!(
            "{stale} fixture file(s) are stale; run `cargo xtask fixtures` and commit the result"
        );
    }
    eprintln!("fixtures: {} files up to date", diff.unchanged);
    Ok(())
}

fn replace(models: &Path, fresh: &Path, diff: &Diff) -> Result<()> {
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
        "fixtures: {} added, {} changed, {} removed, {} unchanged",
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
