//! Strings that match a regular expression, read off its syntax tree: the shortest match and a
//! few longer ones (so that length bounds can be met). Patterns the `regex-syntax` parser refuses
//! (look-around, back-references) yield nothing; the caller then falls back to generic strings.

use regex_syntax::hir::{Class, Hir, HirKind};

/// How a sample spends repetitions and alternatives.
#[derive(Clone, Copy)]
struct Policy {
    extra_repetitions: u32,
    last_alternative: bool,
}

/// Up to six strings matching `pattern`, shortest first.
pub(crate) fn sample_strings(pattern: &str) -> Vec<String> {
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(pattern) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for last_alternative in [false, true] {
        for extra_repetitions in [0, 1, 8] {
            let policy = Policy {
                extra_repetitions,
                last_alternative,
            };
            let mut sample = String::new();
            if sample_into(&hir, policy, &mut sample, 0) && !out.contains(&sample) {
                out.push(sample);
            }
        }
    }
    out
}

fn sample_into(hir: &Hir, policy: Policy, out: &mut String, depth: usize) -> bool {
    const MAX_DEPTH: usize = 64;
    const MAX_LEN: usize = 4096;
    if depth > MAX_DEPTH || out.len() > MAX_LEN {
        return false;
    }
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(literal) => match std::str::from_utf8(&literal.0) {
            Ok(text) => {
                out.push_str(text);
                true
            }
            Err(_) => false,
        },
        HirKind::Class(Class::Unicode(class)) => {
            let ranges = class.ranges();
            let preferred = ['a', 'A', '0', '_', '-', ' '];
            let pick = preferred
                .iter()
                .copied()
                .find(|c| ranges.iter().any(|r| r.start() <= *c && *c <= r.end()))
                .or_else(|| {
                    ranges
                        .iter()
                        .map(|r| r.start())
                        .find(|c| !c.is_control())
                        .or_else(|| ranges.first().map(|r| r.start()))
                });
            match pick {
                Some(c) => {
                    out.push(c);
                    true
                }
                None => false,
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            match class.ranges().iter().map(|r| r.start()).find(u8::is_ascii) {
                Some(b) => {
                    out.push(char::from(b));
                    true
                }
                None => false,
            }
        }
        HirKind::Repetition(repetition) => {
            let wanted = repetition.min.saturating_add(policy.extra_repetitions);
            let times = match repetition.max {
                Some(max) => wanted.min(max),
                None => wanted,
            };
            (0..times).all(|_| sample_into(&repetition.sub, policy, out, depth + 1))
        }
        HirKind::Capture(capture) => sample_into(&capture.sub, policy, out, depth + 1),
        HirKind::Concat(parts) => parts
            .iter()
            .all(|part| sample_into(part, policy, out, depth + 1)),
        HirKind::Alternation(alternatives) => {
            let chosen = if policy.last_alternative {
                alternatives.last()
            } else {
                alternatives.first()
            };
            chosen.is_some_and(|alt| sample_into(alt, policy, out, depth + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_match_simple_patterns() {
        assert_eq!(sample_strings("^[0-9a-f]{16}$")[0], "aaaaaaaaaaaaaaaa");
        assert_eq!(sample_strings("^(png|jpeg)$")[0], "png");
        assert!(sample_strings("^(png|jpeg)$").contains(&"jpeg".to_string()));
        assert_eq!(sample_strings(r"^\d+$")[0], "0");
        assert!(sample_strings("(?!x)a").is_empty());
    }
}
