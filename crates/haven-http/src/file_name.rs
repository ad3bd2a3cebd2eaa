//! File names in headers: percent-encoded UTF-8 (RFC 8187 style), so any name travels in an
//! ASCII header. The upload header `X-File-Name` and the download `filename*` use this; so does
//! `haven client`.

/// Percent-encodes every byte but ASCII letters, digits and `.-_`.
pub fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_are_percent_decoded() {
        assert_eq!(super::decode("lab%20result%C3%A9.pdf").as_deref(), Some("lab resulté.pdf"));
        assert_eq!(super::decode("bad%zz"), None);
        assert_eq!(super::decode("%FF"), None);
        assert_eq!(super::decode(&super::encode("wound photo é.png")).as_deref(), Some("wound photo é.png"));
    }
}
