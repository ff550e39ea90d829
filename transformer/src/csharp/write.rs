//! Writing a [`CsRequest`] back to JSON, as System.Text.Json would: camelCase (the HTTP
//! serializer's web defaults) or PascalCase (`JsonSerializer.Serialize` with no options, the
//! stdin envelope). Absent fields are left out rather than written as `null`; both mean "not set".

use serde_json::{json, Map, Value};

use super::*;

/// Property-name casing of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Casing {
    Camel,
    Pascal,
}

/// The request as a JSON object in the given casing.
pub fn to_json(request: &CsRequest, casing: Casing) -> Value {
    let mut top = Obj::default();
    let m = &request.model;
    top.obj(
        "model",
        Obj::default()
            .s("base", &m.base)
            .s("refiner", &m.refiner)
            .s("vae", &m.vae)
            .s("tokenizer", &m.tokenizer)
            .s("textEncoder", &m.text_encoder)
            .s("textEncoder2", &m.text_encoder2),
    );
    let s = &request.scheduler;
    top.obj(
        "scheduler",
        Obj::default()
            .s("type", &s.kind)
            .i("steps", s.steps)
            .b("snrWeighting", s.snr_weighting)
            .b("useKarrasSigmas", s.use_karras_sigmas)
            .s("timestepSpacing", &s.timestep_spacing)
            .f("guidanceScale", s.guidance_scale),
    );
    let h = &request.hyperparameters;
    let mut hyper = Obj::default()
        .f("guidanceScale", h.guidance_scale)
        .i("seed", h.seed)
        .i("batchSize", h.batch_size)
        .i("width", h.width)
        .i("height", h.height)
        .s("negativePrompt", &h.negative_prompt)
        .s("prompt", &h.prompt);
    match &h.prompt_weighting {
        Some(PromptWeighting::Enabled(b)) => hyper.put("promptWeighting", json!(b)),
        Some(PromptWeighting::Syntax(s)) => hyper.put("promptWeighting", json!(s)),
        None => {}
    }
    top.obj("hyperparameters", hyper);
    let c = &request.conditioning;
    let mut cond = Obj::default()
        .s("prompt", &c.prompt)
        .s("negativePrompt", &c.negative_prompt);
    if let Some(loras) = &c.loras {
        let items = loras
            .iter()
            .map(|l| {
                Obj::default()
                    .s("name", &l.name)
                    .s("modelPath", &l.model_path)
                    .f("scale", l.scale)
                    .f("weight", l.weight)
                    .s("adapterName", &l.adapter_name)
                    .into_value()
            })
            .collect();
        cond.put("loras", Value::Array(items));
    }
    if let Some(units) = &c.control_nets {
        let items = units
            .iter()
            .map(|u| {
                Obj::default()
                    .s("type", &u.kind)
                    .s("modelPath", &u.model_path)
                    .s("image", &u.image)
                    .s("conditioningImage", &u.conditioning_image)
                    .f("weight", u.weight)
                    .f("guidanceStart", u.guidance_start)
                    .f("guidanceEnd", u.guidance_end)
                    .into_value()
            })
            .collect();
        cond.put("controlNets", Value::Array(items));
    }
    if let Some(tis) = &c.textual_inversions {
        let items = tis
            .iter()
            .map(|t| match (&t.token, &t.path) {
                (None, Some(path)) => json!(path),
                _ => Obj::default()
                    .s("token", &t.token)
                    .s("path", &t.path)
                    .into_value(),
            })
            .collect();
        cond.put("textualInversions", Value::Array(items));
    }
    cond = cond
        .s("initImage", &c.init_image)
        .s("inpaintMask", &c.inpaint_mask)
        .i("maskBlur", c.mask_blur)
        .f("img2ImgStrength", c.img2img_strength);
    if let Some(refs) = &c.reference_images {
        cond.put("referenceImages", json!(refs));
    }
    top.obj("conditioning", cond);
    let p = &request.performance;
    let mut perf = Obj::default()
        .s("dtype", &p.dtype)
        .b("xformers", p.xformers)
        .b("attentionSlicing", p.attention_slicing)
        .b("cpuOffload", p.cpu_offload)
        .b("sequentialCpuOffload", p.sequential_cpu_offload)
        .s("device", &p.device);
    if let Some(ids) = &p.device_ids {
        perf.put("deviceIds", json!(ids));
    }
    perf = perf
        .s("compilation", &p.compilation)
        .s("deviceId", &p.device_id)
        .b("enableXformers", p.enable_xformers);
    if let Some(opts) = &p.memory_optimizations {
        perf.put("memoryOptimizations", json!(opts));
    }
    top.obj("performance", perf);
    if let Some(steps) = &request.post_processing_steps {
        let items = steps
            .iter()
            .map(|s| {
                Obj::default()
                    .s("type", &s.kind)
                    .f("factor", s.factor)
                    .s("model", &s.model)
                    .into_value()
            })
            .collect();
        top.put("postprocessing", Value::Array(items));
    } else {
        let pp = &request.postprocessing;
        top.obj(
            "postprocessing",
            Obj::default()
                .s("upscaler", &pp.upscaler)
                .f("upscaleFactor", pp.upscale_factor)
                .s("outputFormat", &pp.output_format)
                .i("quality", pp.quality)
                .b("safetyChecker", pp.safety_checker)
                .b("autoContrast", pp.auto_contrast)
                .b("watermark", pp.watermark),
        );
    }
    let o = &request.output;
    top.obj(
        "output",
        Obj::default()
            .s("format", &o.format)
            .i("quality", o.quality)
            .s("savePath", &o.save_path),
    );
    let value = top.into_value();
    match casing {
        Casing::Camel => value,
        Casing::Pascal => recase(value, &pascal),
    }
}

/// Renames every property of `value`, recursively.
pub fn recase(value: Value, rename: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (rename(&k), recase(v, rename)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| recase(v, rename)).collect()),
        other => other,
    }
}

fn pascal(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A small builder that leaves out absent values and empty sections.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }
    fn s(mut self, key: &str, value: &Option<String>) -> Self {
        if let Some(v) = value {
            self.put(key, json!(v));
        }
        self
    }
    fn i(mut self, key: &str, value: Option<i64>) -> Self {
        if let Some(v) = value {
            self.put(key, json!(v));
        }
        self
    }
    fn f(mut self, key: &str, value: Option<f64>) -> Self {
        if let Some(v) = value {
            self.put(key, json!(v));
        }
        self
    }
    fn b(mut self, key: &str, value: Option<bool>) -> Self {
        if let Some(v) = value {
            self.put(key, json!(v));
        }
        self
    }
    fn obj(&mut self, key: &str, child: Obj) {
        if !child.0.is_empty() {
            self.put(key, Value::Object(child.0));
        }
    }
    fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}
