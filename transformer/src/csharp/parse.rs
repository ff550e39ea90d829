//! Reading any accepted C# message into [`CsMessage`].

use serde_json::Value;

use super::*;
use crate::commands;
use crate::error::FieldError;
use crate::json::Json;
use crate::read::{as_array, as_int, as_string, At, Ctx, Reader};

/// Reads one C# message (dialect detected). Problems go to `ctx`; the result is `None` only when
/// the message's shape could not be recognised at all.
pub fn parse_message(ctx: &mut Ctx, value: &Value) -> Option<CsMessage> {
    parse_document(ctx, &Json::from_value(value))
}

/// [`parse_message`] of a parsed document.
pub(crate) fn parse_document(ctx: &mut Ctx, value: &Json<'_>) -> Option<CsMessage> {
    let Json::Object(members) = value else {
        ctx.error(
            FieldError::new(
                "",
                "type",
                format!(
                    "a C# message is a JSON object, found {}",
                    crate::read::json_type_name(value)
                ),
            )
            .with_value(&value.to_value()),
        );
        return None;
    };
    let mut top = Reader::new(ctx, members, "");
    if top.has("$schema") || (top.has("properties") && top.has("type")) {
        ctx.error(FieldError::new(
            "",
            "dialect",
            "this is a JSON Schema document, not a message (it has `$schema`/`properties`)",
        ));
        return None;
    }
    if top.has("message_type") {
        ctx.error(FieldError::new(
            "",
            "dialect",
            "this is a Python worker message (it has `message_type`), not a C# one; \
             check it with `sdxl-transform validate --schema python-request`",
        ));
        return None;
    }
    if top.has("model_name") || top.has("num_inference_steps") {
        ctx.error(FieldError::new(
            "",
            "dialect",
            "this looks like the `data` object of a Python inference request (it has `model_name`), \
             not a C# message; wrap it as {\"message_type\":\"inference_request\",\"request_id\":…,\"data\":…} \
             and check it with `sdxl-transform validate --schema python-request`",
        ));
        return None;
    }
    let mut locations = Locations::new();
    let record = ctx.record;
    if top.has("action") {
        let message = parse_action(ctx, &mut top, &mut locations);
        top.finish(ctx);
        return message.map(|(dialect, action, session_id, body)| CsMessage {
            dialect,
            action,
            session_id,
            body,
            locations,
        });
    }
    if !SECTIONS.iter().any(|s| top.has(s)) {
        ctx.error(FieldError::new(
            "",
            "dialect",
            "unrecognised message: expected a C# request body (with `model`, `scheduler`, \
             `hyperparameters`, `conditioning`) or an action envelope (with `action`)",
        ));
        return None;
    }
    let request = parse_request(ctx, top, "", &mut locations);
    debug_assert!(record || locations.is_empty());
    Some(CsMessage::http_body(Box::new(request), locations))
}

/// The sections of which an HTTP body has at least one.
pub(super) const SECTIONS: [&str; 4] = ["model", "scheduler", "hyperparameters", "conditioning"];

type ActionParts = (Dialect, Action, Option<String>, Body);

