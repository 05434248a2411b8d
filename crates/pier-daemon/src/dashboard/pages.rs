//! The dashboard's embedded pages: one HTML document made of the pages in [`PAGES`],
//! the shared script `core.js`, each page's own script and the stylesheet.
//!
//! A page is two files in `assets/pages/`: `ID.html`, its `<section id="page-ID">`, and
//! `ID.js`, which registers it with `Pier.page("ID", ...)` (see `core.js`). The document
//! (`assets/index.html`) gets the pages' navigation links, sections and script tags where
//! it says `{{nav}}`, `{{sections}}` and `{{scripts}}`. Adding a page is adding its two
//! files and a line to [`PAGES`].
//!
//! For work on the pages, `PIER_DASHBOARD_ASSETS=DIR` in the daemon's environment serves
//! them from `DIR` (this `assets/` directory in a checkout) at each request instead of the
//! copies built into the binary, so an edit shows at the browser's next reload.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One page: its id (`#/ID` in the address, `page-ID` and `nav-ID` in the document), the
/// title of its navigation link, and its two files.
struct Page {
    id: &'static str,
    title: &'static str,
    html: &'static str,
    js: &'static str,
}

macro_rules! page {
    ($id:literal, $title:literal) => {
        Page {
            id: $id,
            title: $title,
            html: include_str!(concat!("assets/pages/", $id, ".html")),
            js: include_str!(concat!("assets/pages/", $id, ".js")),
        }
    };
}

/// The pages, in the navigation's order; the first is the one an empty address shows.
const PAGES: &[Page] = &[
    page!("overview", "Overview"),
    page!("instances", "Instances"),
    page!("images", "Images"),
    page!("registry", "Registry"),
    page!("networks", "Networks"),
    page!("volumes", "Volumes"),
    page!("terminal", "Terminal"),
    page!("hosts", "Hosts"),
];

const INDEX: &str = include_str!("assets/index.html");
const CORE_JS: &str = include_str!("assets/core.js");
const STYLE: &str = include_str!("assets/style.css");

/// Where `PIER_DASHBOARD_ASSETS` points, if it is set.
fn dev_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("PIER_DASHBOARD_ASSETS").map(PathBuf::from);
        if let Some(d) = &dir {
            tracing::warn!(dir = %d.display(), "dashboard pages served from disk (PIER_DASHBOARD_ASSETS)");
        }
        dir
    })
    .clone()
}

/// An asset's text: from the development directory when one is set, else `built`.
fn text(rel: &str, built: &'static str) -> String {
    match dev_dir() {
        Some(d) => std::fs::read_to_string(d.join(rel)).unwrap_or_else(|e| {
            tracing::warn!(file = rel, error = %e, "cannot read a dashboard asset from disk");
            built.to_string()
        }),
        None => built.to_string(),
    }
}

/// The document with every page's link, section and script in place.
fn index() -> String {
    let mut nav = String::new();
    let mut sections = String::new();
    let mut scripts = String::from("<script src=\"/assets/core.js\" defer></script>\n");
    for p in PAGES {
        nav += &format!(
            "<li><a href=\"#/{0}\" id=\"nav-{0}\">{1}</a></li>\n",
            p.id, p.title
        );
        sections += &text(&format!("pages/{}.html", p.id), p.html);
        scripts += &format!(
            "<script src=\"/assets/pages/{}.js\" defer></script>\n",
            p.id
        );
    }
    text("index.html", INDEX)
        .replace("{{nav}}", &nav)
        .replace("{{sections}}", &sections)
        .replace("{{scripts}}", &scripts)
}

fn asset(body: String, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

const JS: &str = "text/javascript; charset=utf-8";

/// A page's script, by its file name (`ID.js`).
async fn page_js(Path(file): Path<String>) -> Response {
    match PAGES
        .iter()
        .find(|p| file.strip_suffix(".js") == Some(p.id))
    {
        Some(p) => asset(text(&format!("pages/{file}"), p.js), JS),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/`, `/assets/core.js`, `/assets/pages/ID.js` and `/assets/style.css`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(index(), "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/core.js",
            get(|| async { asset(text("core.js", CORE_JS), JS) }),
        )
        .route("/assets/pages/{file}", get(page_js))
        .route(
            "/assets/style.css",
            get(|| async { asset(text("style.css", STYLE), "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_page_once_and_no_placeholder_left() {
        let doc = index();
        for p in PAGES {
            assert_eq!(
                doc.matches(&format!("id=\"nav-{}\"", p.id)).count(),
                1,
                "{}",
                p.id
            );
            assert_eq!(
                doc.matches(&format!("id=\"page-{}\"", p.id)).count(),
                1,
                "{}",
                p.id
            );
            assert_eq!(
                doc.matches(&format!("/assets/pages/{}.js", p.id)).count(),
                1
            );
            assert!(
                p.js.contains(&format!("Pier.page(\"{}\"", p.id)),
                "{}.js registers itself",
                p.id
            );
        }
        assert!(!doc.contains("{{"), "a placeholder is left: {doc}");
    }
}
