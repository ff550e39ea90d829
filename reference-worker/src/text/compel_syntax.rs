//! compel 2.5.1's prompt syntax (its `PromptParser`, a pyparsing grammar), reproduced as a PEG
//! parser with the same ordered choices, so a prompt splits into the same weighted fragments:
//!
//! - `word+`, `word++`, `word-`: the word's weight times `1.1^n` / `0.9^n` (no space before the
//!   signs);
//! - `(several words)1.3`, `(words)+`, `"quoted words"0.8`, `(words).attend(1.2)`: a group
//!   weighted (no space before a suffix weight); groups nest and weights multiply;
//! - `\(`, `\)`, `\"`, `\,`, `\.`, `\+`, `\-`, `\=`: those characters as text; compel's
//!   `Fragment` turns `\(`, `\)`, `\"` into the bare characters and leaves the backslash of the
//!   others in the text;
//! - everything else is text; after parsing, neighbouring fragments of equal weight are joined
//!   with one space (compel's `fuse_fragments`), and `,x` gets a space (`, x`) first.
//!
//! compel's other operators (`.blend()`, `.and()`/`.add()`, `.swap()`, `withLora()`/`useLora()`)
//! build several conditionings or need cross-attention control; a prompt using them is refused
//! with an error rather than rendered differently.

use crate::error::{Error, Result};

/// `PromptParser(attention_plus_base=1.1, attention_minus_base=0.9)`.
const PLUS_BASE: f64 = 1.1;
const MINUS_BASE: f64 = 0.9;
/// compel's syntactic characters.
const SYNTACTIC: &[char] = &['(', ')', '"', ',', '.', '+', '-', '='];
/// pyparsing's default whitespace (skipped before most elements; `White()` matches these).
const PYPARSING_WHITE: &[char] = &[' ', '\n', '\t', '\r'];
/// Python's `string.whitespace`.
const PYTHON_WHITESPACE: &[char] = &[' ', '\t', '\n', '\r', '\x0b', '\x0c'];
/// Operators this worker does not render.
const UNSUPPORTED_OPERATORS: &[&str] = &[
    ".blend(",
    ".and(",
    ".add(",
    ".swap(",
    "withLora(",
    "useLora(",
];

/// One fragment of a flattened compel prompt: its text and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub text: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Fragment(String),
    Attention(f64, Vec<Node>),
}

/// `PromptParser().parse_conjunction(prompt)` for a prompt of one flattened part: the fused
/// fragments with their weights.
pub fn parse(prompt: &str) -> Result<Vec<Fragment>> {
    let invalid = |message: String| Error::Unsupported {
        path: "/data/prompt".into(),
        reason: message,
    };
    if let Some(operator) = UNSUPPORTED_OPERATORS.iter().find(|op| prompt.contains(*op)) {
        return Err(invalid(format!(
            "compel's `{}` operator is not rendered (only weighting: `word+`, `(words)1.2`, \
             `.attend()`)",
            operator.trim_end_matches('(')
        )));
    }
    let prompt = space_after_commas(prompt);
    if prompt.trim().is_empty() {
        return Ok(vec![Fragment {
            text: String::new(),
            weight: 1.0,
        }]);
    }
    let chars: Vec<char> = expand_tabs(&prompt).chars().collect();
    let parser = Parser { s: &chars };
    let (nodes, end) = parser.prompt(0);
    let end = parser.skip_white(end);
    if end != chars.len() {
        return Err(invalid(format!(
            "compel cannot parse the prompt at character {end}"
        )));
    }
    let mut flat = Vec::new();
    flatten(&nodes, 1.0, &mut flat);
    let fused = fuse(flat);
    if fused.is_empty() {
        return Err(invalid(
            "the compel prompt has no text (compel fails on an empty conjunction)".into(),
        ));
    }
    Ok(fused)
}

/// `re.sub(r',(\S)', r', \1', prompt)`.
fn space_after_commas(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len() + 8);
    let mut chars = prompt.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ',' {
            if let Some(&next) = chars.peek() {
                if !is_python_space(next) {
                    out.push(' ');
                    out.push(next);
                    chars.next();
                }
            }
        }
    }
    out
}

