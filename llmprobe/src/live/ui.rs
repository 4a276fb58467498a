//! The trace page served at `--ui-addr`: static assets built into the binary (no build step, no
//! external resource: the page works offline).
//!
//! `ui/index.html` lays out the recent calls (filterable, refreshed every 2 s) and one call's
//! timeline; `ui/app.js` fills them from the API ([`super::api`]) on the same origin;
//! `ui/style.css` styles both, light or dark after the browser's preference.
//!
//! Invariants:
//! * The script is its own asset: the content security policy ([`super::serve`]) allows the
//!   page's own scripts only, no inline script.
//! * Every value from a record (process and model names come from other processes) is inserted
//!   as text (`textContent`, text nodes, numeric attributes), never parsed as HTML.
//! * Only these paths are answered; anything else is the API's or a 404.

use super::api::Answer;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The page's assets by path; None for any other path.
pub fn asset(path: &str) -> Option<Answer> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Some(Answer {
        status: "200 OK",
        content_type,
        body: body.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_their_types() {
        let index = asset("/").expect("index");
        assert!(index.content_type.starts_with("text/html"));
        let html = String::from_utf8(index.body).expect("utf-8");
        // Everything the page loads is one of these assets, from the same origin.
        for (path, ctype) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
            assert!(html.contains(&format!("\"{path}\"")), "{path} is linked");
            let a = asset(path).expect(path);
            assert!(a.content_type.starts_with(ctype), "{path}");
            assert!(!a.body.is_empty());
        }
        assert_eq!(
            asset("/index.html").map(|a| a.body.len()),
            Some(INDEX.len())
        );
        assert!(asset("/app.js.map").is_none());
        assert!(asset("/../Cargo.toml").is_none());
    }

    #[test]
    fn the_page_has_no_inline_script_nor_external_resource() {
        // The CSP would block an inline script; an external one would not load offline.
        let scripts = INDEX.matches("<script").count();
        assert_eq!(scripts, INDEX.matches("<script src=\"/").count(), "{INDEX}");
        assert!(
            !INDEX
                .split(|c: char| c.is_whitespace() || c == '<')
                .any(|w| w.starts_with("on") && w.contains('=')),
            "no inline event handler"
        );
        for text in [INDEX, APP_JS, STYLE] {
            assert!(!text.contains("http://") || text.contains("http://www.w3.org/2000/svg"));
            assert!(!text.contains("https://"));
        }
    }

    #[test]
    fn the_script_never_parses_data_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