fn parse_action(
    ctx: &mut Ctx,
    top: &mut Reader<'_>,
    locations: &mut Locations,
) -> Option<ActionParts> {
    let (name, name_path) = top.string(ctx, "action")?;
    let Some(command) = commands::by_action_name(&name) else {
        ctx.error(
            FieldError::new(
                name_path,
                "unknown_action",
                format!(
                    "unknown action `{name}`; known actions: {}",
                    commands::action_names().join(", ")
                ),
            )
            .with_value(&Value::String(name.clone())),
        );
        return None;
    };
    let record = ctx.record;
    let session_id = top.string(ctx, "session_id").map(|(s, path)| {
        if record {
            locations.insert("/session_id".into(), path);
        }
        s
    });
    let action = command.id;
    let (dialect, body) = match action {
        Action::GenerateSdxlEnhanced | Action::ValidateRequest => {
            let (dialect, request) = parse_request_payload(ctx, top, locations)?;
            let body = if action == Action::ValidateRequest {
                Body::ValidateRequest(Box::new(request))
            } else {
                Body::Generate(Box::new(request))
            };
            (dialect, body)
        }
        Action::GenerateImage => {
            let Some(params) = top.object_field(ctx, "parameters") else {
                ctx.error(FieldError::new(
                    "/parameters",
                    "required",
                    "`generate_image` needs a `parameters` object",
                ));
                return None;
            };
            (
                Dialect::ActionParameters,
                Body::Generate(Box::new(parse_generate_image(ctx, params, locations))),
            )
        }
        Action::Initialize => {
            let mut fields = command_fields(ctx, top);
            let device_index = int(ctx, &mut fields, "device_index", "/device_index", locations);
            let device_id = string(ctx, &mut fields, "device_id", "/device_id", locations);
            finish_fields(ctx, fields);
            (
                Dialect::Action,
                Body::Initialize {
                    device_index,
                    device_id,
                },
            )
        }
        Action::LoadModel => {
            let mut fields = command_fields(ctx, top);
            let model_path = string(ctx, &mut fields, "model_path", "/model_path", locations);
            let model_type = string(ctx, &mut fields, "model_type", "/model_type", locations);
            let model_id = string(ctx, &mut fields, "model_id", "/model_id", locations);
            finish_fields(ctx, fields);
            (
                Dialect::Action,
                Body::LoadModel {
                    model_path,
                    model_type,
                    model_id,
                },
            )
        }
        Action::UnloadModel => {
            let mut fields = command_fields(ctx, top);
            let model_id = string(ctx, &mut fields, "model_id", "/model_id", locations);
            finish_fields(ctx, fields);
            (Dialect::Action, Body::UnloadModel { model_id })
        }
        Action::GetCapabilities
        | Action::GetStatus
        | Action::GetModelInfo
        | Action::CleanupMemory
        | Action::Stop
        | Action::Shutdown => (Dialect::Action, Body::NoFields),
    };
    Some((dialect, action, session_id, body))
}

/// A command's own fields sit beside `action`, or inside a `parameters` object.
enum Fields<'r, 'a> {
    Top(&'r mut Reader<'a>),
    Nested(Reader<'a>),
}

impl<'a> Fields<'_, 'a> {
    fn reader(&mut self) -> &mut Reader<'a> {
        match self {
            Fields::Top(r) => r,
            Fields::Nested(r) => r,
        }
    }
}

fn command_fields<'r, 'a>(ctx: &mut Ctx, top: &'r mut Reader<'a>) -> Fields<'r, 'a> {
    match top.object_field(ctx, "parameters") {
        Some(nested) => Fields::Nested(nested),
        None => Fields::Top(top),
    }
}

fn finish_fields(ctx: &mut Ctx, fields: Fields<'_, '_>) {
    if let Fields::Nested(reader) = fields {
        reader.finish(ctx);
    }
}

fn int(
    ctx: &mut Ctx,
    fields: &mut Fields<'_, '_>,
    name: &str,
    canonical: &str,
    locations: &mut Locations,
) -> Option<i64> {
    let (value, path) = fields.reader().int(ctx, name)?;
    if ctx.record {
        locations.insert(canonical.into(), path);
    }
    Some(value)
}

fn string(
    ctx: &mut Ctx,
    fields: &mut Fields<'_, '_>,
    name: &str,
    canonical: &str,
    locations: &mut Locations,
) -> Option<String> {
    let (value, path) = fields.reader().string(ctx, name)?;
    if ctx.record {
        locations.insert(canonical.into(), path);
    }
    Some(value)
}

/// `request` or `request_data` (both present: they must be the same object).
fn parse_request_payload(
    ctx: &mut Ctx,
    top: &mut Reader<'_>,
    locations: &mut Locations,
) -> Option<(Dialect, CsRequest)> {
    let request = top.get(ctx, "request");
    let request_data = top.get(ctx, "request_data");
    let (dialect, at) = match (request, request_data) {
        (Some(a), Some(b)) => {
            if a.value != b.value {
                ctx.error(FieldError::new(
                    b.path.clone(),
                    "conflict",
                    format!("both {} and {} are present and differ", a.path, b.path),
                ));
            }
            (Dialect::ActionRequest, a)
        }
        (Some(a), None) => (Dialect::ActionRequest, a),
        (None, Some(b)) => (Dialect::ActionRequestData, b),
        (None, None) => {
            ctx.error(FieldError::new(
                "/request",
                "required",
                "the action needs the C# request in `request` (or `request_data`)",
            ));
            return None;
        }
    };
    let path = at.path.clone();
    let reader = Reader::object(ctx, at)?;
    Some((dialect, parse_request(ctx, reader, &path, locations)))
}

