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
//!
//! The same reading runs over a parsed document ([`request`]) or straight over the text
//! ([`http_body`]: a [`Pull`] reader, no document built), written once against [`Source`].

use serde_json::Number;

use super::*;
use crate::json::{Json, Members, Next, Pull};

/// The request, or `None`: the full reader reads it.
pub(super) fn request<'v>(members: &'v Members<'v>) -> Option<CsRequest> {
    let mut request = CsRequest::default();
    let mut seen = Seen::default();
    fields(&mut Node::Members(members), |name, value| {
        section(&mut request, &mut seen, name, value)
    })?;
    Some(request)
}

/// The whole text as an HTTP body ([`Dialect::HttpBody`]), read without building its document:
/// the request and the text's [`crate::json::content_hash`] (what
/// [`crate::json::Json::parse_hashed`] gives). `None` for anything that is not plainly an HTTP
/// body read as [`request`] reads it: the caller then parses the document and reads it fully.
pub(crate) fn http_body(text: &str) -> Option<(Box<CsRequest>, u64)> {
    let mut pull = Pull::new(text);
    // Built where it stays (it is large).
    let mut request = Box::<CsRequest>::default();
    let mut seen = Seen::default();
    let mut body = false;
    fields(&mut pull, |name, value| match name {
        // What `parse_document` judges before reading a body (names compared ignoring case and
        // underscores): a JSON Schema, a Python message or its `data`, an action envelope.
        b"$schema" | b"properties" | b"type" | b"messagetype" | b"modelname"
        | b"numinferencesteps" | b"action" => None,
        _ => {
            body |= super::parse::SECTIONS.iter().any(|s| s.as_bytes() == name);
            section(&mut request, &mut seen, name, value)
        }
    })?;
    let hash = pull.finish()?;
    if !body {
        return None;
    }
    #[cfg(debug_assertions)]
    same_as_the_document(text, &request, hash);
    Some((request, hash))
}

/// What parsing `text` and reading its document gives: the same request from an HTTP body, and
/// the same hash of its compact text.
#[cfg(debug_assertions)]
fn same_as_the_document(text: &str, request: &CsRequest, hash: u64) {
    let (document, document_hash) = Json::parse_hashed(text).expect("read in one pass: parses");
    let document_hash = document_hash.unwrap_or_else(|| crate::json::content_hash(&document));
    assert_eq!(hash, document_hash, "the one-pass hash differs: {text}");
    let mut ctx = crate::read::Ctx::unrecorded();
    let message = super::parse::parse_document(&mut ctx, &document);
    assert!(ctx.errors.is_empty(), "{:?}", ctx.errors);
    let message = message.expect("read in one pass: a message");
    assert_eq!(message.dialect, Dialect::HttpBody);
    assert_eq!(
        message.body,
        Body::Generate(Box::new(request.clone())),
        "the one-pass reading differs: {text}"
    );
}

/// One property of the request object.
fn section<S: Source>(
    request: &mut CsRequest,
    seen: &mut Seen,
    name: &[u8],
    value: &mut S,
) -> Option<()> {
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
            match value.next()? {
                Next::Null => value.null().then_some(()),
                // The seed's list of steps.
                Next::Array => {
                    request.post_processing_steps = Some(objects(value, step)?);
                    Some(())
                }
                Next::Object => postprocessing(value, &mut request.postprocessing),
                _ => None,
            }
        }
        b"output" => seen
            .first(6)?
            .object(value, |m| output(m, &mut request.output)),
        _ => Some(()),
    }
}

fn model<S: Source>(value: &mut S, m: &mut Model) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"base" => seen.first(0)?.string(value, &mut m.base),
        b"refiner" => seen.first(1)?.string(value, &mut m.refiner),
        b"vae" => seen.first(2)?.string(value, &mut m.vae),
        b"tokenizer" => seen.first(3)?.string(value, &mut m.tokenizer),
        b"textencoder" => seen.first(4)?.string(value, &mut m.text_encoder),
        b"textencoder2" => seen.first(5)?.string(value, &mut m.text_encoder2),
        _ => Some(()),
    })
}

fn scheduler<S: Source>(value: &mut S, s: &mut Scheduler) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"type" => seen.first(0)?.string(value, &mut s.kind),
        b"steps" => seen.first(1)?.int(value, &mut s.steps),
        b"snrweighting" => seen.first(2)?.boolean(value, &mut s.snr_weighting),
        b"usekarrassigmas" => seen.first(3)?.boolean(value, &mut s.use_karras_sigmas),
        b"timestepspacing" => seen.first(4)?.string(value, &mut s.timestep_spacing),
        b"guidancescale" => seen.first(5)?.number(value, &mut s.guidance_scale),
        _ => Some(()),
    })
}