/// Python's `str.isspace()` (what `\s` matches in a `str` pattern).
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `str.expandtabs()` (pyparsing's `parse_string` expands tabs first): tab stops every 8
/// columns, the column reset by `\n` and `\r`.
fn expand_tabs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut column = 0usize;
    for c in text.chars() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\n' | '\r' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

fn flatten(nodes: &[Node], scale: f64, out: &mut Vec<Fragment>) {
    for node in nodes {
        match node {
            // Fragment(node.text, node.weight * weight_scale), node.weight being 1.
            Node::Fragment(text) => out.push(Fragment {
                text: unescape(text),
                weight: 1.0 * scale,
            }),
            Node::Attention(weight, children) => flatten(children, scale * weight, out),
        }
    }
}

/// What compel's `Fragment(text)` constructor does to every text it is given (at parse time, when
/// flattening and when fusing): `\(`, `\)` and `\"` become `(`, `)` and `"`.
fn unescape(text: &str) -> String {
    if text.contains("\\\"") || text.contains("\\(") || text.contains("\\)") {
        text.replace("\\(", "(")
            .replace("\\)", ")")
            .replace("\\\"", "\"")
    } else {
        text.to_owned()
    }
}

/// compel's `fuse_fragments`.
fn fuse(fragments: Vec<Fragment>) -> Vec<Fragment> {
    let mut fused: Vec<Fragment> = Vec::new();
    for fragment in fragments {
        match fused.last_mut() {
            Some(last) if last.weight == fragment.weight => {
                last.text = unescape(&format!("{} {}", last.text, fragment.text));
            }
            _ => fused.push(fragment),
        }
    }
    fused
}

struct Parser<'a> {
    s: &'a [char],
}

type Parsed = Option<(Vec<Node>, usize)>;