/// Records where a canonical field came from (nothing when the context does not record).
struct Loc<'l> {
    locations: &'l mut Locations,
    canonical_prefix: String,
    record: bool,
}

impl Loc<'_> {
    #[inline]
    fn put<T>(&mut self, name: &str, found: Option<(T, String)>) -> Option<T> {
        let (value, path) = found?;
        if self.record {
            self.locations.insert(self.canonical(name), path);
        }
        Some(value)
    }

    /// [`Loc::put`] for a name that has to be formatted (built only when recording).
    fn put_fmt<T>(
        &mut self,
        name: std::fmt::Arguments<'_>,
        found: Option<(T, String)>,
    ) -> Option<T> {
        let (value, path) = found?;
        if self.record {
            self.locations
                .insert(self.canonical(&name.to_string()), path);
        }
        Some(value)
    }

    /// `prefix/name`, built without the formatting machinery.
    fn canonical(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.canonical_prefix.len() + 1 + name.len());
        key.push_str(&self.canonical_prefix);
        key.push('/');
        key.push_str(name);
        key
    }

    /// Records an array's own location (from its first item's pointer, or nothing when empty).
    fn mark(&mut self, name: &str, items: &[At<'_>]) {
        if !self.record {
            return;
        }
        if let Some(first) = items.first() {
            if let Some(array_path) = first.path.strip_suffix("/0") {
                self.locations
                    .insert(self.canonical(name), array_path.to_string());
            }
        }
    }

    fn sub(&mut self, name: &str) -> Loc<'_> {
        Loc {
            canonical_prefix: if self.record {
                self.canonical(name)
            } else {
                String::new()
            },
            locations: self.locations,
            record: self.record,
        }
    }

    /// [`Loc::sub`] for a name that has to be formatted (built only when recording).
    fn sub_fmt(&mut self, name: std::fmt::Arguments<'_>) -> Loc<'_> {
        Loc {
            canonical_prefix: if self.record {
                self.canonical(&name.to_string())
            } else {
                String::new()
            },
            locations: self.locations,
            record: self.record,
        }
    }
}

/// The C# request body (`EnhancedSDXLRequest`) in any casing and in the seed's shape.
pub(crate) fn parse_request(
    ctx: &mut Ctx,
    top: Reader<'_>,
    _path: &str,
    locations: &mut Locations,
) -> CsRequest {
    if !ctx.record {
        // Nothing to record: the one-pass reading, unless it leaves the request to this one.
        if let Some(request) = super::quick::request(top.members()) {
            #[cfg(debug_assertions)]
            {
                let mut check = Ctx::unrecorded();
                let reader = Reader::new(&check, top.members(), _path);
                let full = read_request(&mut check, reader, &mut Locations::new());
                assert!(check.errors.is_empty(), "{:?}", check.errors);
                assert_eq!(request, full, "the one-pass reading differs");
            }
            return request;
        }
    }
    read_request(ctx, top, locations)
}

/// The full reading of a request object (for the one-pass reading's tests).
#[cfg(test)]
pub(super) fn read_request_for_tests(
    ctx: &mut Ctx,
    members: &crate::json::Members<'_>,
) -> CsRequest {
    let reader = Reader::new(ctx, members, "");
    read_request(ctx, reader, &mut Locations::new())
}

