//! Unit parity of every scheduler against diffusers 0.42.1, without a UNet: the committed fixture
//! `fixtures/schedulers/<Class>.json` (written by `fixtures/oracle/dump_schedulers.py`; `cargo
//! xtask fixtures --check` proves it is what diffusers computes) holds, for a grid of
//! `from_config(base, **options)` configurations and step counts, diffusers' timesteps, sigmas,
//! `init_noise_sigma` and a whole `scale_model_input` + `step` loop on fixed inputs.
//!
//! The bar (issue 5): every value within 1e-6 relative to the largest magnitude of the tensor it
//! belongs to (timesteps exactly, and with diffusers' dtype). Each test also counts how many cases
//! came out bit-identical and prints it. A configuration diffusers refuses must be refused too.

mod oracle_dump;

use oracle_dump::{project_root, tiny_sdxl};
use reference_worker::config::SchedulerConfig;
use reference_worker::noise::randn_tensor;
use reference_worker::schedulers::{scheduler_for, Scheduler};
use reference_worker::Generator;
use serde_json::Value;
use tch::{Kind, Tensor};

const RELATIVE_BOUND: f64 = 1e-6;

fn base_config() -> SchedulerConfig {
    SchedulerConfig::read(&tiny_sdxl().join("scheduler/scheduler_config.json"))
        .expect("the fixture's scheduler config")
}

fn fixture(class: &str) -> Value {
    let path = project_root().join(format!("fixtures/schedulers/{class}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask fixtures`)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(value: &Value, what: &str) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array"))
        .iter()
        .map(|v| number(v, what))
        .collect()
}

/// A number of the fixture: JSON numbers, and the strings the oracle writes for non-finite ones.
fn number(value: &Value, what: &str) -> f64 {
    match value {
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        Value::String(s) if s == "NaN" => f64::NAN,
        other => other
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {other} is not a number")),
    }
}

fn tensor_values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).expect("tensor values")
}

/// Whether `actual` is within the bar of `expected`; `Ok(true)` when bit-identical (as float32).
fn compare(actual: &[f64], expected: &[f64], what: &str) -> Result<bool, String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{what}: {} values, diffusers has {}",
            actual.len(),
            expected.len()
        ));
    }
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut identical = true;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        // The fixture writes every NaN as "NaN" (JSON keeps no sign or payload): any NaN matches.
        let same_nan = a.is_nan() && e.is_nan();
        if !same_nan && (*a as f32).to_bits() != (*e as f32).to_bits() {
            identical = false;
        }
        let both_nan = a.is_nan() && e.is_nan();
        let both_same_inf = a.is_infinite() && a == e;
        if !(both_nan || both_same_inf || (a - e).abs() <= RELATIVE_BOUND * scale) {
            return Err(format!(
                "{what}: value {i} is {a:e}, diffusers has {e:e} (|Δ| {:e} > 1e-6 × {scale:e})",
                (a - e).abs()
            ));
        }
    }
    Ok(identical)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        _ => "other",
    }
}

