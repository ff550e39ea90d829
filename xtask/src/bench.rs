//! `cargo xtask bench`: the criterion benches and their Python references, in one run on one
//! machine, reported as ratios (absolute times are noisy; ratios from the same run are not).
//!
//! Transform: criterion's `transform_validate/<case>` (C# bytes → validated Python v2 message)
//! against Python `jsonschema` validating the same Python v2 message
//! (`benches/python/validate_jsonschema.py`). Targets (issue 2): median ≤ 10 µs, ≥ 100× faster.
//!
//! Render (issue 3), the tiny SDXL model and `benches::RENDER_REQUEST` (20 Euler steps, 256×256,
//! CFG) on every side, every side given the same intra-op thread count (`SDXL_BENCH_THREADS`,
//! default 1, see [`render_threads`]):
//! - load: criterion's `reference_worker/load` (`Pipeline::load`) against diffusers'
//!   `from_pretrained` (`benches/python/diffusers_bench.py`), medians; no target;
//! - render: criterion's `reference_worker/render_euler_20_256` (`Pipeline::render`) against the
//!   same `pipe(...)` call repeated in one Python process, medians; target ≤ 0.5×;
//! - cold start: a fresh process until its PNG is written, `reference-worker render` against
//!   `python fixtures/oracle/render.py`, run alternately, medians; target ≤ 0.1×.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use transformer::request_map::{transform_request, MapOptions};

use crate::{project_root, run_checked, setup};

const TARGET_MEDIAN_US: f64 = 10.0;
const TARGET_RATIO: f64 = 100.0;
/// Issue 3: the reference worker's render and cold start against diffusers' wall time.
const TARGET_RENDER_RATIO: f64 = 0.5;
const TARGET_COLD_START_RATIO: f64 = 0.1;

/// How long and how often each side is measured.
struct Effort {
    measurement_secs: &'static str,
    /// diffusers' load and render repeats (after one untimed warm-up each).
    python_runs: usize,
    /// Fresh processes per side for the cold start.
    cold_runs: usize,
}

const FULL: Effort = Effort {
    measurement_secs: "5",
    python_runs: 10,
    cold_runs: 5,
};
const QUICK: Effort = Effort {
    measurement_secs: "2",
    python_runs: 4,
    cold_runs: 3,
};

pub fn run(args: &[String]) -> Result<()> {
    let mut effort = &FULL;
    for arg in args {
        match arg.as_str() {
            "--quick" => effort = &QUICK,
            other => bail!("unknown argument `{other}` (expected --quick)"),
        }
    }
    let measurement_secs = effort.measurement_secs;
    let venv = setup::ensure()?;
    let root = project_root();
    let target_dir = target_dir()?;
    run_checked(Command::new("cargo").args([
        "bench",
        "-p",
        "benches",
        "--bench",
        "transform",
        "--",
        "--warm-up-time",
        "1",
        "--measurement-time",
        measurement_secs,
        "transform_validate",
    ]))?;

    // The Python side validates the very messages the Rust side produced.
    let scratch = target_dir.join("xtask-bench");
    std::fs::create_dir_all(&scratch)?;
    let mut python_args = vec![
        root.join("benches/python/validate_jsonschema.py")
            .display()
            .to_string(),
        root.join("transformer/schemas/python-request.schema.json")
            .display()
            .to_string(),
    ];
    for case in benches::TRANSFORM_CASES {
        let bytes = benches::read_case(case).map_err(anyhow::Error::msg)?;
        let mapping = transform_request(&bytes, &MapOptions::default())
            .map_err(|e| anyhow::anyhow!("{}: {}", case.fixture, e.to_json_line()))?;
        let file = scratch.join(format!("{}.python.json", case.name));
        std::fs::write(&file, serde_json::to_vec(&mapping.message_json())?)?;
        python_args.push(format!("{}={}", case.name, file.display()));
    }
    let python = venv.join("bin/python");
    eprintln!("$ {} {}", python.display(), python_args.join(" "));
    let output = Command::new(&python)
        .args(&python_args)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the Python reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let python_report: Value =
        serde_json::from_slice(&output.stdout).context("the Python reference printed no JSON")?;

    println!(
        "\n{:<26} {:>12} {:>14} {:>9}  targets (≤ {TARGET_MEDIAN_US} µs, ≥ {TARGET_RATIO}×)",
        "transform + validate", "rust median", "python median", "ratio"
    );
    for case in benches::TRANSFORM_CASES {
        let rust_us =
            criterion_median_ns(&target_dir, &format!("transform_validate/{}", case.name))?
                / 1000.0;
        let python_us = python_report["python_jsonschema"][case.name]["median_us"]
            .as_f64()
            .context("Python report without this case")?;
        let ratio = python_us / rust_us;
        let met = rust_us <= TARGET_MEDIAN_US && ratio >= TARGET_RATIO;
        println!(
            "{:<26} {:>9.2} µs {:>11.1} µs {:>8.1}×  {}",
            case.name,
            rust_us,
            python_us,
            ratio,
            if met { "met" } else { "NOT met" }
        );
    }
    // What the CLI does per message: the same, and the JSON text written.
    for case in benches::TRANSFORM_CASES {
        let rust_us = criterion_median_ns(
            &target_dir,
            &format!("transform_validate_write/{}", case.name),
        )? / 1000.0;
        let python_us = python_report["python_jsonschema"][case.name]["median_us"]
            .as_f64()
            .context("Python report without this case")?;
        println!(
            "{:<26} {:>9.2} µs {:>11.1} µs {:>8.1}×  (+ JSON text written)",
            case.name,
            rust_us,
            python_us,
            python_us / rust_us,
        );
    }
    println!(
        "(python {} with jsonschema {}, {})",
        python_report["versions"]["python"].as_str().unwrap_or("?"),
        python_report["versions"]["jsonschema"]
            .as_str()
            .unwrap_or("?"),
        python_report["validator"].as_str().unwrap_or("?")
    );
    render(&venv, &target_dir, effort)
}

