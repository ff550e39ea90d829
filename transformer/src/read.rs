//! Reading JSON objects the way System.Text.Json does with `PropertyNameCaseInsensitive`:
//! property names match case-insensitively, `null` means absent, and a value of the wrong JSON
//! type is an error (no coercion of `"42"` to 42 or of `7.5` to an integer).
//!
//! Every problem is recorded in a [`Ctx`] instead of stopping at the first one, so a request's
//! errors are all reported at once. Properties nobody read become warnings: nothing is dropped
//! silently.

use serde::Serialize;

use crate::error::{pointer_push, FieldError};
use crate::json::{Json, Members};

/// A note in the mapping report that is not an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// Errors and warnings collected while reading one message.
#[derive(Debug)]
pub struct Ctx {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<Warning>,
    /// False for a pass that only needs the values and whether there are errors: no JSON
    /// Pointers are built (paths are empty strings), no locations, no report, no warnings. Its
    /// errors, if any, are then reported by a second pass that records everything.
    pub(crate) record: bool,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            errors: Vec::new(),
            warnings: Vec::new(),
            record: true,
        }
    }
}

impl Ctx {
    /// A context that does not record paths, locations or warnings (see [`Ctx::record`]).
    pub(crate) fn unrecorded() -> Self {
        Ctx {
            record: false,
            ..Ctx::default()
        }
    }

    pub fn error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.record {
            self.warnings.push(Warning {
                path: path.into(),
                message: message.into(),
            });
        }
    }
}

/// A JSON value together with the JSON Pointer it was found at (empty when not recording).
#[derive(Debug, Clone)]
pub struct At<'a> {
    pub value: &'a Json<'a>,
    pub path: String,
}

/// Which of an object's properties were read: a bit set, spilled to a list past 64.
enum Used {
    Bits(u64),
    List(Vec<bool>),
}

impl Used {
    fn new(len: usize) -> Self {
        if len <= 64 {
            Used::Bits(0)
        } else {
            Used::List(vec![false; len])
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Used::Bits(bits) => bits & (1 << i) != 0,
            Used::List(list) => list[i],
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Used::Bits(bits) => *bits |= 1 << i,
            Used::List(list) => list[i] = true,
        }
    }
}

/// One JSON object being read; tracks which properties were consumed.
pub struct Reader<'a> {
    path: String,
    /// The object's properties in document order; their pointers are built only when needed.
    entries: &'a Members<'a>,
    used: Used,
    record: bool,
    /// What is known of the property names, to match ASCII names quickly.
    names: Names,
    /// Where the next case-insensitive search starts (properties tend to be read in the order
    /// they are written).
    cursor: usize,
}

/// Facts about an object's property names.
struct Names {
    /// Every name is ASCII: names compare with `eq_ignore_ascii_case` alone.
    ascii: bool,
    /// Every name is ASCII without `_`: then an ASCII name without `_` matches one ignoring
    /// underscores exactly when it matches it ignoring case (the fallback is skipped).
    plain: bool,
    /// Bit `n` (n < 63): a name of `n` bytes is there; bit 63: a longer one.
    lengths: u64,
    /// ASCII names, no two of which are equal ignoring case: an ASCII name matches at most one
    /// (a search may stop at the first match).
    distinct: bool,
}

impl Names {
    fn of(entries: &Members<'_>) -> Names {
        let mut names = Names {
            ascii: true,
            plain: true,
            lengths: 0,
            distinct: true,
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            let bit = Names::length_bit(key.len());
            if names.lengths & bit != 0 {
                // Another name of this length: the same one in other casing?
                names.distinct &= !entries[..i]
                    .iter()
                    .any(|(k, _)| k.len() == key.len() && k.eq_ignore_ascii_case(key));
            }
            names.lengths |= bit;
            if !key.is_ascii() {
                names.ascii = false;
                names.plain = false;
            } else if names.plain && has_underscore(key) {
                names.plain = false;
            }
        }
        names.distinct &= names.ascii;
        names
    }

    fn length_bit(len: usize) -> u64 {
        1 << len.min(63)
    }