impl Parser<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    fn skip_white(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(|c| PYPARSING_WHITE.contains(&c)) {
            i += 1;
        }
        i
    }

    fn literal(&self, i: usize, text: &str) -> Option<usize> {
        let i = self.skip_white(i);
        let mut j = i;
        for c in text.chars() {
            if self.at(j) != Some(c) {
                return None;
            }
            j += 1;
        }
        Some(j)
    }

    /// The top level: ZeroOrMore(attention | quoted | parenthesized | free_word | White).
    fn prompt(&self, mut i: usize) -> (Vec<Node>, usize) {
        let mut nodes = Vec::new();
        loop {
            if let Some((mut parsed, end)) = self
                .attention(i)
                .or_else(|| self.quoted(i))
                .or_else(|| self.parenthesized(i))
            {
                nodes.append(&mut parsed);
                i = end;
            } else if let Some((word, end)) = self.free_word(i) {
                nodes.push(Node::Fragment(unescape(&word)));
                i = end;
            } else if self.at(i).is_some_and(|c| PYPARSING_WHITE.contains(&c)) {
                i = self.skip_white(i);
            } else {
                return (nodes, i);
            }
        }
    }

    /// `CharsNotIn(string.whitespace)`.
    fn free_word(&self, i: usize) -> Option<(String, usize)> {
        let start = self.skip_white(i);
        let mut j = start;
        while self.at(j).is_some_and(|c| !PYTHON_WHITESPACE.contains(&c)) {
            j += 1;
        }
        (j > start).then(|| (self.s[start..j].iter().collect(), j))
    }

    /// `non_syntax_word`: escaped syntactic characters, `+`/`-` not followed by whitespace, a
    /// syntactic character or the end, and any other character but whitespace and syntax.
    fn non_syntax_word(&self, i: usize) -> Option<(String, usize)> {
        let start = self.skip_white(i);
        let mut j = start;
        loop {
            match self.at(j) {
                Some('\\') if self.at(j + 1).is_some_and(|c| SYNTACTIC.contains(&c)) => j += 2,
                Some('+' | '-') => {
                    let next = self.at(j + 1);
                    let blocked =
                        next.is_none_or(|c| PYPARSING_WHITE.contains(&c) || SYNTACTIC.contains(&c));
                    if blocked {
                        // non_float_number: `-` followed by digits (never reached: a digit
                        // does not block the sign above).
                        break;
                    }
                    j += 1;
                }
                Some(c) if !PYTHON_WHITESPACE.contains(&c) && !SYNTACTIC.contains(&c) => j += 1,
                _ => break,
            }
        }
        (j > start).then(|| (self.s[start..j].iter().collect(), j))
    }

    /// `"..."` (QuotedString with `\"` as the escaped quote), parsed again as
    /// `fragment_including_commas_or_periods + StringEnd`.
    fn quoted(&self, i: usize) -> Parsed {
        let start = self.skip_white(i);
        if self.at(start) != Some('"') {
            return None;
        }
        let mut j = start + 1;
        loop {
            match self.at(j)? {
                '\\' if self.at(j + 1) == Some('"') => j += 2,
                '"' => break,
                '\n' | '\r' => return None,
                _ => j += 1,
            }
        }
        let raw: String = self.s[start + 1..j].iter().collect();
        let content = unquote(&raw).replace("\\\"", "\"").replace('"', "\\\"");
        if content.trim().is_empty() {
            return Some((vec![Node::Fragment(String::new())], j + 1));
        }
        let inner: Vec<char> = content.chars().collect();
        let parser = Parser { s: &inner };
        let (nodes, end) = parser.fragment_including_commas(0);
        (parser.skip_white(end) == inner.len()).then_some((nodes, j + 1))
    }

    /// `( fragment_including_commas_or_periods )`.
    fn parenthesized(&self, i: usize) -> Parsed {
        let open = self.literal(i, "(")?;
        let (nodes, end) = self.fragment_including_commas(open);
        let close = self.literal(end, ")")?;
        Some((nodes, close))
    }

    /// ZeroOrMore(attention | parenthesized | quoted | non_syntax_word | `,` | `.`).
    fn fragment_including_commas(&self, mut i: usize) -> (Vec<Node>, usize) {
        let mut nodes = Vec::new();
        loop {
            if let Some((mut parsed, end)) = self
                .attention(i)
                .or_else(|| self.parenthesized(i))
                .or_else(|| self.quoted(i))
            {
                nodes.append(&mut parsed);
                i = end;
            } else if let Some((word, end)) = self.non_syntax_word(i) {
                nodes.push(Node::Fragment(unescape(&word)));
                i = end;
            } else {
                let j = self.skip_white(i);
                match self.at(j) {
                    Some(c @ (',' | '.')) => {
                        nodes.push(Node::Fragment(c.to_string()));
                        i = j + 1;
                    }
                    _ => return (nodes, i),
                }
            }
        }
    }

    /// quoted | parenthesized | non_syntax_word, as a group of nodes.
    fn operator_target(&self, i: usize) -> Parsed {
        self.quoted(i)
            .or_else(|| self.parenthesized(i))
            .or_else(|| {
                self.non_syntax_word(i)
                    .map(|(word, end)| (vec![Node::Fragment(unescape(&word))], end))
            })
    }

    fn attention(&self, i: usize) -> Parsed {
        // attention_explicit: target.attend(weight)
        if let Some((target, end)) = self.operator_target(i) {
            if let Some(after) = self.literal(end, ".attend") {
                if let Some(open) = self.literal(after, "(") {
                    if let Some((weight, end)) = self.weight_operator(open) {
                        if let Some(close) = self.literal(end, ")") {
                            return Some((vec![Node::Attention(weight, target)], close));
                        }
                    }
                }
            }
        }
        // attention_implicit: (quoted | parenthesized) weight, or non_syntax_word +/-.
        if let Some((target, end)) = self.quoted(i).or_else(|| self.parenthesized(i)) {
            if !self.at(end).is_some_and(|c| PYPARSING_WHITE.contains(&c)) {
                if let Some((weight, end)) = self.weight_operator(end) {
                    return Some((vec![Node::Attention(weight, target)], end));
                }
            }
        }
        let (word, end) = self.non_syntax_word(i)?;
        if self.at(end).is_some_and(|c| PYPARSING_WHITE.contains(&c)) {
            return None;
        }
        let (weight, end) = self.signs(end)?;
        Some((
            vec![Node::Attention(
                weight,
                vec![Node::Fragment(unescape(&word))],
            )],
            end,
        ))
    }

    /// `Word('+') | Word('-')`: `base ** count`.
    fn signs(&self, i: usize) -> Option<(f64, usize)> {
        let start = self.skip_white(i);
        let sign = self.at(start).filter(|c| matches!(c, '+' | '-'))?;
        let mut j = start;
        while self.at(j) == Some(sign) {
            j += 1;
        }
        let base = if sign == '+' { PLUS_BASE } else { MINUS_BASE };
        Some((base.powf((j - start) as f64), j))
    }

    /// `Word('+') | Word('-') | number`, number being pyparsing's `real`
    /// (`[+-]?(?:\d+\.\d*|\.\d+)`) or `-?\d+`, as a float.
    fn weight_operator(&self, i: usize) -> Option<(f64, usize)> {
        if let Some(found) = self.signs(i) {
            return Some(found);
        }
        let start = self.skip_white(i);
        let digits = |mut j: usize| {
            let from = j;
            while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            (j, j - from)
        };
        // real
        let mut j = start;
        if matches!(self.at(j), Some('+' | '-')) {
            j += 1;
        }
        let (after_int, int_digits) = digits(j);
        let real_end = if int_digits > 0 && self.at(after_int) == Some('.') {
            Some(digits(after_int + 1).0)
        } else if int_digits == 0 && self.at(j) == Some('.') {
            let (end, frac) = digits(j + 1);
            (frac > 0).then_some(end)
        } else {
            None
        };
        let end = match real_end {
            Some(end) => end,
            None => {
                let mut j = start;
                if self.at(j) == Some('-') {
                    j += 1;
                }
                let (end, count) = digits(j);
                if count == 0 {
                    return None;
                }
                end
            }
        };
        let text: String = self.s[start..end].iter().collect();
        text.parse::<f64>().ok().map(|weight| (weight, end))
    }
}

