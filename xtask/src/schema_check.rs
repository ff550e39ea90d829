//! `cargo xtask schema-check [--against REF]`: the protocol change gate over the repository.
//!
//! Compares every `transformer/schemas/*.schema.json` of the working tree with the same file at a
//! git revision, in the direction the schema declares (`x-direction`), and fails on a breaking
//! (or unproven, `unknown`) change unless the schema's `x-version` increased.
//!
//! Which revision, without `--against`:
//! - on a branch: the merge base with `main` (or `origin/main`), so everything the branch changed
//!   is checked, committed or not;
//! - on `main` itself (the merge base is `HEAD`): `HEAD` when the schemas have uncommitted edits,
//!   otherwise `HEAD~1`, the change the last commit made. CI runs on a clean clone of `main`, so
//!   there it checks the last commit. A repository with a single commit has nothing to compare.

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use transformer::schema_diff::{self, Direction, Severity};

use crate::project_root;

const SCHEMA_DIR: &str = "transformer/schemas";

pub fn run(args: &[String]) -> Result<()> {
    let against = match args {
        [] => default_revision()?,
        [flag, revision] if flag == "--against" => Some(revision.clone()),
        _ => bail!("usage: cargo xtask schema-check [--against REF]"),
    };
    let Some(revision) = against else {
        println!("schema-check: no earlier revision to compare with; nothing to check");
        return Ok(());
    };
    let resolved = git(&["rev-parse", "--short", &format!("{revision}^{{commit}}")])
        .with_context(|| format!("`{revision}` is not a revision of this repository"))?;
    println!(
        "schema-check: working tree against {revision} ({})",
        resolved.trim()
    );

    let mut failures = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(project_root().join(SCHEMA_DIR))
        .with_context(|| format!("reading {SCHEMA_DIR}"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".schema.json"))
        .collect();
    // A revision from before the schemas existed lists none.
    let listed = git(&[
        "ls-tree",
        "--name-only",
        &format!("{revision}:{SCHEMA_DIR}"),
    ]);
    for name in listed.unwrap_or_default().lines() {
        if name.ends_with(".schema.json") && !names.iter().any(|n| n == name) {
            failures.push(format!("{name}: removed (it exists at {revision})"));
        }
    }
    names.sort();
    for name in names {
        let path = format!("{SCHEMA_DIR}/{name}");
        let new = schema_diff::load(&project_root().join(&path))
            .map_err(|e| anyhow::anyhow!("{path}: {}", e.to_json_line()))?;
        let Ok(old_text) = git(&["show", &format!("{revision}:{path}")]) else {
            println!("  {name}: new schema (not at {revision})");
            continue;
        };
        let old: Value = serde_json::from_str(&old_text)
            .with_context(|| format!("{path} at {revision} is not JSON"))?;
        if schema_diff::check_schema(&old, &format!("{path} at {revision}")).is_err() {
            println!("  {name}: not a usable schema at {revision}; skipped");
            continue;
        }
        let direction = Direction::declared(&new)
            .or_else(|| Direction::declared(&old))
            .with_context(|| format!("{path} declares no x-direction (request or reply)"))?;
        let report = schema_diff::diff(&old, &new, direction)
            .map_err(|e| anyhow::anyhow!("{path}: {}", e.to_json_line()))?;
        let counts = format!(
            "{} breaking, {} unknown, {} compatible",
            report.count(Severity::Breaking),
            report.count(Severity::Unknown),
            report.count(Severity::Compatible)
        );
        let versions = format!(
            "x-version {} -> {}",
            report.old_version.as_deref().unwrap_or("(none)"),
            report.new_version.as_deref().unwrap_or("(none)")
        );
        if report.passes() {
            println!("  {name} ({}): ok, {counts}", direction.as_str());
        } else if version_increased(report.old_version.as_deref(), report.new_version.as_deref()) {
            println!(
                "  {name} ({}): allowed, {counts}; {versions}",
                direction.as_str()
            );
        } else {
            println!(
                "  {name} ({}): FAIL, {counts}; {versions} not bumped",
                direction.as_str()
            );
            print!("{}", indent(&report.to_text()));
            failures.push(format!(
                "{name}: breaking change without an x-version bump ({versions})"
            ));
        }
    }
    if !failures.is_empty() {
        bail!("schema-check failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// The revision to compare with when none is given (see the module docs).
fn default_revision() -> Result<Option<String>> {
    let head = git(&["rev-parse", "HEAD"])?.trim().to_string();
    let base = ["main", "origin/main"]
        .iter()
        .find_map(|branch| git(&["merge-base", "HEAD", branch]).ok())
        .map(|base| base.trim().to_string());
    match base {
        Some(base) if base != head => Ok(Some(base)),
        _ => {
            let dirty = !git(&["status", "--porcelain", "--", SCHEMA_DIR])?
                .trim()
                .is_empty();
            if dirty {
                Ok(Some("HEAD".into()))
            } else if git(&["rev-parse", "--verify", "--quiet", "HEAD~1"]).is_ok() {
                Ok(Some("HEAD~1".into()))
            } else {
                Ok(None)
            }
        }
    }
}

/// True when `new` is a higher MAJOR.MINOR.PATCH than `old` (a schema without one never is).
fn version_increased(old: Option<&str>, new: Option<&str>) -> bool {
    match (old.and_then(parse_version), new.and_then(parse_version)) {
        (Some(old), Some(new)) => new > old,
        (None, Some(_)) => true,
        _ => false,
    }
}

fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("    {line}\n")
            }
        })
        .collect()
}

fn git(args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(project_root())
        .output()
        .with_context(|| format!("could not run git {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_increased(Some("1.9.0"), Some("1.10.0")));
        assert!(version_increased(Some("1.0.0"), Some("2.0.0")));
        assert!(!version_increased(Some("2.0.0"), Some("2.0.0")));
        assert!(!version_increased(Some("2.0.0"), Some("1.9.9")));
        assert!(!version_increased(Some("1.0.0"), Some("1.0")));
        assert!(!version_increased(Some("1.0.0"), None));
    }
}