    /// Whether `name` can match one of `entries` (these names) ignoring underscores: with
    /// everything ASCII, only names with as many letters (bytes but `_`) can.
    fn may_match_ignoring_underscores(&self, entries: &Members<'_>, name: &Query<'_>) -> bool {
        if !(self.ascii && name.ascii) {
            return true;
        }
        let letters = |s: &str| s.len() - s.bytes().filter(|b| *b == b'_').count();
        let wanted = letters(name.text);
        entries.iter().any(|(key, _)| letters(key) == wanted)
    }
}

/// Whether `name` has a `_`, eight bytes at a time.
fn has_underscore(name: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let words = name.as_bytes().chunks_exact(8);
    let rest = words.remainder();
    for word in words {
        // A byte of the word equal to `_` is a zero byte of `word ^ "________"`.
        let v = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8])) ^ (ONES * u64::from(b'_'));
        if v.wrapping_sub(ONES) & !v & HIGHS != 0 {
            return true;
        }
    }
    rest.contains(&b'_')
}

/// A name looked up, and whether it is ASCII.
struct Query<'n> {
    text: &'n str,
    ascii: bool,
}

impl<'n> Query<'n> {
    fn new(text: &'n str) -> Self {
        Query {
            text,
            ascii: text.is_ascii(),
        }
    }

    /// ASCII without `_`.
    fn plain(&self) -> bool {
        self.ascii && !has_underscore(self.text)
    }
}

/// `same_name` of ASCII names: the exact comparison first (names are mostly written in the
/// casing they are read with), then ignoring ASCII case.
#[inline]
fn same_ascii_name(key: &str, name: &str) -> bool {
    key.len() == name.len() && ascii_eq_ignore_case(key.as_bytes(), name.as_bytes())
}

/// `eq_ignore_ascii_case` of two ASCII byte strings of the same length, eight bytes at a time.
fn ascii_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    /// The word with its ASCII capitals made small (every byte is ASCII, below 0x80: adding
    /// to one never carries into the next).
    fn lower(word: u64) -> u64 {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        let at_least_a = word.wrapping_add(ONES * u64::from(0x80 - b'A'));
        let above_z = word.wrapping_add(ONES * u64::from(0x80 - b'Z' - 1));
        let capitals = at_least_a & !above_z & (ONES * 0x80);
        word | (capitals >> 2)
    }
    let (mut a_words, mut b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in a_words.by_ref().zip(b_words.by_ref()) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        if x != y && lower(x) != lower(y) {
            return false;
        }
    }
    a_words
        .remainder()
        .iter()
        .zip(b_words.remainder())
        .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// Property names compare like System.Text.Json's case-insensitive mode (ordinal, ignoring case).
