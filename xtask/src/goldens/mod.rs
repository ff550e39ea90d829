//! `cargo xtask regenerate-goldens [--filter TEXT] [--shard K/N] [--check] [--jobs N]` (issue 7).
//!
//! Renders every case of the golden matrix ([`cases::matrix`]) with the reference worker and
//! writes `golden/<case>.png` (`golden/<case>.<i>.png` for a batch) and `golden/manifest.json`
//! (per case: the Python v2 request, the model fixture, each PNG's sha256, the tolerance, the
//! command that regenerates it), then prints the cases added, changed, removed and unchanged.
//!
//! `--check` renders into a temporary folder instead and fails when any image differs from its
//! golden beyond the tolerance ([`compare`]), when a case has no golden, when the manifest holds a
//! case the matrix does not (or a different request for it), when a golden PNG does not match its
//! manifest sha256, or when `golden/` holds a file the manifest does not name. It writes
//! expected / actual / diff PNGs and `report.md` under `target/golden-diffs/` and prints their
//! paths.
//!
//! `--filter TEXT` keeps the cases whose name contains TEXT; `--shard K/N` the K-th of N equal
//! slices (1-based) of the sorted cases, for splitting the matrix over CI machines. Removed cases
//! and stray files are only judged on a full run.
//!
//! Rendering: `--jobs` processes of `reference-worker serve` (default: the machine's cores), each
//! with one intra-op thread (`OMP_NUM_THREADS=1`), the cases dealt round-robin; a progress bar on
//! a terminal.
//!
//! Determinism: rendering a case twice with the same thread count gives the same bytes. The
//! thread count does change a render a little (libtorch splits its reductions per thread): the
//! Euler golden at 2 threads differs from 1 thread in 10 of 196,608 samples, each by one level.
//! Goldens are therefore always rendered with one thread, and the tolerance ([`compare`]) is set
//! from that measurement, the nearest thing to another CPU's rounding this machine can show:
//! two levels per sample, where a real change of even one 4×4 block moves samples by far more.

pub mod cases;
pub mod compare;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{project_root, run_checked, setup};
use cases::{Case, MODEL};
use compare::{Failure, Tolerance, TOLERANCE};

pub const GOLDEN_DIR: &str = "golden";
pub const MANIFEST: &str = "golden/manifest.json";
const DIFF_DIR: &str = "target/golden-diffs";

struct Options {
    filter: Option<String>,
    shard: Option<(usize, usize)>,
    check: bool,
    jobs: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            filter: None,
            shard: None,
            check: false,
            jobs: default_jobs(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--check" => options.check = true,
                "--filter" => {
                    options.filter = Some(it.next().context("--filter needs a value")?.clone())
                }
                "--shard" => {
                    let value = it.next().context("--shard needs K/N")?;
                    options.shard = Some(parse_shard(value)?);
                }
                "--jobs" => {
                    let value = it.next().context("--jobs needs a number")?;
                    options.jobs = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("--jobs {value}: not a positive number"))?;
                }
                other => bail!(
                    "unknown argument `{other}` (usage: cargo xtask regenerate-goldens \
                     [--filter TEXT] [--shard K/N] [--check] [--jobs N])"
                ),
            }
        }
        Ok(options)
    }

    fn full_run(&self) -> bool {
        self.filter.is_none() && self.shard.is_none()
    }

    fn select(&self, cases: Vec<Case>) -> Vec<Case> {
        cases
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.shard.is_none_or(|(k, n)| i % n == k - 1))
            .map(|(_, case)| case)
            .filter(|case| self.filter.as_deref().is_none_or(|f| case.name.contains(f)))
            .collect()
    }
}