/// The target directory cargo builds into (and criterion writes `criterion/` into):
/// `CARGO_TARGET_DIR`, `build.target-dir`, else `<project root>/target`, as cargo resolves it.
fn target_dir() -> Result<PathBuf> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(project_root())
        .stderr(Stdio::inherit())
        .output()
        .context("could not run `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed with {}", output.status);
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` without target_directory")
}

/// The median of criterion's last run of `id` (`group/function`), in nanoseconds.
fn criterion_median_ns(target_dir: &Path, id: &str) -> Result<f64> {
    let path = target_dir.join(format!("criterion/{id}/new/estimates.json"));
    let estimates: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{}: no median", path.display()))
}

/// The intra-op thread count every render side gets: `SDXL_BENCH_THREADS` if set, else one.
///
/// One by default because these machines are shared: with as many OpenMP threads as cores, every
/// parallel region waits for a thread another process has descheduled, and a UNet step measured
/// 45 ms on a quiet moment took 1.3 s under a load average of 6 (both sides alike, but by
/// amounts that swamp the ratio). Set `SDXL_BENCH_THREADS` on a dedicated machine.
fn render_threads() -> Result<i32> {
    Ok(benches::bench_threads()
        .map_err(anyhow::Error::msg)?
        .unwrap_or(1))
}

fn render(venv: &Path, target_dir: &Path, effort: &Effort) -> Result<()> {
    let root = project_root();
    let threads = render_threads()?.to_string();
    let scratch = target_dir.join("xtask-bench");
    std::fs::create_dir_all(&scratch)?;
    let model = root.join(benches::TINY_SDXL);
    let request = root.join(benches::RENDER_REQUEST);

    run_checked(
        Command::new("cargo")
            .args(["bench", "-p", "benches", "--bench", "render", "--"])
            .args(["--warm-up-time", "1"])
            .args(["--measurement-time", effort.measurement_secs])
            .arg("reference_worker/|schedulers/")
            .env(benches::THREADS_ENV, &threads)
            .env(benches::REPORT_DIR_ENV, &scratch),
    )?;
    let classes: Vec<&str> = transformer::schedulers::class_names().collect();

    let python = venv.join("bin/python");
    let mut diffusers = Command::new(&python);
    diffusers
        .arg(root.join("benches/python/diffusers_bench.py"))
        .arg("--model")
        .arg(&model)
        .arg("--request")
        .arg(&request)
        .args(["--threads", &threads])
        .args(["--runs", &effort.python_runs.to_string()])
        .args(["--schedulers", &classes.join(",")])
        .args([
            "--scheduler-steps",
            &benches::SCHEDULER_BENCH_STEPS.to_string(),
        ])
        .current_dir(&root);
    eprintln!("$ {diffusers:?}");
    let output = diffusers
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the diffusers bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).context("the diffusers bench printed no JSON")?;
    let diffusers_s = |case: &str| -> Result<f64> {
        report["diffusers"][case]["median_s"]
            .as_f64()
            .with_context(|| format!("the diffusers bench reported no {case} median"))
    };

    run_checked(Command::new("cargo").args(["build", "--release", "-p", "reference-worker"]))?;
    let worker = target_dir.join("release/reference-worker");
    let scratch = scratch.join("cold-start");
    let mut worker_runs = Vec::new();
    let mut oracle_runs = Vec::new();
    // Alternating, so that a change in the machine's load falls on both sides alike.
    for run in 0..effort.cold_runs {
        let out_dir = scratch.join(format!("reference-worker-{run}"));
        let mut command = Command::new(&worker);
        command
            .arg("render")
            .arg("--model")
            .arg(&model)
            .arg("--request")
            .arg(&request)
            .arg("--out-dir")
            .arg(&out_dir);
        worker_runs.push(cold_start(
            &mut command,
            &out_dir.join("image_0.png"),
            &threads,
        )?);

        let out_dir = scratch.join(format!("diffusers-{run}"));
        let mut command = Command::new(&python);
        command
            .arg(root.join("fixtures/oracle/render.py"))
            .arg("--model")
            .arg(&model)
            .arg("--out-dir")
            .arg(&out_dir)
            .arg(&request)
            .env("SDXL_ORACLE_THREADS", &threads);
        let stem = request
            .file_stem()
            .context("the request has no file name")?;
        oracle_runs.push(cold_start(
            &mut command,
            &out_dir.join(stem).join("image_0.png"),
            &threads,
        )?);
    }

    let rows = [
        (
            "load",
            criterion_median_ns(target_dir, "reference_worker/load")? / 1e9,
            diffusers_s("load")?,
            None,
        ),
        (
            "render (20 Euler, 256²)",
            criterion_median_ns(target_dir, "reference_worker/render_euler_20_256")? / 1e9,
            diffusers_s("render")?,
            Some(TARGET_RENDER_RATIO),
        ),
        (
            "cold start to PNG",
            median(&mut worker_runs),
            median(&mut oracle_runs),
            Some(TARGET_COLD_START_RATIO),
        ),
    ];
    println!(
        "\n{:<26} {:>12} {:>16} {:>9}  target (ratio = rust / diffusers)",
        "tiny SDXL", "rust median", "diffusers median", "ratio"
    );
    for (name, rust_s, diffusers_s, target) in rows {
        let ratio = rust_s / diffusers_s;
        let verdict = match target {
            Some(target) if ratio <= target => format!("≤ {target}×  met"),
            Some(target) => format!("≤ {target}×  NOT met"),
            None => "none".to_owned(),
        };
        println!(
            "{name:<26} {:>12} {:>16} {:>8.3}×  {verdict}",
            seconds(rust_s),
            seconds(diffusers_s),
            ratio
        );
    }
    scheduler_table(target_dir, &classes, &report)?;
    let unet_step_ms = criterion_median_ns(target_dir, "reference_worker/unet_step")? / 1e6;
    println!(
        "(one UNet step, batch 2 at 256×256: {unet_step_ms:.2} ms; {threads} intra-op thread(s) \
         on every side; criterion medians against the median of {} diffusers runs in one process; \
         cold start: median of {} fresh processes per side; torch {}, diffusers {}, python {})",
        effort.python_runs,
        effort.cold_runs,
        report["versions"]["torch"].as_str().unwrap_or("?"),
        report["versions"]["diffusers"].as_str().unwrap_or("?"),
        report["versions"]["python"].as_str().unwrap_or("?"),
    );
    Ok(())
}

/// Issue 5: each scheduler's render time against diffusers', and the UNet passes on each side.
fn scheduler_table(target_dir: &Path, classes: &[&str], report: &Value) -> Result<()> {
    let path = target_dir.join("xtask-bench/unet_evaluations.json");
    let evaluations: Value = serde_json::from_slice(
        &std::fs::read(&path)
            .with_context(|| format!("the render bench wrote no {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    println!(
        "\n{:<34} {:>12} {:>16} {:>9} {:>14}  ({} steps, 256², CFG)",
        "scheduler",
        "rust median",
        "diffusers median",
        "ratio",
        "UNet rust/py",
        benches::SCHEDULER_BENCH_STEPS
    );
    for class in classes {
        let rust_s = criterion_median_ns(target_dir, &benches::scheduler_bench_id(class))? / 1e9;
        let theirs = &report["diffusers"]["schedulers"][*class];
        let diffusers_s = theirs["median_s"]
            .as_f64()
            .with_context(|| format!("the diffusers bench reported no {class} median"))?;
        let ours = evaluations[*class]
            .as_u64()
            .with_context(|| format!("{} has no count for {class}", path.display()))?;
        let calls = theirs["unet_calls"]
            .as_u64()
            .with_context(|| format!("the diffusers bench counted no UNet calls for {class}"))?;
        println!(
            "{class:<34} {:>12} {:>16} {:>8.3}× {:>9}/{:<4}{}",
            seconds(rust_s),
            seconds(diffusers_s),
            rust_s / diffusers_s,
            ours,
            calls,
            if ours == calls {
                ""
            } else {
                "  UNet calls DIFFER"
            }
        );
    }
    Ok(())
}

/// Wall time of one fresh process (given `threads` intra-op threads through `OMP_NUM_THREADS`,
/// which libtorch reads at start-up) until it exits, having written `png`.
fn cold_start(command: &mut Command, png: &Path, threads: &str) -> Result<f64> {
    if let Some(dir) = png.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    command
        .env("OMP_NUM_THREADS", threads)
        .current_dir(project_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("$ {command:?}");
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("could not start {command:?}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !png.is_file() {
        bail!("{command:?} succeeded but wrote no {}", png.display());
    }
    Ok(seconds)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 0 {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    }
}

/// A duration with a unit that keeps three significant figures readable.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.3} s")
    }
}