fn same_name(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.is_ascii() && b.is_ascii() {
        // The same comparison for ASCII text, without per-char case tables.
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .zip(b.chars())
        .all(|(x, y)| x.to_lowercase().eq(y.to_lowercase()))
}

/// A looser match used only as a fallback, with a warning: snake_case spellings of a camelCase
/// name (`guidance_scale` for `guidanceScale`). System.Text.Json would not bind these, so the
/// report says so; the analyses-era samples use them.
fn same_name_ignoring_underscores(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        let underscores = |s: &str| s.bytes().filter(|c| *c == b'_').count();
        let (ua, ub) = (underscores(a), underscores(b));
        if a.len() - ua != b.len() - ub {
            // Not as many letters: no match (decided without walking both).
            return false;
        }
        if ua == 0 && ub == 0 {
            return a.eq_ignore_ascii_case(b);
        }
        let mut x = a.bytes().filter(|c| *c != b'_');
        let mut y = b.bytes().filter(|c| *c != b'_');
        loop {
            match (x.next(), y.next()) {
                (None, None) => return true,
                (Some(p), Some(q)) if p.eq_ignore_ascii_case(&q) => {}
                _ => return false,
            }
        }
    }
    let mut x = a.chars().filter(|c| *c != '_').flat_map(char::to_lowercase);
    let mut y = b.chars().filter(|c| *c != '_').flat_map(char::to_lowercase);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

impl<'a> Reader<'a> {
    pub fn new(ctx: &Ctx, entries: &'a Members<'a>, path: impl Into<String>) -> Self {
        Reader {
            path: path.into(),
            entries,
            used: Used::new(entries.len()),
            record: ctx.record,
            names: Names::of(entries),
            cursor: 0,
        }
    }

    /// The JSON Pointer of the `i`th property (empty when not recording).
    fn pointer(&self, i: usize) -> String {
        if self.record {
            pointer_push(&self.path, &self.entries[i].0)
        } else {
            String::new()
        }
    }

    /// Reads `value` as an object at `path`, recording a type error otherwise.
    pub fn object(ctx: &mut Ctx, at: At<'a>) -> Option<Reader<'a>> {
        match at.value {
            Json::Object(members) => Some(Reader::new(ctx, members, at.path)),
            other => {
                ctx.error(type_error(&at.path, "an object", other));
                None
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The object's properties, in document order.
    pub fn members(&self) -> &'a Members<'a> {
        self.entries
    }

    /// The property matching `name` (any casing), or `None` when absent or `null`.
    /// Two properties that both match are an error naming both paths.
    pub fn get(&mut self, ctx: &mut Ctx, name: &str) -> Option<At<'a>> {
        let query = Query::new(name);
        let mut found: Option<usize> = None;
        let ascii = self.names.ascii && query.ascii;
        if ascii && self.names.lengths & Names::length_bit(name.len()) == 0 {
            // No name of this length: no case-insensitive match.
        } else if ascii && self.names.distinct {
            // At most one match: search from where the last one was, stop at it.
            let len = self.entries.len();
            let mut i = self.cursor;
            for _ in 0..len {
                if i >= len {
                    i = 0;
                }
                let key = &self.entries[i].0;
                if same_ascii_name(key, name) {
                    found = Some(i);
                    self.cursor = i + 1;
                    break;
                }
                i += 1;
            }
        } else {
            found = self.find_all(ctx, name, ascii);
        }
        self.found(ctx, &query, found)
    }

    /// Every property matching `name` case-insensitively: the first, and an error for each
    /// further one.
    fn find_all(&mut self, ctx: &mut Ctx, name: &str, ascii: bool) -> Option<usize> {
        let mut found: Option<usize> = None;
        for (i, (key, _)) in self.entries.iter().enumerate() {
            let same = if ascii {
                // `same_name` of ASCII text.
                same_ascii_name(key, name)
            } else {
                same_name(key, name)
            };
            if same {
                if let Some(first) = found {
                    let (first, this) = (self.pointer(first), self.pointer(i));
                    ctx.error(FieldError::new(
                        this.clone(),
                        "conflict",
                        format!(
                            "two properties match `{name}` (names are case-insensitive): {first} and {this}"
                        ),
                    ));
                    self.used.set(i);
                    continue;
                }
                found = Some(i);
            }
        }
        found
    }

    /// The property found by case-insensitive search, else by the underscore-insensitive
    /// fallback; consumed.
    #[inline]
    fn found(
        &mut self,
        ctx: &mut Ctx,
        query: &Query<'_>,
        mut found: Option<usize>,
    ) -> Option<At<'a>> {
        let name = query.text;
        if found.is_none()
            && !(self.names.plain && query.plain())
            && self
                .names
                .may_match_ignoring_underscores(self.entries, query)
        {
            for (i, (key, _)) in self.entries.iter().enumerate() {
                if !self.used.get(i) && same_name_ignoring_underscores(key, name) {
                    if ctx.record {
                        ctx.warn(
                            self.pointer(i),
                            format!(
                                "read as `{name}`: System.Text.Json would not bind `{key}` (underscores are not ignored there)"
                            ),
                        );
                    }
                    found = Some(i);
                    break;
                }
            }
        }
        let i = found?;
        self.used.set(i);
        let value = &self.entries[i].1;
        if value.is_null() {
            return None;
        }
        Some(At {
            value,
            path: self.pointer(i),
        })
    }

    /// True when a property matching `name` exists (even if `null`); does not consume it.
    pub fn has(&self, name: &str) -> bool {
        let query = Query::new(name);
        if self.names.plain && query.ascii {
            // Names ASCII without `_`: one matches `name` ignoring underscores exactly when it
            // equals `name` without its underscores ignoring case (and `name` with one matches
            // no such name ignoring case alone).
            let mut letters = [0u8; 32];
            let mut len = 0;
            for b in name.bytes().filter(|b| *b != b'_') {
                match letters.get_mut(len) {
                    Some(slot) => *slot = b,
                    // Longer than this buffer: the general way below.
                    None => return self.has_slowly(name),
                }
                len += 1;
            }
            let letters = &letters[..len];
            return self.names.lengths & Names::length_bit(len) != 0
                && self
                    .entries
                    .iter()
                    .any(|(k, _)| k.len() == len && ascii_eq_ignore_case(k.as_bytes(), letters));
        }
        self.has_slowly(name)
    }

    fn has_slowly(&self, name: &str) -> bool {
        let query = Query::new(name);
        if self.names.ascii && query.ascii {
            // ASCII both sides: `same_name` is `same_ascii_name`, and a name of no present
            // length, or no present length without underscores, matches none.
            let by_case = self.names.lengths & Names::length_bit(name.len()) != 0
                && self.entries.iter().any(|(k, _)| same_ascii_name(k, name));
            return by_case
                || (!(self.names.plain && query.plain())
                    && self
                        .names
                        .may_match_ignoring_underscores(self.entries, &query)
                    && self
                        .entries
                        .iter()
                        .any(|(k, _)| same_name_ignoring_underscores(k, name)));
        }
        self.entries
            .iter()
            .any(|(k, _)| same_name(k, name) || same_name_ignoring_underscores(k, name))
    }

    #[inline]
    pub fn string(&mut self, ctx: &mut Ctx, name: &str) -> Option<(String, String)> {
        let at = self.get(ctx, name)?;
        as_string(ctx, &at).map(|s| (s, at.path))
    }

    #[inline]
    pub fn int(&mut self, ctx: &mut Ctx, name: &str) -> Option<(i64, String)> {
        let at = self.get(ctx, name)?;
        as_int(ctx, &at).map(|n| (n, at.path))
    }

    #[inline]
    pub fn number(&mut self, ctx: &mut Ctx, name: &str) -> Option<(f64, String)> {
        let at = self.get(ctx, name)?;
        as_number(ctx, &at).map(|n| (n, at.path))
    }

    #[inline]
    pub fn boolean(&mut self, ctx: &mut Ctx, name: &str) -> Option<(bool, String)> {
        let at = self.get(ctx, name)?;
        as_bool(ctx, &at).map(|b| (b, at.path))
    }

    pub fn object_field(&mut self, ctx: &mut Ctx, name: &str) -> Option<Reader<'a>> {
        let at = self.get(ctx, name)?;
        Reader::object(ctx, at)
    }

    pub fn array(&mut self, ctx: &mut Ctx, name: &str) -> Option<Vec<At<'a>>> {
        let at = self.get(ctx, name)?;
        as_array(ctx, &at)
    }

    /// Records every property nobody read as a warning ("ignored").
    pub fn finish(self, ctx: &mut Ctx) {
        if !ctx.record {
            return;
        }
        for (i, (key, _)) in self.entries.iter().enumerate() {
            if !self.used.get(i) {
                ctx.warn(
                    self.pointer(i),
                    format!("unknown property `{key}`: not part of the protocol, ignored"),
                );
            }
        }
    }
}

/// Items of an array, each with its JSON Pointer.
pub fn as_array<'a>(ctx: &mut Ctx, at: &At<'a>) -> Option<Vec<At<'a>>> {
    match at.value {
        Json::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, value)| At {
                    value,
                    path: if ctx.record {
                        format!("{}/{i}", at.path)
                    } else {
                        String::new()
                    },
                })
                .collect(),
        ),
        other => {
            ctx.error(type_error(&at.path, "an array", other));
            None
        }
    }
}

