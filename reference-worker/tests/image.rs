//! Post-processing to PNG against diffusers' `VaeImageProcessor.postprocess(output_type="pil")`:
//! identical uint8 pixels, and PNG files that PIL reads back as those pixels.

mod oracle_dump;

use oracle_dump::{assert_identical, dump_dir, manifest, project_root, Dump};
use reference_worker::image::{encode_png, postprocess, save_png, RgbImage};
use reference_worker::Error;
use tch::{Kind, Tensor};

fn as_tensor(image: &RgbImage) -> Tensor {
    Tensor::from_slice(&image.pixels).view([i64::from(image.height), i64::from(image.width), 3])
}

#[test]
fn postprocess_gives_the_pixels_pil_holds() {
    let dir = dump_dir("image");
    assert_eq!(manifest(dir)["image"]["mode"], "RGB");
    let expected = Dump::read(dir, "postprocess");
    let images = postprocess(expected.get("decoded")).expect("postprocess");
    let pixels = expected.get("pixels");
    assert_eq!(images.len(), 2);
    for (index, image) in images.iter().enumerate() {
        assert_eq!((image.width, image.height), (40, 24));
        assert_identical(
            &as_tensor(image),
            &pixels.get(index as i64),
            &format!("image {index}"),
        );
    }
}

#[test]
fn png_files_decode_to_the_same_pixels_in_pil() {
    let dir = dump_dir("image");
    let expected = Dump::read(dir, "postprocess");
    let images = postprocess(expected.get("decoded")).expect("postprocess");
    let out = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (index, image) in images.iter().enumerate() {
        let path = out.path().join(format!("image_{index}.png"));
        save_png(image, &path).expect("save_png");
        assert_eq!(std::fs::read(&path).unwrap(), encode_png(image).unwrap());
        // Our own decoder agrees.
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        assert_eq!(&buffer[..info.buffer_size()], image.pixels.as_slice());
        paths.push(path);
    }
    // And PIL, which is what the Python workers hand on, reads the same pixels.
    let python = project_root().join(".venv/bin/python");
    let code = "import sys, numpy as np\nfrom PIL import Image\n\
                for path, raw in zip(sys.argv[1::2], sys.argv[2::2]):\n\
                \x20   image = Image.open(path)\n\
                \x20   assert image.mode == 'RGB', image.mode\n\
                \x20   got = np.array(image).tobytes()\n\
                \x20   want = open(raw, 'rb').read()\n\
                \x20   assert got == want, path\n\
                print('ok')\n";
    let mut args = Vec::new();
    for (index, (image, path)) in images.iter().zip(&paths).enumerate() {
        let raw = out.path().join(format!("image_{index}.raw"));
        std::fs::write(&raw, &image.pixels).unwrap();
        args.push(path.display().to_string());
        args.push(raw.display().to_string());
    }
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(code)
        .args(&args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "PIL disagrees:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rounding_is_numpy_half_to_even_in_float32() {
    // 0.5/255 and 1.5/255 as float32 land exactly on ties after * 255 only sometimes; whatever
    // they land on, NumPy's float32 product rounded half to even is the reference.
    let values = [
        0.0f32,
        1.0,
        0.5 / 255.0,
        1.5 / 255.0,
        2.5 / 255.0,
        0.999,
        1e-9,
    ];
    let decoded = Tensor::from_slice(&values)
        .f_mul_scalar(2.0)
        .unwrap()
        .f_sub_scalar(1.0)
        .unwrap();
    let n = values.len() as i64;
    let image = decoded
        .view([1, 1, 1, n])
        .expand([1, 3, 1, n], false)
        .contiguous();
    let images = postprocess(&image).unwrap();
    let reds: Vec<u8> = images[0].pixels.chunks(3).map(|p| p[0]).collect();
    let expected: Vec<u8> = Vec::<f32>::try_from(
        &decoded
            .f_mul_scalar(0.5)
            .unwrap()
            .f_add_scalar(0.5)
            .unwrap()
            .clamp(0, 1),
    )
    .unwrap()
    .into_iter()
    .map(|v| (v * 255.0).round_ties_even() as u8)
    .collect();
    assert_eq!(reds, expected);
    assert_eq!(reds[0], 0);
    assert_eq!(reds[1], 255);
}

#[test]
fn unwritable_path_names_the_file() {
    let image = RgbImage {
        width: 2,
        height: 1,
        pixels: vec![0, 1, 2, 3, 4, 5],
    };
    let path = std::path::Path::new("/nonexistent-dir/for/sure/out.png");
    let error = save_png(&image, path).expect_err("an unwritable path");
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("/nonexistent-dir/for/sure/out.png"),
        "{error}"
    );

    let broken = RgbImage {
        width: 4,
        height: 4,
        pixels: vec![0; 5],
    };
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("broken.png");
    let error = save_png(&broken, &path).expect_err("too few pixels");
    assert!(error.to_string().contains("broken.png"), "{error}");
}

#[test]
fn wrong_shapes_are_errors() {
    let gray = Tensor::zeros([1, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
    assert!(postprocess(&gray).is_err());
    let flat = Tensor::zeros([3, 4, 4], (Kind::Float, tch::Device::Cpu));
    assert!(postprocess(&flat).is_err());
}
