//! Attachment rules: which files may be shared, judged by their content (magic bytes), never by
//! the name or the type a client claims.

use crate::ValidationError;

/// The media type of an allowed file, found from its first bytes; `None` for anything else
/// (executables, scripts, HTML, archives that are not Office documents…).
pub fn sniff_media_type(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(b"\xff\xd8\xff") {
        return Some("image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Some("image/gif");
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && matches!(&bytes[8..12], b"heic" | b"heix" | b"mif1") {
        return Some("image/heic");
    }
    if starts(b"%PDF-") {
        return Some("application/pdf");
    }
    if starts(b"{\\rtf") {
        return Some("application/rtf");
    }
    if starts(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        // The OLE container of .doc, .xls and .ppt.
        return Some("application/x-ole-storage");
    }
    if starts(b"PK\x03\x04") {
        return office_zip(bytes);
    }
    if is_plain_text(bytes) {
        return Some("text/plain");
    }
    None
}

/// The kind of an allowed file, from the media type [`sniff_media_type`] found (organisation
/// policies allow or refuse kinds).
pub fn kind_of(media_type: &str) -> crate::org::AttachmentKind {
    use crate::org::AttachmentKind;
    match media_type {
        m if m.starts_with("image/") => AttachmentKind::Image,
        "application/pdf" => AttachmentKind::Pdf,
        "text/plain" => AttachmentKind::Text,
        _ => AttachmentKind::Office,
    }
}

/// A ZIP is allowed only when it is an Office Open XML document: its entries name the part
/// folder of Word, Excel or PowerPoint.
fn office_zip(bytes: &[u8]) -> Option<&'static str> {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !has(b"[Content_Types].xml") {
        return None;
    }
    if has(b"word/") {
        Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    } else if has(b"xl/") {
        Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    } else if has(b"ppt/") {
        Some("application/vnd.openxmlformats-officedocument.presentationml.presentation")
    } else {
        None
    }
}

/// UTF-8 without NULs or other control characters (tabs and line breaks allowed), and not
/// markup a browser would run.
fn is_plain_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else { return false };
    let head = text.trim_start().get(..64.min(text.trim_start().len())).unwrap_or("").to_ascii_lowercase();
    let markup = ["<!doctype", "<html", "<script", "<svg", "<?xml"].iter().any(|m| head.starts_with(m));
    !text.is_empty() && !markup && text.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

/// Checks a file name as given by the uploader: 1–255 bytes, no path separators or controls.
/// The name is only ever shown back (sealed at rest); it never names a file on disk.
pub fn check_file_name(name: &str) -> Result<String, ValidationError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
        && name != "."
        && name != "..";
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ValidationError::new(
            "file_name",
            "invalid_file_name",
            "a file name has 1 to 255 characters and no slashes",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_types_are_recognised_by_content() {
        assert_eq!(sniff_media_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_media_type(b"\xff\xd8\xff\xe0JFIF"), Some("image/jpeg"));
        assert_eq!(sniff_media_type(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff_media_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            sniff_media_type(b"PK\x03\x04....[Content_Types].xml....word/document.xml"),
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        );
        assert_eq!(sniff_media_type("K+ 6.1 mmol/L\nrepeat in 2h\n".as_bytes()), Some("text/plain"));
    }

    #[test]
    fn every_allowed_type_has_its_kind() {
        use crate::org::AttachmentKind;
        assert_eq!(kind_of("image/heic"), AttachmentKind::Image);
        assert_eq!(kind_of("application/pdf"), AttachmentKind::Pdf);
        assert_eq!(kind_of("text/plain"), AttachmentKind::Text);
        assert_eq!(kind_of("application/rtf"), AttachmentKind::Office);
        assert_eq!(kind_of("application/x-ole-storage"), AttachmentKind::Office);
    }

    #[test]
    fn everything_else_is_refused() {
        assert_eq!(sniff_media_type(b"MZ\x90\0\x03"), None, "Windows executable");
        assert_eq!(sniff_media_type(b"\x7fELF\x02\x01"), None, "ELF executable");
        assert_eq!(sniff_media_type(b"#!/bin/sh\nrm -rf /\x07"), None, "control characters");
        assert_eq!(sniff_media_type(b"<html><script>alert(1)</script>"), None, "HTML");
        assert_eq!(sniff_media_type(b"  <svg onload=alert(1)>"), None, "SVG");
        assert_eq!(sniff_media_type(b"PK\x03\x04 plain zip with payload.exe"), None, "plain ZIP");
        assert_eq!(sniff_media_type(b""), None);
        assert_eq!(sniff_media_type(b"\0\0\0"), None);
    }

    #[test]
    fn file_names_cannot_be_paths() {
        assert_eq!(check_file_name(" lab.pdf ").unwrap(), "lab.pdf");
        assert!(check_file_name("../etc/passwd").is_err());
        assert!(check_file_name("a\\b").is_err());
        assert!(check_file_name("").is_err());
        assert!(check_file_name("bad\nname").is_err());
    }
}