fn hyperparameters<S: Source>(value: &mut S, h: &mut Hyperparameters) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"guidancescale" => seen.first(0)?.number(value, &mut h.guidance_scale),
        b"seed" => seen.first(1)?.int(value, &mut h.seed),
        b"batchsize" => seen.first(2)?.int(value, &mut h.batch_size),
        b"width" => seen.first(3)?.int(value, &mut h.width),
        b"height" => seen.first(4)?.int(value, &mut h.height),
        b"negativeprompt" => seen.first(5)?.string(value, &mut h.negative_prompt),
        b"prompt" => seen.first(6)?.string(value, &mut h.prompt),
        b"promptweighting" => {
            seen.first(7)?;
            h.prompt_weighting = match value.next()? {
                Next::Null => value.null().then_some(None)?,
                Next::Bool => Some(PromptWeighting::Enabled(value.boolean()?)),
                Next::String => Some(PromptWeighting::Syntax(value.string()?)),
                _ => return None,
            };
            Some(())
        }
        _ => Some(()),
    })
}

fn conditioning<S: Source>(value: &mut S, c: &mut Conditioning) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
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
                each(items, textual_inversion)
            }),
        b"initimage" => seen.first(5)?.string(value, &mut c.init_image),
        b"inpaintmask" => seen.first(6)?.string(value, &mut c.inpaint_mask),
        b"maskblur" => seen.first(7)?.int(value, &mut c.mask_blur),
        b"img2imgstrength" => seen.first(8)?.number(value, &mut c.img2img_strength),
        b"referenceimages" => seen
            .first(9)?
            .array(value, &mut c.reference_images, |items| {
                each(items, S::string)
            }),
        _ => Some(()),
    })
}

fn performance<S: Source>(value: &mut S, p: &mut Performance) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"dtype" => seen.first(0)?.string(value, &mut p.dtype),
        b"xformers" => seen.first(1)?.boolean(value, &mut p.xformers),
        b"attentionslicing" => seen.first(2)?.boolean(value, &mut p.attention_slicing),
        b"cpuoffload" => seen.first(3)?.boolean(value, &mut p.cpu_offload),
        b"sequentialcpuoffload" => seen.first(4)?.boolean(value, &mut p.sequential_cpu_offload),
        b"device" => seen.first(5)?.string(value, &mut p.device),
        b"deviceids" => seen
            .first(6)?
            .array(value, &mut p.device_ids, |items| each(items, int)),
        b"compilation" => seen.first(7)?.string(value, &mut p.compilation),
        b"deviceid" => seen.first(8)?.string(value, &mut p.device_id),
        b"enablexformers" => seen.first(9)?.boolean(value, &mut p.enable_xformers),
        b"memoryoptimizations" => {
            seen.first(10)?
                .array(value, &mut p.memory_optimizations, |items| {
                    each(items, S::string)
                })
        }
        _ => Some(()),
    })
}

fn postprocessing<S: Source>(value: &mut S, p: &mut Postprocessing) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
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

fn step<S: Source>(value: &mut S) -> Option<PostProcessingStep> {
    let mut s = PostProcessingStep::default();
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"type" => seen.first(0)?.string(value, &mut s.kind),
        b"factor" => seen.first(1)?.number(value, &mut s.factor),
        b"model" => seen.first(2)?.string(value, &mut s.model),
        _ => Some(()),
    })?;
    Some(s)
}

fn output<S: Source>(value: &mut S, o: &mut Output) -> Option<()> {
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"format" => seen.first(0)?.string(value, &mut o.format),
        b"quality" => seen.first(1)?.int(value, &mut o.quality),
        b"savepath" => seen.first(2)?.string(value, &mut o.save_path),
        _ => Some(()),
    })
}

fn lora<S: Source>(value: &mut S) -> Option<Lora> {
    let mut l = Lora::default();
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
        b"name" => seen.first(0)?.string(value, &mut l.name),
        b"modelpath" => seen.first(1)?.string(value, &mut l.model_path),
        b"scale" => seen.first(2)?.number(value, &mut l.scale),
        b"weight" => seen.first(3)?.number(value, &mut l.weight),
        b"adaptername" => seen.first(4)?.string(value, &mut l.adapter_name),
        _ => Some(()),
    })?;
    Some(l)
}