/// [`parse_request`]: each field looked up by name (with its JSON Pointer, when recording).
fn read_request(ctx: &mut Ctx, mut top: Reader<'_>, locations: &mut Locations) -> CsRequest {
    let mut loc = Loc {
        locations,
        canonical_prefix: String::new(),
        record: ctx.record,
    };
    let mut request = CsRequest::default();
    if let Some(mut r) = top.object_field(ctx, "model") {
        let mut l = loc.sub("model");
        let m = &mut request.model;
        m.base = l.put("base", r.string(ctx, "base"));
        m.refiner = l.put("refiner", r.string(ctx, "refiner"));
        m.vae = l.put("vae", r.string(ctx, "vae"));
        m.tokenizer = l.put("tokenizer", r.string(ctx, "tokenizer"));
        m.text_encoder = l.put("textEncoder", r.string(ctx, "textEncoder"));
        m.text_encoder2 = l.put("textEncoder2", r.string(ctx, "textEncoder2"));
        r.finish(ctx);
    }
    if let Some(mut r) = top.object_field(ctx, "scheduler") {
        let mut l = loc.sub("scheduler");
        let s = &mut request.scheduler;
        s.kind = l.put("type", r.string(ctx, "type"));
        s.steps = l.put("steps", r.int(ctx, "steps"));
        s.snr_weighting = l.put("snrWeighting", r.boolean(ctx, "snrWeighting"));
        s.use_karras_sigmas = l.put("useKarrasSigmas", r.boolean(ctx, "useKarrasSigmas"));
        s.timestep_spacing = l.put("timestepSpacing", r.string(ctx, "timestepSpacing"));
        s.guidance_scale = l.put("guidanceScale", r.number(ctx, "guidanceScale"));
        r.finish(ctx);
    }
    if let Some(mut r) = top.object_field(ctx, "hyperparameters") {
        let mut l = loc.sub("hyperparameters");
        let h = &mut request.hyperparameters;
        h.guidance_scale = l.put("guidanceScale", r.number(ctx, "guidanceScale"));
        h.seed = l.put("seed", r.int(ctx, "seed"));
        h.batch_size = l.put("batchSize", r.int(ctx, "batchSize"));
        h.width = l.put("width", r.int(ctx, "width"));
        h.height = l.put("height", r.int(ctx, "height"));
        h.negative_prompt = l.put("negativePrompt", r.string(ctx, "negativePrompt"));
        h.prompt = l.put("prompt", r.string(ctx, "prompt"));
        let weighting = r.get(ctx, "promptWeighting").and_then(|at| {
            let value = match at.value {
                Json::Bool(b) => Some(PromptWeighting::Enabled(*b)),
                Json::String(s) => Some(PromptWeighting::Syntax(s.to_string())),
                other => {
                    ctx.error(crate::read::type_error(
                        &at.path,
                        "a boolean or a syntax name",
                        other,
                    ));
                    None
                }
            };
            value.map(|v| (v, at.path))
        });
        h.prompt_weighting = l.put("promptWeighting", weighting);
        r.finish(ctx);
    }
    if let Some(mut r) = top.object_field(ctx, "conditioning") {
        let mut l = loc.sub("conditioning");
        let c = &mut request.conditioning;
        c.prompt = l.put("prompt", r.string(ctx, "prompt"));
        c.negative_prompt = l.put("negativePrompt", r.string(ctx, "negativePrompt"));
        c.loras = r.array(ctx, "loras").map(|items| {
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    parse_lora(ctx, at, &mut l.sub_fmt(format_args!("loras/{i}")))
                })
                .collect()
        });
        c.control_nets = r.array(ctx, "controlNets").map(|items| {
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    parse_control_net(ctx, at, &mut l.sub_fmt(format_args!("controlNets/{i}")))
                })
                .collect()
        });
        c.textual_inversions = r.array(ctx, "textualInversions").map(|items| {
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    parse_textual_inversion(
                        ctx,
                        at,
                        &mut l.sub_fmt(format_args!("textualInversions/{i}")),
                    )
                })
                .collect()
        });
        c.init_image = l.put("initImage", r.string(ctx, "initImage"));
        c.inpaint_mask = l.put("inpaintMask", r.string(ctx, "inpaintMask"));
        c.mask_blur = l.put("maskBlur", r.int(ctx, "maskBlur"));
        c.img2img_strength = l.put("img2ImgStrength", r.number(ctx, "img2ImgStrength"));
        c.reference_images = r.array(ctx, "referenceImages").map(|items| {
            l.mark("referenceImages", &items);
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    let path = at.path.clone();
                    l.put_fmt(
                        format_args!("referenceImages/{i}"),
                        as_string(ctx, &at).map(|s| (s, path)),
                    )
                })
                .collect()
        });
        r.finish(ctx);
    }
    if let Some(mut r) = top.object_field(ctx, "performance") {
        let mut l = loc.sub("performance");
        let p = &mut request.performance;
        p.dtype = l.put("dtype", r.string(ctx, "dtype"));
        p.xformers = l.put("xformers", r.boolean(ctx, "xformers"));
        p.attention_slicing = l.put("attentionSlicing", r.boolean(ctx, "attentionSlicing"));
        p.cpu_offload = l.put("cpuOffload", r.boolean(ctx, "cpuOffload"));
        p.sequential_cpu_offload = l.put(
            "sequentialCpuOffload",
            r.boolean(ctx, "sequentialCpuOffload"),
        );
        p.device = l.put("device", r.string(ctx, "device"));
        p.device_ids = r.array(ctx, "deviceIds").map(|items| {
            l.mark("deviceIds", &items);
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    let path = at.path.clone();
                    l.put_fmt(
                        format_args!("deviceIds/{i}"),
                        as_int(ctx, &at).map(|n| (n, path)),
                    )
                })
                .collect()
        });
        p.compilation = l.put("compilation", r.string(ctx, "compilation"));
        p.device_id = l.put("deviceId", r.string(ctx, "deviceId"));
        p.enable_xformers = l.put("enableXformers", r.boolean(ctx, "enableXformers"));
        p.memory_optimizations = r.array(ctx, "memoryOptimizations").map(|items| {
            l.mark("memoryOptimizations", &items);
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, at)| {
                    let path = at.path.clone();
                    l.put_fmt(
                        format_args!("memoryOptimizations/{i}"),
                        as_string(ctx, &at).map(|s| (s, path)),
                    )
                })
                .collect()
        });
        r.finish(ctx);
    }
    // `postprocessing` (HTTP, an object) and the seed's `PostProcessing` (a list) are the same
    // name case-insensitively; the JSON type tells them apart.
    if let Some(at) = top.get(ctx, "postprocessing") {
        match at.value {
            Json::Array(_) => {
                let items = as_array(ctx, &at).unwrap_or_default();
                request.post_processing_steps = Some(
                    items
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, at)| {
                            parse_post_step(
                                ctx,
                                at,
                                &mut loc.sub_fmt(format_args!("postprocessing/{i}")),
                            )
                        })
                        .collect(),
                );
            }
            Json::Object(_) => {
                if let Some(mut r) = Reader::object(ctx, at) {
                    let mut l = loc.sub("postprocessing");
                    let p = &mut request.postprocessing;
                    p.upscaler = l.put("upscaler", r.string(ctx, "upscaler"));
                    p.upscale_factor = l.put("upscaleFactor", r.number(ctx, "upscaleFactor"));
                    p.output_format = l.put("outputFormat", r.string(ctx, "outputFormat"));
                    p.quality = l.put("quality", r.int(ctx, "quality"));
                    p.safety_checker = l.put("safetyChecker", r.boolean(ctx, "safetyChecker"));
                    p.auto_contrast = l.put("autoContrast", r.boolean(ctx, "autoContrast"));
                    p.watermark = l.put("watermark", r.boolean(ctx, "watermark"));
                    r.finish(ctx);
                }
            }
            other => ctx.error(crate::read::type_error(
                &at.path,
                "an object (HTTP shape) or an array of steps (seed shape)",
                other,
            )),
        }
    }
    if let Some(mut r) = top.object_field(ctx, "output") {
        let mut l = loc.sub("output");
        let o = &mut request.output;
        o.format = l.put("format", r.string(ctx, "format"));
        o.quality = l.put("quality", r.int(ctx, "quality"));
        o.save_path = l.put("savePath", r.string(ctx, "savePath"));
        r.finish(ctx);
    }
    top.finish(ctx);
    request
}

