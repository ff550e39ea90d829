//! `cargo xtask bench`: the criterion benches and their Python references, in one run on one
//! machine, reported as ratios (absolute times are noisy; ratios from the same run are not).
//!
//! Transform: criterion's `transform_validate/<case>` (C# bytes → validated Python v2 message)
//! against Python `jsonschema` validating the same Python v2 message
//! (`benches/python/validate_jsonschema.py`). Targets (issue 2): median ≤ 10 µs, ≥ 100× faster.

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use transformer::request_map::{transform_request, MapOptions};

use crate::{project_root, run_checked, setup};

const TARGET_MEDIAN_US: f64 = 10.0;
const TARGET_RATIO: f64 = 100.0;

pub fn run(args: &[String]) -> Result<()> {
    let mut measurement_secs = "5";
    for arg in args {
        match arg.as_str() {
            "--quick" => measurement_secs = "2",
            other => bail!("unknown argument `{other}` (expected --quick)"),
        }
    }
    let venv = setup::ensure()?;
    let root = project_root();
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
    let scratch = root.join("target/xtask-bench");
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
        let estimates = root.join(format!(
            "target/criterion/transform_validate/{}/new/estimates.json",
            case.name
        ));
        let estimates: Value = serde_json::from_slice(
            &std::fs::read(&estimates)
                .with_context(|| format!("reading {}", estimates.display()))?,
        )?;
        let rust_us = estimates["median"]["point_estimate"]
            .as_f64()
            .context("criterion estimates without a median")?
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
    println!(
        "(python {} with jsonschema {}, {})",
        python_report["versions"]["python"].as_str().unwrap_or("?"),
        python_report["versions"]["jsonschema"]
            .as_str()
            .unwrap_or("?"),
        python_report["validator"].as_str().unwrap_or("?")
    );
    Ok(())
}
