//! The C# request body read in one pass over each object, for the pass that records nothing
//! (see [`crate::read::Ctx`]): each property name is matched once against the section's field
//! names, instead of each field name being searched for among the properties.
//!
//! It reads what [`super::parse::parse_request`] reads, to the same [`CsRequest`], whenever that
//! reading has no errors and nothing unusual to judge; otherwise it gives up (`None`) and the
//! full reader reads the request. It gives up on a property name that is not ASCII or has a `_`
//! (the full reader's Unicode and underscore-insensitive matching), on two properties naming one
//! field (the full reader's conflict), and on a value of the wrong type (its type error). With
//! ASCII names without `_` on both sides, a field's property is the one whose name equals the
//! field's ignoring ASCII case, the only one once repeats are excluded: the full reader's choice.
//! Debug builds check every result against the full reader.

use super::*;
use crate::json::{Json, Members};

/// The request, or `None`: the full reader reads it.
pub(super) fn request<'v>(members: &'v Members<'v>) -> Option<CsRequest> {
    let mut request = CsRequest::default();
    let mut seen = Seen::default();
    for_each(members, |name, value| {
        match name {
            b"model" => seen
                .first(0)?
                .object(value, |m| model(m, &mut request.model)),
            b"scheduler" => seen
                .first(1)?
                .object(value, |m| scheduler(m, &mut request.scheduler)),
            b"hyperparameters" => seen
                .first(2)?
                .object(value, |m| hyperparameters(m, &mut request.hyperparameters)),
            b"conditioning" => seen
                .first(3)?
                .object(value, |m| conditioning(m, &mut request.conditioning)),
            b"performance" => seen
                .first(4)?
                .object(value, |m| performance(m, &mut request.performance)),
            b"postprocessing" => {
                seen.first(5)?;
                match value {
                    Json::Null => Some(()),
                    // The seed's list of steps.
                    Json::Array(items) => {
                        request.post_processing_steps = Some(objects(items, step)?);
                        Some(())
                    }
                    Json::Object(m) => postprocessing(m, &mut request.postprocessing),
                    _ => None,
                }
            }
            b"output" => seen
                .first(6)?
                .object(value, |m| output(m, &mut request.output)),
            _ => Some(()),
        }
    })?;
    Some(request)
}

fn model<'v>(members: &'v Members<'v>, m: &mut Model) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"base" => seen.first(0)?.string(value, &mut m.base),
        b"refiner" => seen.first(1)?.string(value, &mut m.refiner),
        b"vae" => seen.first(2)?.string(value, &mut m.vae),
        b"tokenizer" => seen.first(3)?.string(value, &mut m.tokenizer),
        b"textencoder" => seen.first(4)?.string(value, &mut m.text_encoder),
        b"textencoder2" => seen.first(5)?.string(value, &mut m.text_encoder2),
        _ => Some(()),
    })
}

fn scheduler<'v>(members: &'v Members<'v>, s: &mut Scheduler) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"type" => seen.first(0)?.string(value, &mut s.kind),
        b"steps" => seen.first(1)?.int(value, &mut s.steps),
        b"snrweighting" => seen.first(2)?.boolean(value, &mut s.snr_weighting),
        b"usekarrassigmas" => seen.first(3)?.boolean(value, &mut s.use_karras_sigmas),
        b"timestepspacing" => seen.first(4)?.string(value, &mut s.timestep_spacing),
        b"guidancescale" => seen.first(5)?.number(value, &mut s.guidance_scale),
        _ => Some(()),
    })
}

fn hyperparameters<'v>(members: &'v Members<'v>, h: &mut Hyperparameters) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"guidancescale" => seen.first(0)?.number(value, &mut h.guidance_scale),
        b"seed" => seen.first(1)?.int(value, &mut h.seed),
        b"batchsize" => seen.first(2)?.int(value, &mut h.batch_size),
        b"width" => seen.first(3)?.int(value, &mut h.width),
        b"height" => seen.first(4)?.int(value, &mut h.height),
        b"negativeprompt" => seen.first(5)?.string(value, &mut h.negative_prompt),
        b"prompt" => seen.first(6)?.string(value, &mut h.prompt),
        b"promptweighting" => {
            seen.first(7)?;
            h.prompt_weighting = match value {
                Json::Null => None,
                Json::Bool(b) => Some(PromptWeighting::Enabled(*b)),
                Json::String(s) => Some(PromptWeighting::Syntax(s.to_string())),
                _ => return None,
            };
            Some(())
        }
        _ => Some(()),
    })
}