#[inline]
pub fn as_bool(ctx: &mut Ctx, at: &At<'_>) -> Option<bool> {
    match at.value {
        Json::Bool(b) => Some(*b),
        other => {
            ctx.error(type_error(&at.path, "a boolean", other));
            None
        }
    }
}

#[inline]
pub fn as_string(ctx: &mut Ctx, at: &At<'_>) -> Option<String> {
    match at.value {
        Json::String(s) => Some(s.to_string()),
        other => {
            ctx.error(type_error(&at.path, "a string", other));
            None
        }
    }
}

#[inline]
pub fn as_int(ctx: &mut Ctx, at: &At<'_>) -> Option<i64> {
    match at.value {
        Json::Number(n) => match n.as_i64() {
            Some(i) => Some(i),
            None if n.is_u64() => {
                ctx.error(
                    FieldError::new(&at.path, "range", "integer too large")
                        .with_value(&at.value.to_value()),
                );
                None
            }
            None => {
                ctx.error(type_error(&at.path, "an integer", at.value));
                None
            }
        },
        other => {
            ctx.error(type_error(&at.path, "an integer", other));
            None
        }
    }
}

#[inline]
pub fn as_number(ctx: &mut Ctx, at: &At<'_>) -> Option<f64> {
    match at.value {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()).or_else(|| {
            ctx.error(
                FieldError::new(&at.path, "range", "number is not finite")
                    .with_value(&at.value.to_value()),
            );
            None
        }),
        other => {
            ctx.error(type_error(&at.path, "a number", other));
            None
        }
    }
}

