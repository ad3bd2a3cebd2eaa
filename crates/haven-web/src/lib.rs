//! Haven's web client: the clinicians' messaging app and the admin console, as static files
//! embedded in the binary (no npm step to run Haven). Libraries are vendored as plain files
//! (`assets/vendor/VENDOR.md` names each version and licence).
//!
//! The page is served with a CSP that allows scripts and styles from this server only (no
//! `unsafe-inline`, no `eval`) and, where the browser supports it, Trusted Types with no
//! policy at all, so no string can ever reach an HTML sink: message text can only ever become
//! text. Assets carry an ETag and are revalidated on every load (`no-cache`); the page itself
//! is `no-store`.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    media-src 'self' blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'; \
    object-src 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `assets/`.
    pub path: &'static str,
    /// Contents.
    pub bytes: &'static [u8],
    /// Media type, from the extension.
    pub content_type: &'static str,
    /// Strong ETag: a digest of the contents.
    pub etag: String,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/json",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn table() -> &'static HashMap<&'static str, Asset> {
    static TABLE: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        embedded::FILES
            .iter()
            .map(|&(path, bytes)| {
                let digest = Sha256::digest(bytes);
                let etag = format!("\"{}\"", data_encoding::BASE64URL_NOPAD.encode(&digest[..16]));
                (path, Asset { path, bytes, content_type: content_type(path), etag })
            })
            .collect()
    })
}

/// The embedded file at `path` (relative to `assets/`), if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    table().get(path)
}

/// Every embedded file's path.
pub fn paths() -> impl Iterator<Item = &'static str> {
    embedded::FILES.iter().map(|(p, _)| *p)
}

fn serve(asset: &Asset, headers: &HeaderMap, page: bool) -> Response {
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag))
        && !page
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(asset.bytes).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = resp.headers_mut();
    if page {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&asset.etag) {
            h.insert(header::ETAG, v);
        }
    }
    resp
}

/// GET / — the web client's page.
async fn page(headers: HeaderMap) -> Response {
    match asset("index.html") {
        Some(a) => serve(a, &headers, true),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// GET /app/{*path} — a script, style sheet, image or vendored library.
async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // The page is served at `/` only, so that it always gets its CSP and `no-store`.
    match asset(&path).filter(|a| a.path != "index.html") {
        Some(a) => serve(a, &headers, false),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The web client's routes: `/` and `/app/…`. Merged into the API router by `haven-http`,
/// whose middleware adds the other security headers.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(page)).route("/app/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        router::<()>().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn the_page_has_a_strict_csp_and_is_never_cached() {
        let r = get("/", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(csp.contains("script-src 'self'") && csp.contains("require-trusted-types-for 'script'"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        // Even with a matching ETag the page is sent again (it is never cached).
        let etag = asset("index.html").unwrap().etag.clone();
        assert_eq!(get("/", Some(&etag)).await.status(), StatusCode::OK);
        // ... and is not reachable under /app/, where it would miss its headers.
        assert_eq!(get("/app/index.html", None).await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn assets_are_revalidated_by_etag() {
        let r = get("/app/js/main.js", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(get("/app/js/main.js", Some(&etag)).await.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/app/js/main.js", Some("\"other\"")).await.status(), StatusCode::OK);
        assert_eq!(get("/app/nope.js", None).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/app/../Cargo.toml", None).await.status(), StatusCode::NOT_FOUND);
    }

    /// The CSP forbids inline script and style: none may exist in the page or be added by the
    /// client's code (`style=` attributes, `<script>` bodies, inline handlers, HTML sinks).
    #[test]
    fn no_inline_script_style_or_html_sinks() {
        let page = std::str::from_utf8(asset("index.html").unwrap().bytes).unwrap();
        for tag in page.split("<script").skip(1) {
            let open_end = tag.find('>').unwrap();
            assert!(tag[..open_end].contains("src="), "inline script in index.html");
            assert!(tag[open_end + 1..].trim_start().starts_with("</script>"), "script with a body");
        }
        assert!(!page.contains("<style") && !page.contains(" style="), "inline style in index.html");
        for path in paths().filter(|p| p.starts_with("js/")) {
            let src = std::str::from_utf8(asset(path).unwrap().bytes).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "dangerouslySetInnerHTML",
                "eval(",
                "new Function",
                " style=",
                "style:",
            ] {
                assert!(!src.contains(sink), "{path} uses {sink}");
            }
            // PHI lives in the page's memory only: nothing is written to browser storage.
            for store in [".setItem(", "indexedDB", "caches.open", "document.cookie ="] {
                assert!(!src.contains(store), "{path} writes to browser storage ({store})");
            }
        }
    }

    #[test]
    fn every_vendored_library_is_listed_with_its_licence() {
        let notes = std::str::from_utf8(asset("vendor/VENDOR.md").unwrap().bytes).unwrap();
        for path in paths().filter(|p| p.starts_with("vendor/") && p.ends_with(".js")) {
            let name = path.trim_start_matches("vendor/");
            assert!(notes.contains(name), "{name} is not in VENDOR.md");
        }
    }
}