/// QuotedString's unquoting with `convert_whitespace_escapes`: `\t`, `\n`, `\f`, `\r`, `\0`,
/// `\ooo`, `\xhh`, `\uhhhh` become the characters they name.
fn unquote(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    let hex = |from: usize, count: usize| -> Option<char> {
        let text: String = chars.get(from..from + count)?.iter().collect();
        if !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        char::from_u32(u32::from_str_radix(&text, 16).ok()?)
    };
    while i < chars.len() {
        if chars[i] == '\\' {
            let next = chars.get(i + 1).copied();
            let simple = match next {
                Some('t') => Some('\t'),
                Some('n') => Some('\n'),
                Some('f') => Some('\x0c'),
                Some('r') => Some('\r'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c);
                i += 2;
                continue;
            }
            let octal = chars
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|c| ('0'..='7').contains(c)))
                .and_then(|d| {
                    let text: String = d.iter().collect();
                    char::from_u32(u32::from_str_radix(&text, 8).ok()?)
                });
            if let Some(c) = octal {
                out.push(c);
                i += 4;
                continue;
            }
            if next == Some('0') {
                out.push('\0');
                i += 2;
                continue;
            }
            if next == Some('x') {
                if let Some(c) = hex(i + 2, 2) {
                    out.push(c);
                    i += 4;
                    continue;
                }
            }
            if next == Some('u') {
                if let Some(c) = hex(i + 2, 4) {
                    out.push(c);
                    i += 6;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(prompt: &str) -> Vec<(String, f64)> {
        parse(prompt)
            .unwrap()
            .into_iter()
            .map(|f| (f.text, f.weight))
            .collect()
    }

    #[test]
    fn signs_and_numbers_weight_words_and_groups() {
        assert_eq!(
            pairs("a cat+ on a mat"),
            vec![
                ("a".into(), 1.0),
                ("cat".into(), 1.1),
                ("on a mat".into(), 1.0)
            ]
        );
        assert_eq!(
            pairs("(red car)1.3, sky--"),
            vec![
                ("red car".into(), 1.3),
                (",".into(), 1.0),
                ("sky".into(), 0.9f64.powf(2.0))
            ]
        );
        assert_eq!(
            pairs("(a (b)0.5)2"),
            vec![("a".into(), 2.0), ("b".into(), 2.0 * 0.5)]
        );
        assert_eq!(pairs("dog.attend(0.7)"), vec![("dog".into(), 0.7)]);
        assert_eq!(pairs("   "), vec![(String::new(), 1.0)]);
    }

    #[test]
    fn unsupported_operators_are_refused() {
        for prompt in [
            "(\"a\", \"b\").blend(1, 1)",
            "(a, b).and()",
            "cat.swap(dog)",
        ] {
            assert!(parse(prompt).is_err(), "{prompt}");
        }
        assert!(parse("()").is_err(), "an empty conjunction");
    }
}