pub fn type_error(path: &str, expected: &str, found: &Json<'_>) -> FieldError {
    FieldError::new(
        path,
        "type",
        format!("expected {expected}, found {}", json_type_name(found)),
    )
    .with_value(&found.to_value())
}

pub fn json_type_name(value: &Json<'_>) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a number with a fraction",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time comparison is `eq_ignore_ascii_case`: every pair of ASCII bytes, at
    /// every position of a word and of the tail, in strings of 1 to 20 bytes.
    #[test]
    fn ascii_eq_ignore_case_is_the_std_one() {
        for len in 1..=20 {
            for at in 0..len {
                for x in 0u8..128 {
                    for y in 0u8..128 {
                        let mut a = vec![b'k'; len];
                        let mut b = vec![b'K'; len];
                        a[at] = x;
                        b[at] = y;
                        assert_eq!(
                            ascii_eq_ignore_case(&a, &b),
                            a.eq_ignore_ascii_case(&b),
                            "{a:?} {b:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn has_underscore_finds_every_underscore() {
        for len in 0..=24 {
            assert!(!has_underscore(&"a".repeat(len)));
            assert!(!has_underscore(&"\u{e9}".repeat(len)));
            for at in 0..len {
                let mut name = vec![b'^'; len];
                name[at] = b'_';
                assert!(
                    has_underscore(std::str::from_utf8(&name).unwrap()),
                    "{len} {at}"
                );
                let mut name = vec![b'`'; len];
                name[at] = b'_';
                assert!(
                    has_underscore(std::str::from_utf8(&name).unwrap()),
                    "{len} {at}"
                );
            }
        }
        for b in 0u8..128 {
            let name = String::from_utf8(vec![b; 9]).unwrap();
            assert_eq!(has_underscore(&name), b == b'_');
        }
    }

    /// `has` (with its shortcuts) is the definition: some property matches ignoring case, or
    /// ignoring case and underscores.
    #[test]
    fn has_is_the_definition() {
        let objects = [
            r#"{"model":1,"Scheduler":2,"messageType":3,"ACTION":4}"#,
            r#"{"model_name":1,"num_inference__steps":2,"type":3}"#,
            "{\"\u{212a}ey\":1,\"b\u{e9}\":2,\"x\":3}",
            r#"{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":1,"$schema":2}"#,
        ];
        let names = [
            "model",
            "MODEL",
            "mod_el",
            "message_type",
            "messagetype",
            "model_name",
            "modelname",
            "num_inference_steps",
            "numinferencesteps",
            "action",
            "type",
            "TYPE",
            "$schema",
            "properties",
            "key",
            "kab",
            "b\u{e9}",
            "x",
            "_x_",
            "aaaaaaaaaaaaaaaaaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "",
        ];
        for text in objects {
            let doc = Json::parse(text).unwrap();
            let Json::Object(members) = &doc else {
                unreachable!()
            };
            let reader = Reader::new(&Ctx::unrecorded(), members, "");
            for name in names {
                let expected = members
                    .iter()
                    .any(|(k, _)| same_name(k, name) || same_name_ignoring_underscores(k, name));
                assert_eq!(reader.has(name), expected, "{text} {name}");
            }
        }
    }
}
