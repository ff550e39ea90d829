//! Standard base64 (RFC 4648 alphabet, `+` and `/`), as image data travels in requests: ASCII
//! whitespace (line breaks) ignored, `=` padding optional but only at the end.

/// The decoded bytes, or `None` when `text` is not base64 (a character outside the alphabet,
/// padding inside the data, a length that leaves a lone character, or nothing at all).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data_len = symbols
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |i| i + 1);
    let (data, padding) = symbols.split_at(data_len);
    if data.is_empty() || padding.len() > 2 || data.len() % 4 == 1 {
        return None;
    }
    if !padding.is_empty() && (data.len() + padding.len()) % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let mut buffer = 0_u32;
    let mut bits = 0;
    for &symbol in data {
        buffer = (buffer << 6) | u32::from(value(symbol)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn value(symbol: u8) -> Option<u8> {
    match symbol {
        b'A'..=b'Z' => Some(symbol - b'A'),
        b'a'..=b'z' => Some(symbol - b'a' + 26),
        b'0'..=b'9' => Some(symbol - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_with_and_without_padding_and_line_breaks() {
        assert_eq!(decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode("aGVs\nbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(decode("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode("/+8=").as_deref(), Some(&[0xff, 0xef][..]));
    }

    #[test]
    fn refuses_what_is_not_base64() {
        for text in [
            "",
            "====",
            "a",
            "aGVsbG8==",
            "aG=Vs",
            "fixtures/control.png",
            "aGk=aGk=",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }
}
