//! The per-image generators draw exactly what `torch.Generator().manual_seed(s)` +
//! `torch.randn(shape, generator=g)` draw, interleaved across generators (PROTOCOL B.8).

mod util;

use reference_worker::Generator;
use tch::Kind;

/// Draws in this order: (generator index, shape). Sizes below and above 16 elements, because
/// PyTorch's CPU normal sampler takes a different path for 16 or more values.
const DRAWS: &[(usize, &[i64])] = &[
    (0, &[1, 4, 8, 8]),
    (1, &[1, 4, 8, 8]),
    (0, &[3]),
    (1, &[7, 3]),
    (0, &[2, 17]),
    (1, &[1]),
    (0, &[5]),
];
const SEEDS: [u64; 2] = [42, 2_147_483_647];

/// The draws above, done by PyTorch itself, as the f32 bit patterns of each tensor.
const PYTHON_DRAWS: &str = r#"
import json, sys, torch
seeds = json.loads(sys.argv[1]); draws = json.loads(sys.argv[2]); dtype = getattr(torch, sys.argv[3])
generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
out = []
for index, shape in draws:
    t = torch.randn(shape, generator=generators[index], dtype=dtype)
    out.append(t.float().flatten().view(torch.int32).tolist())
print(json.dumps(out))
"#;

fn python_draws(seeds: &[u64], dtype: &str) -> Vec<Vec<i32>> {
    let draws: Vec<(usize, Vec<i64>)> = DRAWS.iter().map(|(i, s)| (*i, s.to_vec())).collect();
    let stdout = util::python(
        PYTHON_DRAWS,
        &[
            &serde_json::to_string(seeds).unwrap(),
            &serde_json::to_string(&draws).unwrap(),
            dtype,
        ],
    );
    serde_json::from_str(stdout.trim()).expect("python printed a JSON list of lists")
}

fn bits(tensor: &tch::Tensor) -> Vec<i32> {
    let flat = tensor.to_kind(Kind::Float).flatten(0, -1);
    let values = Vec::<f32>::try_from(&flat).expect("an f32 tensor converts to Vec<f32>");
    values.iter().map(|value| value.to_bits() as i32).collect()
}

fn rust_draws(seeds: &[u64], kind: Kind) -> Vec<Vec<i32>> {
    let mut generators: Vec<Generator> = seeds
        .iter()
        .map(|&seed| Generator::new(seed).expect("generator"))
        .collect();
    DRAWS
        .iter()
        .map(|(index, shape)| {
            let tensor = generators[*index].f_randn(shape, kind).expect("randn");
            assert_eq!(tensor.size(), shape.to_vec());
            assert_eq!(tensor.kind(), kind);
            bits(&tensor)
        })
        .collect()
}

#[test]
fn interleaved_generators_match_pytorch_f32() {
    let expected = python_draws(&SEEDS, "float32");
    let actual = rust_draws(&SEEDS, Kind::Float);
    assert_eq!(actual.len(), DRAWS.len());
    for (draw, (actual, expected)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(actual, expected, "draw {draw} {:?} differs", DRAWS[draw]);
    }
}

#[test]
fn interleaved_generators_match_pytorch_bf16() {
    let expected = python_draws(&SEEDS, "bfloat16");
    let actual = rust_draws(&SEEDS, Kind::BFloat16);
    assert_eq!(actual, expected);
}

#[test]
fn large_seeds_match_pytorch() {
    let seeds = [0, u64::MAX - 1];
    assert_eq!(
        rust_draws(&seeds, Kind::Float),
        python_draws(&seeds, "float32")
    );
}

#[test]
fn randn_is_f32_and_independent_of_other_generators() {
    let mut alone = Generator::new(7).unwrap();
    let expected = alone.randn(&[2, 3]);
    let mut first = Generator::new(7).unwrap();
    let mut other = Generator::new(7).unwrap();
    let _ = other.randn(&[100]);
    let actual = first.randn(&[2, 3]);
    assert_eq!(actual.kind(), Kind::Float);
    assert_eq!(bits(&actual), bits(&expected));
    assert_eq!(first.seed(), 7);
}

#[test]
fn invalid_draws_are_errors_not_crashes() {
    let mut generator = Generator::new(1).unwrap();
    let negative = generator.f_randn(&[2, -1], Kind::Float).unwrap_err();
    assert!(
        negative.to_string().contains("negative dimension -1"),
        "{negative}"
    );
    let integer = generator.f_randn(&[2], Kind::Int64).unwrap_err();
    assert!(
        integer.to_string().contains("not a floating kind"),
        "{integer}"
    );
}
