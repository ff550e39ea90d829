//! Inputs shared by the criterion benches and `cargo xtask bench`: the requests every bench
//! transforms, read from the committed fixtures.

use std::path::PathBuf;

/// A bench input: a name (used as the criterion benchmark id) and a fixture path.
pub struct Case {
    pub name: &'static str,
    pub fixture: &'static str,
}

/// The requests the transform bench measures: the upstream HTTP sample and the seed's example.
pub const TRANSFORM_CASES: &[Case] = &[
    Case {
        name: "upstream_http_test_api",
        fixture: "fixtures/requests/upstream/enhancedsdxl_http_request.test_api.e4789f8.json",
    },
    Case {
        name: "seed_example",
        fixture: "fixtures/requests/seed/seed_example.json",
    },
];

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The fixture's bytes (benches and xtask run from a checkout: a missing fixture is a broken
/// checkout, reported with its path).
pub fn read_case(case: &Case) -> Result<Vec<u8>, String> {
    let path = project_root().join(case.fixture);
    std::fs::read(&path).map_err(|e| format!("cannot read bench fixture {}: {e}", path.display()))
}

/// The tiny SDXL pipeline every render bench loads (diffusers folder layout).
pub const TINY_SDXL: &str = "fixtures/models/tiny-sdxl";

/// The request of the render benches: 20 Euler steps at 256×256 with classifier-free guidance
/// (a Python v2 envelope; criterion, diffusers and both cold-start CLIs render this same file).
pub const RENDER_REQUEST: &str = "benches/requests/render_256_euler_20.json";

/// Steps of the per-scheduler render benches (issue 5): the bench request re-rendered with each
/// scheduler class of PROTOCOL B.4 (`transformer::schedulers::class_names`), this many steps.
/// Heun and KDPM2 evaluate the UNet about twice per step, as diffusers does.
pub const SCHEDULER_BENCH_STEPS: usize = 8;

/// Where the render bench writes `unet_evaluations.json` (`{"<Class>": count}`, the UNet passes
/// each scheduler's render made) when set; `cargo xtask bench` sets it and prints the counts beside
/// diffusers'.
pub const REPORT_DIR_ENV: &str = "SDXL_BENCH_REPORT_DIR";

/// Criterion's id of the per-scheduler render bench of `class_name`.
pub fn scheduler_bench_id(class_name: &str) -> String {
    format!("schedulers/{class_name}")
}

/// The intra-op thread count `cargo xtask bench` gives every side (criterion's libtorch through
/// `tch::set_num_threads`, diffusers through `torch.set_num_threads`, the cold-start processes
/// through `OMP_NUM_THREADS`), so that the ratios compare equal hardware. Unset: libtorch's
/// default.
pub const THREADS_ENV: &str = "SDXL_BENCH_THREADS";

/// The thread count of [`THREADS_ENV`], if set.
pub fn bench_threads() -> Result<Option<i32>, String> {
    match std::env::var(THREADS_ENV) {
        Ok(value) => value
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("{THREADS_ENV}={value:?} is not a positive thread count")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => Err(format!("{THREADS_ENV}: {error}")),
    }
}
