//! The operator console: one page, its stylesheet and its script, embedded in the binary at compile time
//! (`include_str!`), so the page works offline and always matches the API it was built with. The page reads
//! and drives only the public JSON API; it is not an API itself, so it stays out of the OpenAPI document.
//!
//! Each file is served with `Cache-Control: no-cache` and an `ETag` hashed from its bytes at compile time:
//! a browser revalidates on every load and gets a 304 until the binary changes. A longer max-age would let
//! a browser pair a cached old script with the new page after an upgrade.

use actix_web::{
    HttpRequest, HttpResponse, get,
    http::header::{self, CacheControl, CacheDirective, ETag, EntityTag, Header, IfNoneMatch},
    routes,
};

/// What the page may load and where it may connect: its own origin only, so a message's content can never
/// run as script. `data:` images are the empty favicon, which keeps the browser from asking for one.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// FNV-1a of `body`, computed at compile time.
    hash: u64,
}

const PAGE: Asset = Asset::new(include_str!("../console/index.html"), "text/html; charset=utf-8");
const STYLESHEET: Asset = Asset::new(include_str!("../console/console.css"), "text/css; charset=utf-8");
const SCRIPT: Asset = Asset::new(include_str!("../console/console.js"), "text/javascript; charset=utf-8");

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            hash: fnv1a(body.as_bytes()),
        }
    }

    /// The file, or a 304 when the browser already holds this version.
    fn respond(&self, request: &HttpRequest) -> HttpResponse {
        let tag = EntityTag::new_strong(format!("{:016x}", self.hash));
        let cached = match IfNoneMatch::parse(request) {
            Ok(IfNoneMatch::Any) => true,
            Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|held| held.weak_eq(&tag)),
            Err(_) => false,
        };
        let mut response = if cached {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header(CacheControl(vec![CacheDirective::NoCache]))
            .insert_header(ETag(tag))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if cached {
            return response.finish();
        }
        response.content_type(self.content_type).body(self.body)
    }
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The console page.
#[routes]
#[get("/")]
#[get("/console")]
#[get("/console/")]
pub async fn page(request: HttpRequest) -> HttpResponse {
    let mut response = PAGE.respond(&request);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    response
}

#[get("/console/console.css")]
pub async fn stylesheet(request: HttpRequest) -> HttpResponse {
    STYLESHEET.respond(&request)
}

#[get("/console/console.js")]
pub async fn script(request: HttpRequest) -> HttpResponse {
    SCRIPT.respond(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_own_tag() {
        let hashes = [PAGE.hash, STYLESHEET.hash, SCRIPT.hash];
        assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2]);
        // The FNV-1a reference value for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