fn conditioning<'v>(members: &'v Members<'v>, c: &mut Conditioning) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"prompt" => seen.first(0)?.string(value, &mut c.prompt),
        b"negativeprompt" => seen.first(1)?.string(value, &mut c.negative_prompt),
        b"loras" => seen
            .first(2)?
            .array(value, &mut c.loras, |items| objects(items, lora)),
        b"controlnets" => seen.first(3)?.array(value, &mut c.control_nets, |items| {
            objects(items, control_net)
        }),
        b"textualinversions" => seen
            .first(4)?
            .array(value, &mut c.textual_inversions, |items| {
                items.iter().map(textual_inversion).collect()
            }),
        b"initimage" => seen.first(5)?.string(value, &mut c.init_image),
        b"inpaintmask" => seen.first(6)?.string(value, &mut c.inpaint_mask),
        b"maskblur" => seen.first(7)?.int(value, &mut c.mask_blur),
        b"img2imgstrength" => seen.first(8)?.number(value, &mut c.img2img_strength),
        b"referenceimages" => seen
            .first(9)?
            .array(value, &mut c.reference_images, |items| {
                items.iter().map(string).collect()
            }),
        _ => Some(()),
    })
}

fn performance<'v>(members: &'v Members<'v>, p: &mut Performance) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"dtype" => seen.first(0)?.string(value, &mut p.dtype),
        b"xformers" => seen.first(1)?.boolean(value, &mut p.xformers),
        b"attentionslicing" => seen.first(2)?.boolean(value, &mut p.attention_slicing),
        b"cpuoffload" => seen.first(3)?.boolean(value, &mut p.cpu_offload),
        b"sequentialcpuoffload" => seen.first(4)?.boolean(value, &mut p.sequential_cpu_offload),
        b"device" => seen.first(5)?.string(value, &mut p.device),
        b"deviceids" => seen.first(6)?.array(value, &mut p.device_ids, |items| {
            items.iter().map(int).collect()
        }),
        b"compilation" => seen.first(7)?.string(value, &mut p.compilation),
        b"deviceid" => seen.first(8)?.string(value, &mut p.device_id),
        b"enablexformers" => seen.first(9)?.boolean(value, &mut p.enable_xformers),
        b"memoryoptimizations" => {
            seen.first(10)?
                .array(value, &mut p.memory_optimizations, |items| {
                    items.iter().map(string).collect()
                })
        }
        _ => Some(()),
    })
}

fn postprocessing<'v>(members: &'v Members<'v>, p: &mut Postprocessing) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"upscaler" => seen.first(0)?.string(value, &mut p.upscaler),
        b"upscalefactor" => seen.first(1)?.number(value, &mut p.upscale_factor),
        b"outputformat" => seen.first(2)?.string(value, &mut p.output_format),
        b"quality" => seen.first(3)?.int(value, &mut p.quality),
        b"safetychecker" => seen.first(4)?.boolean(value, &mut p.safety_checker),
        b"autocontrast" => seen.first(5)?.boolean(value, &mut p.auto_contrast),
        b"watermark" => seen.first(6)?.boolean(value, &mut p.watermark),
        _ => Some(()),
    })
}

fn step<'v>(members: &'v Members<'v>) -> Option<PostProcessingStep> {
    let mut s = PostProcessingStep::default();
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"type" => seen.first(0)?.string(value, &mut s.kind),
        b"factor" => seen.first(1)?.number(value, &mut s.factor),
        b"model" => seen.first(2)?.string(value, &mut s.model),
        _ => Some(()),
    })?;
    Some(s)
}

fn output<'v>(members: &'v Members<'v>, o: &mut Output) -> Option<()> {
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"format" => seen.first(0)?.string(value, &mut o.format),
        b"quality" => seen.first(1)?.int(value, &mut o.quality),
        b"savepath" => seen.first(2)?.string(value, &mut o.save_path),
        _ => Some(()),
    })
}

fn lora<'v>(members: &'v Members<'v>) -> Option<Lora> {
    let mut l = Lora::default();
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"name" => seen.first(0)?.string(value, &mut l.name),
        b"modelpath" => seen.first(1)?.string(value, &mut l.model_path),
        b"scale" => seen.first(2)?.number(value, &mut l.scale),
        b"weight" => seen.first(3)?.number(value, &mut l.weight),
        b"adaptername" => seen.first(4)?.string(value, &mut l.adapter_name),
        _ => Some(()),
    })?;
    Some(l)
}