fn control_net<S: Source>(value: &mut S) -> Option<ControlNet> {
    let mut u = ControlNet::default();
    let mut seen = Seen::default();
    fields(value, |name, value| match name {
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
fn textual_inversion<S: Source>(value: &mut S) -> Option<TextualInversion> {
    match value.next()? {
        Next::String => Some(TextualInversion {
            token: None,
            path: Some(value.string()?),
        }),
        Next::Object => {
            let mut t = TextualInversion::default();
            let mut seen = Seen::default();
            fields(value, |name, value| match name {
                b"token" => seen.first(0)?.string(value, &mut t.token),
                b"path" => seen.first(1)?.string(value, &mut t.path),
                _ => Some(()),
            })?;
            Some(t)
        }
        _ => None,
    }
}

/// A value being read: a node of a parsed document, or the next value of a [`Pull`] reader.
/// Each method reads the value when it is of its type and gives `None` (nothing read)
/// otherwise; a value left unread by a member's or element's reader is skipped.
trait Source {
    fn next(&self) -> Option<Next>;
    /// Reads a `null` (false: the value is not one).
    fn null(&mut self) -> bool;
    fn boolean(&mut self) -> Option<bool>;
    fn number(&mut self) -> Option<Number>;
    fn string(&mut self) -> Option<String>;
    /// Each member's key and value, in document order; `None` when not an object.
    fn members(&mut self, read: impl FnMut(&str, &mut Self) -> Option<()>) -> Option<()>;
    /// Each element; `None` when not an array.
    fn elements(&mut self, read: impl FnMut(&mut Self) -> Option<()>) -> Option<()>;
}

impl Source for Pull<'_> {
    fn next(&self) -> Option<Next> {
        Pull::next(self)
    }
    fn null(&mut self) -> bool {
        Pull::null(self)
    }
    fn boolean(&mut self) -> Option<bool> {
        Pull::boolean(self)
    }
    fn number(&mut self) -> Option<Number> {
        Pull::number(self)
    }
    fn string(&mut self) -> Option<String> {
        Pull::string(self).map(|s| s.into_owned())
    }
    fn members(&mut self, read: impl FnMut(&str, &mut Self) -> Option<()>) -> Option<()> {
        self.object(read)
    }
    fn elements(&mut self, read: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.array(read)
    }
}

/// A node of a parsed document (the request object given as its members).
enum Node<'v> {
    Value(&'v Json<'v>),
    Members(&'v Members<'v>),
}

impl<'v> Node<'v> {
    fn value(&self) -> Option<&'v Json<'v>> {
        match self {
            Node::Value(value) => Some(value),
            Node::Members(_) => None,
        }
    }
}

impl Source for Node<'_> {
    fn next(&self) -> Option<Next> {
        Some(match self.value() {
            Some(Json::Null) => Next::Null,
            Some(Json::Bool(_)) => Next::Bool,
            Some(Json::Number(_)) => Next::Number,
            Some(Json::String(_)) => Next::String,
            Some(Json::Array(_)) => Next::Array,
            Some(Json::Object(_)) | None => Next::Object,
        })
    }
    fn null(&mut self) -> bool {
        matches!(self.value(), Some(Json::Null))
    }
    fn boolean(&mut self) -> Option<bool> {
        match self.value()? {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn number(&mut self) -> Option<Number> {
        match self.value()? {
            Json::Number(n) => Some(n.clone()),
            _ => None,
        }
    }
    fn string(&mut self) -> Option<String> {
        match self.value()? {
            Json::String(s) => Some(s.to_string()),
            _ => None,
        }
    }
    fn members(&mut self, mut read: impl FnMut(&str, &mut Self) -> Option<()>) -> Option<()> {
        let members = match self {
            Node::Members(members) => *members,
            Node::Value(Json::Object(members)) => members,
            Node::Value(_) => return None,
        };
        members
            .iter()
            .try_for_each(|(key, value)| read(key, &mut Node::Value(value)))
    }
    fn elements(&mut self, mut read: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        match self.value()? {
            Json::Array(items) => items
                .iter()
                .try_for_each(|item| read(&mut Node::Value(item))),
            _ => None,
        }
    }
}

/// Each property with its name in ASCII lowercase (a name longer than any field's is passed as
/// empty: it names no field); `None` when the value is not an object, as soon as `f` gives up,
/// or for a name that is not ASCII or has a `_`.
fn fields<S: Source>(value: &mut S, mut f: impl FnMut(&[u8], &mut S) -> Option<()>) -> Option<()> {
    value.members(|key, value| {
        let name = Lowered::new(key.as_bytes())?;
        f(name.as_bytes(), value)
    })
}

/// A property name in ASCII lowercase; a name longer than any field's is kept empty.
struct Lowered {
    bytes: [u8; Lowered::MAX],
    len: usize,
}

impl Lowered {
    /// Longer than every field's name.
    const MAX: usize = 24;

    /// Eight bytes at a time: ASCII (no high bit), no `_`, `A`–`Z` to `a`–`z`; `None` for a key
    /// that is not ASCII or has a `_`. The words are read from the key itself (not from a
    /// padded copy, which would be read back before its bytes are stored).
    #[inline(always)]
    fn new(key: &[u8]) -> Option<Lowered> {
        use crate::json::swar::{bytes_equal, HIGHS, ONES};
        let mut bytes = [0u8; Lowered::MAX];
        if key.len() > Lowered::MAX {
            return (key.is_ascii() && !key.contains(&b'_')).then_some(Lowered { bytes, len: 0 });
        }
        for (i, word) in bytes.chunks_exact_mut(8).enumerate() {
            let v = word_at(key, 8 * i);
            if v & HIGHS != 0 || bytes_equal(v, b'_') != 0 {
                return None;
            }
            // With every byte below 0x80 no sum carries into the next byte: the high bit of
            // `b + 0x80 - x` is set when `b >= x`.
            let upper = (v + ONES * (0x80 - u64::from(b'A')))
                & !(v + ONES * (0x80 - u64::from(b'Z') - 1))
                & HIGHS;
            word.copy_from_slice(&(v | (upper >> 2)).to_le_bytes());
        }
        Some(Lowered {
            bytes,
            len: key.len(),
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Bytes `at..at + 8` of `key` as a little-endian word, zero past its end.
#[inline(always)]
fn word_at(key: &[u8], at: usize) -> u64 {
    let rest = key.get(at..).unwrap_or_default();
    if let Some(word) = rest.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    let len = rest.len();
    let u32_at = |i: usize| {
        u64::from(u32::from_le_bytes([
            rest[i],
            rest[i + 1],
            rest[i + 2],
            rest[i + 3],
        ]))
    };
    match len {
        // Two loads that overlap: the same bytes where they do.
        4..=7 => u32_at(0) | u32_at(len - 4) << (8 * (len - 4)),
        1..=3 => {
            u64::from(rest[0])
                | u64::from(rest[len / 2]) << (8 * (len / 2))
                | u64::from(rest[len - 1]) << (8 * (len - 1))
        }
        _ => 0,
    }
}

/// The fields of one object already given (bit per field). Every field is read through it,
/// which is what lets [`Pull::object`] look for repeated keys only among the members left.
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
    fn string<S: Source>(self, value: &mut S, to: &mut Option<String>) -> Option<()> {
        if !value.null() {
            *to = Some(value.string()?);
        }
        Some(())
    }

    fn int<S: Source>(self, value: &mut S, to: &mut Option<i64>) -> Option<()> {
        if !value.null() {
            *to = Some(int(value)?);
        }
        Some(())
    }

    fn number<S: Source>(self, value: &mut S, to: &mut Option<f64>) -> Option<()> {
        if !value.null() {
            // The full reader's `as_number`: a finite f64.
            *to = Some(value.number()?.as_f64().filter(|f| f.is_finite())?);
        }
        Some(())
    }

    fn boolean<S: Source>(self, value: &mut S, to: &mut Option<bool>) -> Option<()> {
        if !value.null() {
            *to = Some(value.boolean()?);
        }
        Some(())
    }

    fn object<S: Source>(
        self,
        value: &mut S,
        read: impl FnOnce(&mut S) -> Option<()>,
    ) -> Option<()> {
        match value.next()? {
            Next::Null => value.null().then_some(()),
            Next::Object => read(value),
            _ => None,
        }
    }

    fn array<S: Source, T>(
        self,
        value: &mut S,
        to: &mut Option<Vec<T>>,
        read: impl FnOnce(&mut S) -> Option<Vec<T>>,
    ) -> Option<()> {
        if !value.null() {
            *to = Some(read(value)?);
        }
        Some(())
    }
}

/// The full reader's `as_int`: an integer that fits an i64.
fn int<S: Source>(value: &mut S) -> Option<i64> {
    value.number()?.as_i64()
}

/// Every element read by `read` (`null` is a type error here, as in the full reader's arrays).
fn each<S: Source, T>(value: &mut S, mut read: impl FnMut(&mut S) -> Option<T>) -> Option<Vec<T>> {
    let mut out = Vec::new();
    value.elements(|item| {
        out.push(read(item)?);
        Some(())
    })?;
    Some(out)
}

/// Every element an object, read by `read`.
fn objects<S: Source, T>(value: &mut S, read: impl Fn(&mut S) -> Option<T>) -> Option<Vec<T>> {
    each(value, |item| match item.next()? {
        Next::Object => read(item),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Ctx;

    /// A name lowered eight bytes at a time is the name lowered byte by byte, at every length
    /// around the words' edges and past the longest field name; `None` exactly for a name with
    /// a `_` or a byte that is not ASCII.
    #[test]
    fn names_lower_as_bytes_do() {
        let alphabet = b"aZ09-$@[`{Mz";
        for len in 0..=30 {
            for shift in 0..alphabet.len() {
                let key: Vec<u8> = (0..len)
                    .map(|i| alphabet[(i * 5 + shift) % alphabet.len()])
                    .collect();
                let lowered = Lowered::new(&key).expect("ASCII without `_`");
                if len <= Lowered::MAX {
                    assert_eq!(lowered.as_bytes(), key.to_ascii_lowercase(), "{key:?}");
                } else {
                    assert_eq!(lowered.as_bytes(), b"", "{key:?}");
                }
                for at in 0..len {
                    for odd in [b'_', 0x80, 0xc3] {
                        let mut bad = key.clone();
                        bad[at] = odd;
                        assert!(Lowered::new(&bad).is_none(), "{bad:?}");
                    }
                }
            }
        }
    }

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
            assert!(http_body(text).is_none(), "read from the text: {text}");
        }
        // Straight from the text: the same request, when there is a body section.
        for text in read {
            let doc = Json::parse(text).unwrap();
            let Json::Object(members) = &doc else {
                unreachable!()
            };
            let sections = ["model", "scheduler", "hyperparameters", "conditioning"];
            let has_section = members
                .iter()
                .any(|(k, _)| sections.iter().any(|s| k.eq_ignore_ascii_case(s)));
            match http_body(text) {
                Some((request, _)) => {
                    assert!(has_section, "{text}");
                    assert_eq!(Some(*request), super::request(members), "{text}");
                }
                None => assert!(!has_section, "left to the document: {text}"),
            }
        }
    }

    /// What `parse_document` judges before reading a body, and what only the document reads
    /// as `Value` does, is left to it.
    #[test]
    fn the_text_is_left_to_the_document_when_it_is_not_plainly_a_body() {
        for text in [
            r#"{"action":"generate_sdxl_enhanced","model":{"base":"m"}}"#,
            r#"{"Action":"get_status","model":{}}"#,
            r#"{"$schema":"x","model":{}}"#,
            r#"{"properties":{},"type":"object","model":{}}"#,
            r#"{"messageType":"x","model":{}}"#,
            r#"{"message_type":"x","model":{}}"#,
            r#"{"modelName":"x","model":{}}"#,
            r#"{"numInferenceSteps":5,"model":{}}"#,
            // A repeated key (the document keeps its last value, at its first place).
            r#"{"model":{"base":"a"},"model":{"base":"b"}}"#,
            r#"{"model":{"base":"a"},"extra":1,"extra":2}"#,
            r#"{"model":{"base":"a","x":1,"vae":"v","x":2}}"#,
            r#"{"model":{"base":"a","base":"a"}}"#,
            r#"{"model":{"base":"a"},"extra":{"x":1,"x":2}}"#,
            // An escaped key; a key with `_`.
            r#"{"mod\u0065l":{"base":"a"}}"#,
            r#"{"model":{"base_":"a"}}"#,
            // Not JSON, or not one object.
            r#"{"model":{"base":"a"}} x"#,
            r#"{"model":{"base":"a"}"#,
            r#"[{"model":{}}]"#,
            "",
            // No body section at all.
            r#"{"performance":{"dtype":"fp16"}}"#,
        ] {
            assert!(http_body(text).is_none(), "read from the text: {text}");
        }
        // Escaped values, odd numbers and unknown subtrees are read, with the document's hash.
        for text in [
            r#"{"model":{"base":"a\"b\u00e9\/"},"hyperparameters":{"guidanceScale":1E1},"odd":-0.0e0}"#,
            r#"{"model":{"base":"a"},"unknown":[{"deep":[1,2,{"x":null}]},"s",true]}"#,
            "{\"model\":{\"base\":\"a\"},\"hyperparameters\":{\"guidanceScale\":7.50}}",
        ] {
            let (request, hash) = http_body(text).expect(text);
            let (doc, _) = Json::parse_hashed(text).unwrap();
            assert_eq!(hash, crate::json::content_hash(&doc), "{text}");
            let Json::Object(members) = &doc else {
                unreachable!()
            };
            let mut ctx = Ctx::unrecorded();
            let full = super::super::parse::read_request_for_tests(&mut ctx, members);
            assert_eq!(*request, full, "{text}");
        }
    }
}
