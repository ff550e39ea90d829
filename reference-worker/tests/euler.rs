//! EulerDiscreteScheduler against diffusers 0.42.1 (fixtures/oracle/dump_vae_scheduler.py):
//! timesteps, sigmas, init_noise_sigma, and scale_model_input / step over whole loops, bit for bit.

mod oracle_dump;

use oracle_dump::{assert_identical, dump_dir, manifest, tiny_sdxl, Dump};
use reference_worker::config::SchedulerConfig;
use reference_worker::schedulers::{scheduler_for, Scheduler};
use reference_worker::{Error, Generator};
use serde_json::{Map, Value};
use tch::{Kind, Tensor};

fn base_config() -> SchedulerConfig {
    SchedulerConfig::read(&tiny_sdxl().join("scheduler/scheduler_config.json"))
        .expect("the fixture's scheduler config")
}

fn euler(options: &Map<String, Value>) -> Box<dyn Scheduler> {
    scheduler_for("EulerDiscreteScheduler", &base_config(), options).expect("an Euler scheduler")
}

fn check_schedule(scheduler: &dyn Scheduler, expected: &Dump, prefix: &str, what: &str) {
    assert_identical(
        scheduler.timesteps(),
        expected.get(&format!("{prefix}timesteps")),
        &format!("{what}: timesteps"),
    );
    let expected_init = expected
        .get(&format!("{prefix}init_noise_sigma"))
        .double_value(&[]);
    let actual_init = scheduler.init_noise_sigma().expect("init_noise_sigma");
    assert_eq!(
        actual_init.to_bits(),
        expected_init.to_bits(),
        "{what}: init_noise_sigma {actual_init} vs {expected_init}"
    );
}

#[test]
fn full_loops_match_diffusers() {
    let dir = dump_dir("euler");
    let cases = manifest(dir)["euler"]["cases"].clone();
    let cases = cases.as_array().expect("a case list");
    assert!(cases.len() >= 25, "the oracle wrote {} cases", cases.len());
    let mut worst: f64 = 0.0;
    for case in cases {
        let name = case["name"].as_str().expect("a case name");
        let options = case["options"].as_object().expect("options").clone();
        let steps = case["steps"].as_u64().expect("steps") as usize;
        let expected = Dump::read(dir, name);

        let mut scheduler = euler(&options);
        scheduler.set_timesteps(steps).expect("set_timesteps");
        check_schedule(scheduler.as_ref(), &expected, "", name);
        // sigmas are not on the trait; check them through the concrete type's schedule length
        assert_eq!(
            scheduler.timestep_values().len(),
            expected.get("timesteps").size()[0] as usize,
            "{name}: number of timesteps"
        );

        let mut sample = expected.get("initial_sample").shallow_clone();
        let mut generators = vec![Generator::new(0).expect("a generator")];
        for (i, t) in scheduler.timestep_values().into_iter().enumerate() {
            let scaled = scheduler
                .scale_model_input(&sample, t)
                .expect("scale_model_input");
            worst = worst.max(assert_identical(
                &scaled,
                expected.get(&format!("scaled_{i}")),
                &format!("{name}: scale_model_input at step {i}"),
            ));
            let model_output = expected.get(&format!("model_output_{i}"));
            sample = scheduler
                .step(model_output, t, &sample, &mut generators)
                .expect("step");
            worst = worst.max(assert_identical(
                &sample,
                expected.get(&format!("prev_{i}")),
                &format!("{name}: step {i}"),
            ));
        }
        assert!(
            !expected.has(&format!("prev_{}", scheduler.timestep_values().len())),
            "{name}: diffusers ran more steps"
        );
    }
    eprintln!("Euler full loops: worst max |Δ| = {worst:e}");
}

#[test]
fn schedules_for_1_to_100_steps_match_diffusers() {
    let dir = dump_dir("euler");
    let expected = Dump::read(dir, "euler_sweep");
    for spacing in ["leading", "trailing", "linspace"] {
        for karras in [false, true] {
            let mut options = Map::new();
            options.insert("timestep_spacing".into(), spacing.into());
            options.insert("use_karras_sigmas".into(), karras.into());
            let mut scheduler = reference_worker::schedulers::EulerDiscreteScheduler::from_config(
                &base_config().file.with_overrides(&options, "test options"),
            )
            .expect("an Euler scheduler");
            for steps in 1..=100 {
                scheduler.set_timesteps(steps).expect("set_timesteps");
                let prefix = format!("{spacing}_karras{}_{steps}.", u8::from(karras));
                let what = format!("{spacing}, karras {karras}, {steps} steps");
                check_schedule(&scheduler, &expected, &prefix, &what);
                assert!(
                    scheduler
                        .sigmas()
                        .equal(expected.get(&format!("{prefix}sigmas"))),
                    "{what}: sigmas differ: {:?} vs {:?}",
                    scheduler.sigmas(),
                    expected.get(&format!("{prefix}sigmas"))
                );
            }
        }
    }
}

#[test]
fn sigmas_of_the_loop_cases_match_diffusers() {
    let dir = dump_dir("euler");
    let cases = manifest(dir)["euler"]["cases"].clone();
    for case in cases.as_array().expect("a case list") {
        let name = case["name"].as_str().expect("a case name");
        let options = case["options"].as_object().expect("options").clone();
        let mut scheduler = reference_worker::schedulers::EulerDiscreteScheduler::from_config(
            &base_config().file.with_overrides(&options, "test options"),
        )
        .expect("an Euler scheduler");
        scheduler
            .set_timesteps(case["steps"].as_u64().expect("steps") as usize)
            .expect("set_timesteps");
        assert_identical(
            scheduler.sigmas(),
            Dump::read(dir, name).get("sigmas"),
            &format!("{name}: sigmas"),
        );
    }
}

#[test]
fn unknown_scheduler_lists_the_known_ones() {
    let error = scheduler_for("DPMPlusPlusScheduler", &base_config(), &Map::new())
        .expect_err("an unknown name");
    assert!(matches!(error, Error::UnknownScheduler { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("DPMPlusPlusScheduler"), "{message}");
    assert!(message.contains("EulerDiscreteScheduler"), "{message}");
}

#[test]
fn bad_options_name_the_key() {
    let mut options = Map::new();
    options.insert("timestep_spacing".into(), "sideways".into());
    let error = scheduler_for("EulerDiscreteScheduler", &base_config(), &options)
        .expect_err("a bad spacing");
    let message = error.to_string();
    assert!(message.contains("timestep_spacing"), "{message}");
    assert!(message.contains("sideways"), "{message}");
    assert!(message.contains("scheduler_options"), "{message}");
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut scheduler = euler(&Map::new());
    assert!(scheduler.set_timesteps(0).is_err());
    scheduler.set_timesteps(2).expect("set_timesteps");
    let sample = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
    // A timestep that is not in the schedule.
    assert!(scheduler.scale_model_input(&sample, 3.5).is_err());
    // Stepping past the end of the schedule.
    let mut generators = vec![Generator::new(0).expect("a generator")];
    for t in scheduler.timestep_values() {
        let _prev = scheduler
            .step(&sample, t, &sample, &mut generators)
            .expect("step");
    }
    let last = *scheduler.timestep_values().last().expect("two timesteps");
    let error = scheduler
        .step(&sample, last, &sample, &mut generators)
        .expect_err("a step past the end");
    assert!(
        error.to_string().contains("EulerDiscreteScheduler"),
        "{error}"
    );
}