fn control_net<'v>(members: &'v Members<'v>) -> Option<ControlNet> {
    let mut u = ControlNet::default();
    let mut seen = Seen::default();
    for_each(members, |name, value| match name {
        b"type" => seen.first(0)?.string(value, &mut u.kind),
        b"modelpath" => seen.first(1)?.string(value, &mut u.model_path),
        b"image" => seen.first(2)?.string(value, &mut u.image),
        b"conditioningimage" => seen.first(3)?.string(value, &mut u.conditioning_image),
        b"weight" => seen.first(4)?.number(value, &mut u.weight),
        b"guidancestart" => seen.first(5)?.number(value, &mut u.guidance_start),
        b"guidanceend" => seen.first(6)?.number(value, &mut u.guidance_end),
        _ => Some(()),
    })?;
    Some(u)
}

/// A path string, or `{token, path}`.
fn textual_inversion<'v>(value: &'v Json<'v>) -> Option<TextualInversion> {
    match value {
        Json::String(path) => Some(TextualInversion {
            token: None,
            path: Some(path.to_string()),
        }),
        Json::Object(members) => {
            let mut t = TextualInversion::default();
            let mut seen = Seen::default();
            for_each(members, |name, value| match name {
                b"token" => seen.first(0)?.string(value, &mut t.token),
                b"path" => seen.first(1)?.string(value, &mut t.path),
                _ => Some(()),
            })?;
            Some(t)
        }
        _ => None,
    }
}

/// Each property with its name in ASCII lowercase (a name longer than any field's is passed as
/// empty: it names no field); `None` as soon as `f` gives up, or for a name that is not ASCII or
/// has a `_`.
fn for_each<'v>(
    members: &'v Members<'v>,
    mut f: impl FnMut(&[u8], &'v Json<'v>) -> Option<()>,
) -> Option<()> {
    let mut lower = [0u8; 24];
    for (key, value) in members {
        let key = key.as_bytes();
        if !key.is_ascii() || key.contains(&b'_') {
            return None;
        }
        let name = match lower.get_mut(..key.len()) {
            Some(name) => {
                for (l, k) in name.iter_mut().zip(key) {
                    *l = k.to_ascii_lowercase();
                }
                &*name
            }
            None => &[],
        };
        f(name, value)?;
    }
    Some(())
}

/// The fields of one object already given (bit per field).
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// `Some` the first time field `i` is given, `None` after (two properties, one field).
    fn first(&mut self, i: u32) -> Option<Field> {
        let bit = 1 << i;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(Field)
    }
}

/// Reading one field's value: `null` leaves it unset (as absent), a value of the wrong type
/// gives up.
struct Field;

impl Field {
    fn string(self, value: &Json<'_>, to: &mut Option<String>) -> Option<()> {
        if !value.is_null() {
            *to = Some(string(value)?);
        }
        Some(())
    }

    fn int(self, value: &Json<'_>, to: &mut Option<i64>) -> Option<()> {
        if !value.is_null() {
            *to = Some(int(value)?);
        }
        Some(())
    }

    fn number(self, value: &Json<'_>, to: &mut Option<f64>) -> Option<()> {
        match value {
            Json::Null => {}
            // The full reader's `as_number`: a finite f64.
            Json::Number(n) => *to = Some(n.as_f64().filter(|f| f.is_finite())?),
            _ => return None,
        }
        Some(())
    }

    fn boolean(self, value: &Json<'_>, to: &mut Option<bool>) -> Option<()> {
        match value {
            Json::Null => {}
            Json::Bool(b) => *to = Some(*b),
            _ => return None,
        }
        Some(())
    }

    fn object<'v>(
        self,
        value: &'v Json<'v>,
        read: impl FnOnce(&'v Members<'v>) -> Option<()>,
    ) -> Option<()> {
        match value {
            Json::Null => Some(()),
            Json::Object(members) => read(members),
            _ => None,
        }
    }

    fn array<'v, T>(
        self,
        value: &'v Json<'v>,
        to: &mut Option<Vec<T>>,
        read: impl FnOnce(&'v [Json<'v>]) -> Option<Vec<T>>,
    ) -> Option<()> {
        match value {
            Json::Null => {}
            Json::Array(items) => *to = Some(read(items)?),
            _ => return None,
        }
        Some(())
    }
}

