//! The dashboard on `GET /` (docs/dashboard.md): one page of plain HTML, CSS and JavaScript
//! embedded in the binary, so it works with no internet. It reads `/graphql` like any client:
//! over HTTP for the state, over `graphql-transport-ws` for the station events. On the embedded
//! simulator the page carries a dev token minted for it, as GraphiQL does; otherwise it asks for
//! one.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard/dashboard.css");

/// Where the page's dev token goes, when there is one.
const TOKEN_SLOT: &str = "<!--dev-token-->";

/// Scripts, styles and connections of this origin only (`'self'` covers `ws:`/`wss:` to the same
/// host in CSP 3): no inline script or style, no frame, no form posting elsewhere. The icon is an
/// empty `data:` URL, so that browsers do not ask for `/favicon.ico`.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers of every dashboard answer: no sniffing, no referrer, no framing.
fn hardened(kind: &'static str, cache: &'static str) -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// `s` escaped for an HTML attribute value between double quotes.
fn attribute(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The page, with the dev token in a `<meta>` the script reads (an inline script would need the
/// policy to allow it).
fn page(dev_token: Option<&str>) -> String {
    let slot = match dev_token {
        Some(token) => format!(r#"<meta name="witty-dev-token" content="{}">"#, attribute(token)),
        None => String::new(),
    };
    PAGE.replacen(TOKEN_SLOT, &slot, 1)
}

/// `GET /`. Never cached: it may hold a token minted for this request.
pub(super) async fn index(State(s): State<HttpState>) -> Response {
    let html = page(s.dev_token.as_ref().map(|mint| mint()).as_deref());
    let mut response = (hardened("text/html; charset=utf-8", "no-store"), html).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

/// `GET /dashboard/{file}`: the page's script and style. `no-cache`: they change with the binary.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (hardened(kind, "no-cache"), body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_escaped_into_its_meta_and_left_out_without_one() {
        let with = page(Some(r#"a"b<c>&'"#));
        assert!(with.contains(r#"<meta name="witty-dev-token" content="a&quot;b&lt;c&gt;&amp;&#39;">"#), "{with}");
        let without = page(None);
        assert!(!without.contains("witty-dev-token") && !without.contains(TOKEN_SLOT));
        assert!(PAGE.contains(TOKEN_SLOT), "the page has lost its token slot");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_for_its_policy_to_refuse() {
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style") && !PAGE.contains("style="));
        assert!(PAGE.contains(r#"<script src="/dashboard/dashboard.js""#));
    }
}
