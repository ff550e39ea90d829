//! AutoencoderKL against diffusers 0.42.1 on the tiny fixture (fixtures/oracle/
//! dump_vae_scheduler.py): decode outputs, the uint8 images postprocess makes of them, and the
//! encoder's posterior, bit for bit.

mod oracle_dump;

use oracle_dump::{assert_identical, dump_dir, manifest, tiny_sdxl, Dump};
use reference_worker::image::postprocess;
use reference_worker::vae::AutoencoderKL;
use reference_worker::{Error, Generator};
use tch::{Kind, Tensor};

fn vae() -> AutoencoderKL {
    AutoencoderKL::load(&tiny_sdxl().join("vae")).expect("the tiny VAE loads")
}

#[test]
fn oracle_used_the_attention_processor_we_reproduce() {
    let dir = dump_dir("vae");
    assert_eq!(
        manifest(dir)["vae"]["attn_processors"],
        serde_json::json!(["AttnProcessor2_0"])
    );
}

#[test]
fn decode_matches_diffusers_and_postprocess_gives_the_same_pixels() {
    let dir = dump_dir("vae");
    let vae = vae();
    let cases = manifest(dir)["vae"]["decode"].clone();
    let cases = cases.as_array().expect("a case list");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case.as_str().expect("a case name");
        let expected = Dump::read(dir, name);
        let decoded = vae.decode(expected.get("latents")).expect("decode");
        assert_identical(
            &decoded,
            expected.get("decoded"),
            &format!("{name}: decode"),
        );

        let images = postprocess(&decoded).expect("postprocess");
        let pixels = expected.get("pixels");
        assert_eq!(images.len() as i64, pixels.size()[0], "{name}: batch");
        for (index, image) in images.iter().enumerate() {
            let ours = Tensor::from_slice(&image.pixels).view([
                i64::from(image.height),
                i64::from(image.width),
                3,
            ]);
            assert_identical(
                &ours,
                &pixels.get(index as i64),
                &format!("{name}: uint8 image {index}"),
            );
        }
    }
}

#[test]
fn encode_matches_diffusers() {
    let dir = dump_dir("vae");
    let expected = Dump::read(dir, "encode");
    let vae = vae();
    let posterior = vae.encode(expected.get("image")).expect("encode");
    assert_identical(&posterior.mean, expected.get("mean"), "encode: mean");
    assert_identical(&posterior.logvar, expected.get("logvar"), "encode: logvar");
    assert_identical(&posterior.std, expected.get("std"), "encode: std");
    assert_identical(&posterior.mode(), expected.get("mean"), "encode: mode");

    let mut per_image = vec![Generator::new(7).unwrap(), Generator::new(8).unwrap()];
    let sample = posterior.sample(&mut per_image).expect("sample");
    assert_identical(
        &sample,
        expected.get("sample_seeds_7_8"),
        "encode: sample, one generator per image",
    );
    let mut single = vec![Generator::new(9).unwrap()];
    let sample = posterior.sample(&mut single).expect("sample");
    assert_identical(
        &sample,
        expected.get("sample_seed_9"),
        "encode: sample, one generator",
    );
    let mut three = vec![
        Generator::new(1).unwrap(),
        Generator::new(2).unwrap(),
        Generator::new(3).unwrap(),
    ];
    assert!(
        posterior.sample(&mut three).is_err(),
        "3 generators for a batch of 2"
    );
}

#[test]
fn wrong_inputs_are_errors_that_name_the_input() {
    let vae = vae();
    let three_channels = Tensor::zeros([1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let error = vae.decode(&three_channels).expect_err("3-channel latents");
    assert!(
        matches!(
            error,
            Error::BadInput {
                input: "latents",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("4 channels"), "{error}");
    let flat = Tensor::zeros([4, 8, 8], (Kind::Float, tch::Device::Cpu));
    assert!(vae.decode(&flat).is_err());
    let half = Tensor::zeros([1, 4, 8, 8], (Kind::Half, tch::Device::Cpu));
    assert!(vae.decode(&half).is_err());
    let error = vae
        .encode(&Tensor::zeros(
            [1, 4, 16, 16],
            (Kind::Float, tch::Device::Cpu),
        ))
        .expect_err("4-channel image");
    assert!(error.to_string().contains("image"), "{error}");
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let source = tiny_sdxl().join("vae");
    std::fs::copy(
        source.join("diffusion_pytorch_model.safetensors"),
        temp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(source.join("config.json")).unwrap();

    // One layer more per block than the weights have.
    let more_layers = config.replace("\"layers_per_block\": 2", "\"layers_per_block\": 3");
    assert_ne!(more_layers, config);
    std::fs::write(temp.path().join("config.json"), &more_layers).unwrap();
    let error = AutoencoderKL::load(temp.path()).expect_err("missing resnets");
    assert!(matches!(error, Error::MissingTensor { .. }), "{error:?}");

    // No attention in the mid block: the weights hold attention tensors nobody uses.
    let no_attention = config.replace(
        "\"mid_block_add_attention\": true",
        "\"mid_block_add_attention\": false",
    );
    assert_ne!(no_attention, config);
    std::fs::write(temp.path().join("config.json"), &no_attention).unwrap();
    let error = AutoencoderKL::load(temp.path()).expect_err("unused attention weights");
    assert!(matches!(error, Error::UnusedTensors { .. }), "{error:?}");

    // An unsupported block type names the key.
    let attn_blocks = config.replacen("\"DownEncoderBlock2D\"", "\"AttnDownEncoderBlock2D\"", 1);
    std::fs::write(temp.path().join("config.json"), &attn_blocks).unwrap();
    let error = AutoencoderKL::load(temp.path()).expect_err("unsupported block");
    assert!(error.to_string().contains("down_block_types"), "{error}");

    // Groups that do not divide the channels.
    let groups = config.replace("\"norm_num_groups\": 16", "\"norm_num_groups\": 12");
    assert_ne!(groups, config);
    std::fs::write(temp.path().join("config.json"), &groups).unwrap();
    let error = AutoencoderKL::load(temp.path()).expect_err("bad groups");
    assert!(error.to_string().contains("norm_num_groups"), "{error}");
}