fn parse_lora(ctx: &mut Ctx, at: At<'_>, l: &mut Loc<'_>) -> Option<Lora> {
    let mut r = Reader::object(ctx, at)?;
    let lora = Lora {
        name: l.put("name", r.string(ctx, "name")),
        model_path: l.put("modelPath", r.string(ctx, "modelPath")),
        scale: l.put("scale", r.number(ctx, "scale")),
        weight: l.put("weight", r.number(ctx, "weight")),
        adapter_name: l.put("adapterName", r.string(ctx, "adapterName")),
    };
    r.finish(ctx);
    Some(lora)
}

fn parse_control_net(ctx: &mut Ctx, at: At<'_>, l: &mut Loc<'_>) -> Option<ControlNet> {
    let mut r = Reader::object(ctx, at)?;
    let unit = ControlNet {
        kind: l.put("type", r.string(ctx, "type")),
        model_path: l.put("modelPath", r.string(ctx, "modelPath")),
        image: l.put("image", r.string(ctx, "image")),
        conditioning_image: l.put("conditioningImage", r.string(ctx, "conditioningImage")),
        weight: l.put("weight", r.number(ctx, "weight")),
        guidance_start: l.put("guidanceStart", r.number(ctx, "guidanceStart")),
        guidance_end: l.put("guidanceEnd", r.number(ctx, "guidanceEnd")),
    };
    r.finish(ctx);
    Some(unit)
}

