//! The status page: `GET /` serves one HTML document with its CSS and
//! JavaScript embedded at compile time (no build step, no CDN), which
//! listens to `GET /events` (see `events`) and redraws from each snapshot
//! (see `snapshot`).

mod events;
mod snapshot;

use axum::extract::State;
use axum::response::Html;

pub(crate) use events::events;

use crate::AppState;

/// The page, assembled at compile time.
const PAGE: &str = concat!(
    include_str!("page.html"),
    "<style>\n",
    include_str!("page.css"),
    "</style>\n<script>\n",
    include_str!("page.js"),
    "</script>\n</body>\n</html>\n"
);

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The page with this node's name in its title, so that it reads right
/// before the first event arrives.
pub(crate) async fn status_page(State(state): State<AppState>) -> Html<String> {
    Html(PAGE.replace("__NODE__", &escape(state.node.name().as_str())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("<b a='x'>&\""), "&lt;b a=&#39;x&#39;&gt;&amp;&quot;");
    }

    #[test]
    fn the_page_is_one_document_with_its_style_and_script() {
        let page = super::PAGE;
        assert!(page.starts_with("<!doctype html>") && page.trim_end().ends_with("</html>"));
        assert!(page.contains("<style>") && page.contains("new EventSource("));
        let external = ["<script src", "<link", "@import", "url(", "https://"];
        assert!(external.iter().all(|e| !page.contains(e)), "no external resources");
        assert_eq!(page.matches("__NODE__").count(), 2, "the name goes in the title and the header");
    }
}