fn parse_shard(value: &str) -> Result<(usize, usize)> {
    let parsed = value
        .split_once('/')
        .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((k, n)) if n >= 1 && (1..=n).contains(&k) => Ok((k, n)),
        _ => bail!("--shard {value}: expected K/N with 1 ≤ K ≤ N"),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let root = project_root();
    let selected = options.select(cases::matrix());
    if selected.is_empty() {
        bail!("no golden case matches");
    }
    setup::ensure()?;
    run_checked(Command::new("cargo").args(["build", "--release", "-p", "reference-worker"]))?;

    let scratch = std::env::temp_dir().join(format!("sdxl-goldens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let started = Instant::now();
    let rendered = render_all(&root, &selected, &scratch, options.jobs);
    let elapsed = started.elapsed().as_secs_f64();
    let result = rendered.and_then(|()| {
        eprintln!(
            "goldens: rendered {} case(s) in {elapsed:.1} s with {} process(es)",
            selected.len(),
            options.jobs.min(selected.len())
        );
        if options.check {
            check(&root, &selected, &scratch, options.full_run(), elapsed)
        } else {
            regenerate(&root, &selected, &scratch, options.full_run())
        }
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Renders `cases` into `out/<case>/image_<i>.png` with `jobs` `reference-worker serve` processes.
fn render_all(root: &Path, cases: &[Case], out: &Path, jobs: usize) -> Result<()> {
    let worker = root.join("target/release/reference-worker");
    let jobs = jobs.min(cases.len()).max(1);
    let progress = indicatif::ProgressBar::new(cases.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        )
        .context("progress bar template")?,
    );
    let (sender, receiver) = mpsc::channel::<Result<Value>>();
    let mut children = Vec::new();
    for job in 0..jobs {
        let lines: Vec<String> = cases
            .iter()
            .skip(job)
            .step_by(jobs)
            .map(|c| c.request.to_string())
            .collect();
        let mut child = Command::new(&worker)
            .args(["serve", "--model"])
            .arg(root.join(MODEL))
            .arg("--out-dir")
            .arg(out)
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", worker.display()))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        std::thread::spawn(move || {
            for line in lines {
                if writeln!(stdin, "{line}").is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().context("worker stdout")?;
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let reply = line
                    .context("reading a worker reply")
                    .and_then(|l| serde_json::from_str(&l).context("a worker reply is not JSON"));
                if sender.send(reply).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(sender);
    let mut errors = Vec::new();
    for reply in receiver {
        match reply {
            Ok(reply) if reply["success"] == true => {
                progress.set_message(reply["request_id"].as_str().unwrap_or("").to_owned());
            }
            Ok(reply) => errors.push(format!(
                "{}: {}",
                reply["request_id"].as_str().unwrap_or("?"),
                reply["error"].as_str().unwrap_or("failed")
            )),
            Err(error) => errors.push(format!("{error:#}")),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            errors.push(format!(
                "reference-worker serve exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{} render(s) failed:\n{}", errors.len(), errors.join("\n"));
    }
    Ok(())
}

/// The rendered PNG of image `i` of `case` in a render folder.
fn rendered_png(scratch: &Path, case: &Case, i: usize) -> PathBuf {
    scratch.join(&case.name).join(format!("image_{i}.png"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest: cases by name (an absent file has none).
fn read_manifest(root: &Path) -> Result<BTreeMap<String, Value>> {
    let path = root.join(MANIFEST);
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let cases = manifest["cases"]
        .as_array()
        .with_context(|| format!("{}: no `cases` array", path.display()))?;
    let mut by_name = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"]
            .as_str()
            .with_context(|| format!("{}: /cases/{i}/name is not a string", path.display()))?;
        by_name.insert(name.to_owned(), case.clone());
    }
    Ok(by_name)
}

fn manifest_entry(case: &Case, images: Vec<Value>) -> Value {
    json!({
        "name": case.name,
        "features": case.features,
        "model": MODEL,
        "request": case.request,
        "images": images,
        "tolerance": TOLERANCE.to_json(),
        "command": format!("cargo xtask regenerate-goldens --filter {}", case.name),
    })
}

fn write_manifest(root: &Path, cases: &BTreeMap<String, Value>) -> Result<()> {
    let manifest = json!({
        "generated_by": "cargo xtask regenerate-goldens",
        "renderer": "reference-worker serve (tch), one intra-op thread per process",
        "model": MODEL,
        "cases": cases.values().collect::<Vec<_>>(),
    });
    let path = root.join(MANIFEST);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

fn regenerate(root: &Path, cases: &[Case], scratch: &Path, full_run: bool) -> Result<()> {
    let golden = root.join(GOLDEN_DIR);
    std::fs::create_dir_all(&golden)?;
    let mut manifest = read_manifest(root)?;
    let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), 0);
    for case in cases {
        let mut images = Vec::new();
        let mut case_changed = false;
        for (i, png) in case.png_names().into_iter().enumerate() {
            let bytes = std::fs::read(rendered_png(scratch, case, i))
                .with_context(|| format!("{}: image {i} was not rendered", case.name))?;
            let target = golden.join(&png);
            if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
                case_changed = true;
                std::fs::write(&target, &bytes)
                    .with_context(|| format!("cannot write {}", target.display()))?;
            }
            images.push(json!({"png": png, "sha256": sha256_hex(&bytes)}));
        }
        let entry = manifest_entry(case, images);
        match manifest.insert(case.name.clone(), entry.clone()) {
            None => added.push(case.name.clone()),
            Some(old) if old != entry || case_changed => changed.push(case.name.clone()),
            Some(_) => unchanged += 1,
        }
    }
    let mut removed = Vec::new();
    if full_run {
        let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        let stale: Vec<String> = manifest
            .keys()
            .filter(|name| !names.contains(name.as_str()))
            .cloned()
            .collect();
        for name in stale {
            manifest.remove(&name);
            removed.push(name);
        }
        let keep: BTreeSet<String> = cases.iter().flat_map(Case::png_names).collect();
        for file in golden_files(root)? {
            if !keep.contains(&file) && file != "manifest.json" {
                std::fs::remove_file(golden.join(&file))?;
            }
        }
    }
    write_manifest(root, &manifest)?;
    for (label, names) in [
        ("added", &added),
        ("changed", &changed),
        ("removed", &removed),
    ] {
        for name in names {
            println!("{label:>8}  {name}");
        }
    }
    println!(
        "goldens: {} added, {} changed, {} removed, {unchanged} unchanged ({})",
        added.len(),
        changed.len(),
        removed.len(),
        MANIFEST
    );
    Ok(())
}

/// File names directly under `golden/`.
fn golden_files(root: &Path) -> Result<BTreeSet<String>> {
    let dir = root.join(GOLDEN_DIR);
    let mut files = BTreeSet::new();
    if dir.exists() {
        for entry in std::fs::read_dir(&dir)? {
            files.insert(entry?.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(files)
}

/// The outcome of a golden check.
pub struct Verification {
    /// Each case checked, whether all its images passed, and a one-line result.
    pub cases: Vec<(Case, bool, String)>,
    pub failures: Vec<Failure>,
    /// `target/golden-diffs/report.md`, when something failed.
    pub report: Option<PathBuf>,
    pub images: usize,
    pub identical: usize,
    pub render_seconds: f64,
}

/// `--check` of the whole matrix, as the main job (`cargo xtask conformance`) runs it.
pub fn verify(jobs: usize) -> Result<Verification> {
    let root = project_root();
    let cases = cases::matrix();
    setup::ensure()?;
    run_checked(Command::new("cargo").args(["build", "--release", "-p", "reference-worker"]))?;
    let scratch = std::env::temp_dir().join(format!("sdxl-goldens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let started = Instant::now();
    let result = render_all(&root, &cases, &scratch, jobs).and_then(|()| {
        verify_rendered(
            &root,
            &cases,
            &scratch,
            true,
            started.elapsed().as_secs_f64(),
        )
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn verify_rendered(
    root: &Path,
    cases: &[Case],
    scratch: &Path,
    full_run: bool,
    render_seconds: f64,
) -> Result<Verification> {
    let manifest = read_manifest(root)?;
    let (failures, identical, images) = compare_all(root, cases, scratch, &manifest, full_run)?;
    let report = if failures.is_empty() {
        None
    } else {
        Some(compare::write_report(
            &root.join(DIFF_DIR),
            &failures,
            TOLERANCE,
        )?)
    };
    let cases = cases
        .iter()
        .map(|case| {
            let failed: Vec<&Failure> = failures.iter().filter(|f| f.case == case.name).collect();
            let result = if failed.is_empty() {
                format!("{} image(s) within the bound", case.image_count())
            } else {
                failed
                    .iter()
                    .map(|f| describe(root, f))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            (case.clone(), failed.is_empty(), result)
        })
        .collect();
    Ok(Verification {
        cases,
        failures,
        report,
        images,
        identical,
        render_seconds,
    })
}

/// One line about a failed image.
fn describe(root: &Path, failure: &Failure) -> String {
    match (&failure.verdict, &failure.problem) {
        (Some(v), _) => format!(
            "{}: max |Δ| {} ({} samples over {}), SSIM {:.5} → {}",
            failure.png,
            v.max_abs_diff,
            v.samples_over,
            TOLERANCE.max_abs_diff,
            v.ssim,
            root.join(DIFF_DIR)
                .join(failure.png.trim_end_matches(".png"))
                .join("diff.png")
                .display()
        ),
        (None, Some(problem)) => format!("{}: {problem}", failure.png),
        (None, None) => failure.png.clone(),
    }
}

fn check(root: &Path, cases: &[Case], scratch: &Path, full_run: bool, seconds: f64) -> Result<()> {
    let verification = verify_rendered(root, cases, scratch, full_run, seconds)?;
    let Some(report) = &verification.report else {
        println!(
            "goldens: {} image(s) of {} case(s) match ({} bit-identical)",
            verification.images,
            cases.len(),
            verification.identical
        );
        return Ok(());
    };
    for failure in &verification.failures {
        println!("FAIL  {}", describe(root, failure));
    }
    println!("report: {}", report.display());
    bail!(
        "{} golden image(s) failed the check; if the change is intended, run `cargo xtask \
         regenerate-goldens` and commit golden/",
        verification.failures.len()
    )
}

/// Compares every rendered image with its golden; returns the failures, how many images were
/// bit-identical and how many were compared.
fn compare_all(
    root: &Path,
    cases: &[Case],
    scratch: &Path,
    manifest: &BTreeMap<String, Value>,
    full_run: bool,
) -> Result<(Vec<Failure>, usize, usize)> {
    let golden = root.join(GOLDEN_DIR);
    let mut failures = Vec::new();
    let mut identical = 0;
    let mut compared = 0;
    let problem = |case: &str, png: &str, text: String| Failure {
        case: case.to_owned(),
        png: png.to_owned(),
        problem: Some(text),
        verdict: None,
        images: None,
    };
    for case in cases {
        let Some(entry) = manifest.get(&case.name) else {
            failures.push(problem(
                &case.name,
                &format!("{}.png", case.name),
                "no golden: the case is not in the manifest".into(),
            ));
            continue;
        };
        if entry["request"] != case.request {
            failures.push(problem(
                &case.name,
                &format!("{}.png", case.name),
                "the manifest's request differs from the matrix's: regenerate".into(),
            ));
            continue;
        }
        let tolerance = Tolerance::from_json(&entry["tolerance"])
            .with_context(|| format!("{MANIFEST}: case {}", case.name))?;
        let recorded = entry["images"].as_array().cloned().unwrap_or_default();
        for (i, png) in case.png_names().into_iter().enumerate() {
            let golden_path = golden.join(&png);
            let Ok(bytes) = std::fs::read(&golden_path) else {
                failures.push(problem(
                    &case.name,
                    &png,
                    format!("{} is missing", golden_path.display()),
                ));
                continue;
            };
            let sha = recorded
                .iter()
                .find(|image| image["png"] == png.as_str())
                .and_then(|image| image["sha256"].as_str());
            if sha != Some(sha256_hex(&bytes).as_str()) {
                failures.push(problem(
                    &case.name,
                    &png,
                    format!(
                        "{} does not match its sha256 in the manifest",
                        golden_path.display()
                    ),
                ));
                continue;
            }
            let expected = compare::read_rgb(&golden_path)?;
            let actual = compare::read_rgb(&rendered_png(scratch, case, i))?;
            compared += 1;
            match compare::compare(&expected, &actual, tolerance) {
                Ok(verdict) if verdict.pass => identical += usize::from(verdict.identical()),
                Ok(verdict) => failures.push(Failure {
                    case: case.name.clone(),
                    png,
                    problem: None,
                    verdict: Some(verdict),
                    images: Some((expected, actual)),
                }),
                Err(error) => failures.push(problem(&case.name, &png, format!("{error:#}"))),
            }
        }
    }
    if full_run {
        let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        for name in manifest.keys().filter(|n| !names.contains(n.as_str())) {
            failures.push(problem(
                name,
                name,
                "in the manifest but not in the matrix".into(),
            ));
        }
        let expected: BTreeSet<String> = cases.iter().flat_map(Case::png_names).collect();
        for file in golden_files(root)? {
            if !expected.contains(&file) && file != "manifest.json" {
                failures.push(problem(
                    "",
                    &file,
                    format!("{GOLDEN_DIR}/{file} is not a golden of the matrix"),
                ));
            }
        }
    }
    Ok((failures, identical, compared))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: a change of one 4×4 block in any committed golden must fail the comparison.
    #[test]
    fn perturbing_one_4x4_block_of_any_golden_fails() {
        let root = project_root();
        let manifest = read_manifest(&root).expect("golden/manifest.json");
        let mut checked = 0;
        for entry in manifest.values() {
            for image in entry["images"].as_array().expect("images") {
                let png = image["png"].as_str().expect("png");
                let golden = compare::read_rgb(&root.join(GOLDEN_DIR).join(png)).expect(png);
                let (w, h) = golden.dimensions();
                // Corners, centre and an odd spot, each a 4×4 block moved by 8 levels.
                for (bx, by) in [
                    (0, 0),
                    (w - 4, h - 4),
                    (w / 2, h / 2),
                    (w / 3 + 1, h / 5 + 3),
                ] {
                    let mut perturbed = golden.clone();
                    for y in by..by + 4 {
                        for x in bx..bx + 4 {
                            let p = perturbed.get_pixel_mut(x, y);
                            p[2] = if p[2] < 128 { p[2] + 8 } else { p[2] - 8 };
                        }
                    }
                    let verdict = compare::compare(&golden, &perturbed, TOLERANCE).expect(png);
                    assert!(
                        !verdict.pass,
                        "{png}: a block at {bx},{by} passed: {verdict:?}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "no golden images to perturb");
    }

    #[test]
    fn shards_partition_the_matrix() {
        let all = cases::matrix();
        let mut seen = Vec::new();
        for k in 1..=3 {
            let options = Options::parse(&["--shard".into(), format!("{k}/3")]).unwrap();
            seen.extend(options.select(all.clone()).into_iter().map(|c| c.name));
        }
        seen.sort();
        let mut names: Vec<String> = all.into_iter().map(|c| c.name).collect();
        names.sort();
        assert_eq!(seen, names);
        for bad in ["0/3", "4/3", "1/0", "x/2", "2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