fn parse_textual_inversion(ctx: &mut Ctx, at: At<'_>, l: &mut Loc<'_>) -> Option<TextualInversion> {
    if let Json::String(path) = at.value {
        return Some(TextualInversion {
            token: None,
            path: l.put("path", Some((path.to_string(), at.path))),
        });
    }
    let mut r = Reader::object(ctx, at)?;
    let ti = TextualInversion {
        token: l.put("token", r.string(ctx, "token")),
        path: l.put("path", r.string(ctx, "path")),
    };
    r.finish(ctx);
    Some(ti)
}

fn parse_post_step(ctx: &mut Ctx, at: At<'_>, l: &mut Loc<'_>) -> Option<PostProcessingStep> {
    let mut r = Reader::object(ctx, at)?;
    let step = PostProcessingStep {
        kind: l.put("type", r.string(ctx, "type")),
        factor: l.put("factor", r.number(ctx, "factor")),
        model: l.put("model", r.string(ctx, "model")),
    };
    r.finish(ctx);
    Some(step)
}

/// `generate_image`'s parameters (snake_case, as C# sends them) and the request fields they fill;
/// also where the mapping points when one is missing.
pub(crate) const GENERATE_IMAGE_PARAMETERS: [(&str, &str); 7] = [
    ("prompt", "/conditioning/prompt"),
    ("negative_prompt", "/conditioning/negativePrompt"),
    ("width", "/hyperparameters/width"),
    ("height", "/hyperparameters/height"),
    ("steps", "/scheduler/steps"),
    ("guidance_scale", "/hyperparameters/guidanceScale"),
    ("seed", "/hyperparameters/seed"),
];

/// `generate_image{parameters:{prompt, negative_prompt, width, height, steps, guidance_scale,
/// seed}}`: read into the same request model, locations pointing into `parameters`.
fn parse_generate_image(ctx: &mut Ctx, mut r: Reader<'_>, locations: &mut Locations) -> CsRequest {
    fn keep<T>(
        record: bool,
        locations: &mut Locations,
        parameter: &str,
        found: Option<(T, String)>,
    ) -> Option<T> {
        let (value, path) = found?;
        if record {
            if let Some((_, canonical)) = GENERATE_IMAGE_PARAMETERS
                .iter()
                .find(|(p, _)| *p == parameter)
            {
                locations.insert((*canonical).to_string(), path);
            }
        }
        Some(value)
    }
    let record = ctx.record;
    let conditioning = Conditioning {
        prompt: keep(record, locations, "prompt", r.string(ctx, "prompt")),
        negative_prompt: keep(
            record,
            locations,
            "negative_prompt",
            r.string(ctx, "negative_prompt"),
        ),
        ..Conditioning::default()
    };
    let hyperparameters = Hyperparameters {
        width: keep(record, locations, "width", r.int(ctx, "width")),
        height: keep(record, locations, "height", r.int(ctx, "height")),
        guidance_scale: keep(
            record,
            locations,
            "guidance_scale",
            r.number(ctx, "guidance_scale"),
        ),
        seed: keep(record, locations, "seed", r.int(ctx, "seed")),
        ..Hyperparameters::default()
    };
    let scheduler = Scheduler {
        steps: keep(record, locations, "steps", r.int(ctx, "steps")),
        ..Scheduler::default()
    };
    r.finish(ctx);
    CsRequest {
        conditioning,
        hyperparameters,
        scheduler,
        ..CsRequest::default()
    }
}