/// Runs one case; `Ok(bit_identical)` or the first disagreement.
fn run_case(
    class: &str,
    doc: &Value,
    case: &Value,
    base: &SchedulerConfig,
) -> Result<bool, String> {
    let options = case["options"].as_object().expect("options").clone();
    let steps = case["steps"].as_u64().expect("steps") as usize;
    let built = scheduler_for(class, base, &options).and_then(|mut s| {
        s.set_timesteps(steps)?;
        Ok(s)
    });
    if let Some(error) = case.get("error") {
        return match built {
            Err(_) => Ok(true),
            Ok(_) => Err(format!(
                "diffusers refuses this configuration ({error}), we accepted it"
            )),
        };
    }
    let mut scheduler: Box<dyn Scheduler> = built.map_err(|e| format!("refused: {e}"))?;
    let mut identical = true;

    if scheduler.order() as u64 != case["order"].as_u64().expect("order") {
        return Err(format!(
            "order {} vs diffusers {}",
            scheduler.order(),
            case["order"]
        ));
    }
    let expected_kind = case["timesteps_dtype"].as_str().expect("timesteps_dtype");
    if kind_name(scheduler.timesteps().kind()) != expected_kind {
        return Err(format!(
            "timesteps are {:?}, diffusers' are {expected_kind}",
            scheduler.timesteps().kind()
        ));
    }
    let expected_timesteps = floats(&case["timesteps"], "timesteps");
    let actual_timesteps = tensor_values(scheduler.timesteps());
    if actual_timesteps.len() != expected_timesteps.len()
        || actual_timesteps
            .iter()
            .zip(&expected_timesteps)
            .any(|(a, e)| a.to_bits() != e.to_bits())
    {
        return Err(format!(
            "timesteps {actual_timesteps:?}, diffusers has {expected_timesteps:?}"
        ));
    }
    if scheduler.timestep_values() != actual_timesteps {
        return Err(format!(
            "timestep_values() {:?} disagree with the timesteps tensor",
            scheduler.timestep_values()
        ));
    }
    match (case.get("sigmas"), scheduler.sigmas()) {
        (Some(expected), Some(actual)) => {
            identical &= compare(
                &tensor_values(actual),
                &floats(expected, "sigmas"),
                "sigmas",
            )?;
        }
        (None, None) => {}
        (Some(_), None) => return Err("diffusers has a sigma table, we have none".into()),
        (None, Some(_)) => return Err("we have a sigma table, diffusers has none".into()),
    }
    let init = scheduler.init_noise_sigma().map_err(|e| e.to_string())?;
    identical &= compare(
        &[init],
        &[number(&case["init_noise_sigma"], "init_noise_sigma")],
        "init_noise_sigma",
    )?;

    let shape: Vec<i64> = floats(&doc["shape"], "shape")
        .iter()
        .map(|&d| d as i64)
        .collect();
    let seeds = |key: &str| -> Vec<Generator> {
        floats(&doc[key], key)
            .iter()
            .map(|&s| Generator::new(s as u64).expect("a generator"))
            .collect()
    };
    let mut sample_generators = seeds("sample_seeds");
    let mut sample = randn_tensor(&shape, &mut sample_generators, Kind::Float)
        .and_then(|t| Ok(t.f_mul_scalar(init)?))
        .map_err(|e| e.to_string())?;
    let mut outputs =
        Generator::new(doc["output_seed"].as_u64().expect("output_seed")).expect("a generator");
    let mut step_generators = seeds("step_seeds");
    let scaled = case["scaled"].as_array().expect("scaled");
    let prev = case["prev"].as_array().expect("prev");
    let timesteps = scheduler.timestep_values();
    if timesteps.len() != prev.len() {
        return Err(format!(
            "{} model evaluations, diffusers makes {}",
            timesteps.len(),
            prev.len()
        ));
    }
    for (i, t) in timesteps.iter().enumerate() {
        let x = scheduler
            .scale_model_input(&sample, *t)
            .map_err(|e| format!("scale_model_input at step {i}: {e}"))?;
        identical &= compare(
            &tensor_values(&x),
            &floats(&scaled[i], "scaled"),
            &format!("scale_model_input at step {i} (t = {t})"),
        )?;
        let model_output = outputs
            .f_randn(&shape, Kind::Float)
            .map_err(|e| e.to_string())?;
        sample = scheduler
            .step(&model_output, *t, &sample, &mut step_generators)
            .map_err(|e| format!("step {i}: {e}"))?;
        if sample.kind() != Kind::Float || sample.size() != shape {
            return Err(format!(
                "step {i} returned {:?} {:?}, expected float32 {shape:?}",
                sample.kind(),
                sample.size()
            ));
        }
        identical &= compare(
            &tensor_values(&sample),
            &floats(&prev[i], "prev"),
            &format!("step {i} (t = {t})"),
        )?;
    }
    Ok(identical)
}

fn check_class(class: &str) {
    let doc = fixture(class);
    assert_eq!(doc["class"], class, "fixture for the wrong class");
    let base = base_config();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15, "{class}: only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut bit_identical = 0;
    for case in cases {
        let label = format!("{} steps, options {}", case["steps"], case["options"]);
        match run_case(class, &doc, case, &base) {
            Ok(true) => bit_identical += 1,
            Ok(false) => {}
            Err(message) => failures.push(format!("{label}: {message}")),
        }
    }
    eprintln!(
        "{class}: {} cases, {} passed, {bit_identical} bit-identical",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{class}: {} of {} cases disagree with diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

macro_rules! parity_tests {
    ($($test:ident => $class:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_class($class);
            }
        )*

        /// Every class of PROTOCOL B.4 has a fixture and a test here.
        #[test]
        fn every_protocol_scheduler_is_tested() {
            let tested = [$($class),*];
            for class in reference_worker::schedulers::PROTOCOL_SCHEDULERS {
                assert!(tested.contains(&class), "{class} has no parity test");
            }
            assert_eq!(tested.len(), reference_worker::schedulers::PROTOCOL_SCHEDULERS.len());
        }
    };
}

parity_tests! {
    dpm_solver_multistep => "DPMSolverMultistepScheduler",
    ddim => "DDIMScheduler",
    euler_discrete => "EulerDiscreteScheduler",
    euler_ancestral_discrete => "EulerAncestralDiscreteScheduler",
    dpm_solver_singlestep => "DPMSolverSinglestepScheduler",
    kdpm2_discrete => "KDPM2DiscreteScheduler",
    kdpm2_ancestral_discrete => "KDPM2AncestralDiscreteScheduler",
    heun_discrete => "HeunDiscreteScheduler",
    lms_discrete => "LMSDiscreteScheduler",
    unipc_multistep => "UniPCMultistepScheduler",
    pndm => "PNDMScheduler",
    ddpm => "DDPMScheduler",
}

#[test]
fn an_unknown_scheduler_lists_the_known_ones() {
    let error = scheduler_for("FancyScheduler", &base_config(), &Default::default())
        .expect_err("an unknown class");
    let message = error.to_string();
    assert!(message.contains("FancyScheduler"), "{message}");
    for class in reference_worker::schedulers::PROTOCOL_SCHEDULERS {
        assert!(message.contains(class), "{message} does not list {class}");
    }
}