/// A string item or value (`null` is a type error here, as in the full reader's arrays).
fn string(value: &Json<'_>) -> Option<String> {
    match value {
        Json::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The full reader's `as_int`: an integer that fits an i64.
fn int(value: &Json<'_>) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Every item an object, read by `read`.
fn objects<'v, T>(
    items: &'v [Json<'v>],
    read: impl Fn(&'v Members<'v>) -> Option<T>,
) -> Option<Vec<T>> {
    items
        .iter()
        .map(|item| match item {
            Json::Object(members) => read(members),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Ctx;

    /// The one-pass reading gives the full reader's request, or leaves it to the full reader;
    /// always the latter when the full reader finds errors.
    fn agrees(text: &str) -> bool {
        let doc = Json::parse(text).unwrap();
        let Json::Object(members) = &doc else {
            panic!("{text}")
        };
        let mut ctx = Ctx::unrecorded();
        let full = super::super::parse::read_request_for_tests(&mut ctx, members);
        match request(members) {
            Some(quick) => {
                assert!(ctx.errors.is_empty(), "{text}: {:?}", ctx.errors);
                assert_eq!(quick, full, "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn one_pass_reading_is_the_full_reading() {
        let read = [
            r#"{"model":{"base":"m","Refiner":"","VAE":null,"tokenizer":"t","textEncoder":"a","textencoder2":"b"}}"#,
            r#"{"Scheduler":{"TYPE":"Euler","steps":30,"snrWeighting":false,"useKarrasSigmas":true,"timestepSpacing":"leading","guidanceScale":7.0}}"#,
            r#"{"hyperparameters":{"guidanceScale":7.5,"seed":-1,"batchSize":2,"width":512,"height":768,"negativePrompt":"n","prompt":"p","promptWeighting":true}}"#,
            r#"{"hyperparameters":{"promptWeighting":"compel"},"unknown":{"x":1},"UNKNOWN2":[1,2]}"#,
            r#"{"hyperparameters":{"promptWeighting":null,"seed":null}}"#,
            r#"{"conditioning":{"prompt":"p","negativePrompt":"","loras":[{"name":"a","scale":0.5,"adapterName":"x"},{"ModelPath":"b","Weight":1}],"controlNets":[{"type":"canny","image":"i","weight":0.5,"guidanceStart":0,"guidanceEnd":1},{"modelPath":"m","conditioningImage":"c"}],"textualInversions":["a.pt",{"token":"<t>","path":"b.pt"}],"initImage":"i","inpaintMask":"m","maskBlur":4,"img2ImgStrength":0.5,"referenceImages":["r1","r2"]}}"#,
            r#"{"conditioning":{"loras":[],"controlNets":null,"textualInversions":[],"referenceImages":[]}}"#,
            r#"{"performance":{"dtype":"fp16","xformers":true,"attentionSlicing":false,"cpuOffload":true,"sequentialCpuOffload":false,"device":"cuda","deviceIds":[0,1],"compilation":"none","deviceId":"0","enableXformers":true,"memoryOptimizations":["vae_slicing"]}}"#,
            r#"{"postprocessing":{"upscaler":"x","upscaleFactor":2,"outputFormat":"PNG","quality":90,"safetyChecker":true,"autoContrast":false,"watermark":false}}"#,
            r#"{"PostProcessing":[{"Type":"Upscale","Factor":2.0,"Model":"R"},{"type":"x"}],"Output":{"Format":"PNG","Quality":95,"SavePath":"o"}}"#,
            r#"{"postprocessing":null,"output":null,"model":null}"#,
            r#"{"model":{"base":"m","aVeryLongPropertyNameThatIsNoField":1,"":2}}"#,
            "{}",
        ];
        for text in read {
            assert!(agrees(text), "left to the full reader: {text}");
        }
        let left = [
            // Two properties for one field, any casing.
            r#"{"model":{"base":"a","Base":"b"}}"#,
            r#"{"model":{"base":"a"},"Model":{"base":"b"}}"#,
            r#"{"model":{"base":null,"BASE":"b"}}"#,
            // Underscores and non-ASCII names: the full reader's matching.
            r#"{"hyperparameters":{"guidance_scale":7}}"#,
            r#"{"hyperparameters":{"unknown_name":7}}"#,
            "{\"model\":{\"bas\u{e9}\":\"m\"}}",
            "{\"model\":{\"\u{212a}ey\":\"m\"}}",
            // Wrong types.
            r#"{"model":"m"}"#,
            r#"{"model":{"base":1}}"#,
            r#"{"scheduler":{"steps":1.5}}"#,
            r#"{"scheduler":{"steps":18446744073709551615}}"#,
            r#"{"scheduler":{"snrWeighting":"yes"}}"#,
            r#"{"hyperparameters":{"promptWeighting":1}}"#,
            r#"{"conditioning":{"loras":{}}}"#,
            r#"{"conditioning":{"loras":[null]}}"#,
            r#"{"conditioning":{"textualInversions":[1]}}"#,
            r#"{"conditioning":{"referenceImages":[null]}}"#,
            r#"{"performance":{"deviceIds":[1.5]}}"#,
            r#"{"postprocessing":1}"#,
            r#"{"postprocessing":["x"]}"#,
        ];
        for text in left {
            assert!(!agrees(text), "read in one pass: {text}");
        }
    }
}
