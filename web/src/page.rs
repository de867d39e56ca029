//! `GET /`: a plain status page listing the members. The live page with
//! charts replaces it in a later issue.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Html;

use crate::{AppState, cluster_response};

/// Escapes text for HTML: member names of untrusted nodes are arbitrary.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            other => other.to_string(),
        })
        .collect()
}

pub(crate) async fn status_page(State(state): State<AppState>) -> Html<String> {
    let cluster = cluster_response(&state.node.view(), &state.node.connected());
    let mut rows = String::new();
    for node in &cluster.nodes {
        let name = escape(&node.name);
        let link = match &node.http_addr {
            Some(addr) => format!("<a href=\"http://{}/\">{name}</a>", escape(addr)),
            None => name,
        };
        let _ = write!(
            rows,
            "<tr><td>{link}</td><td class=\"{status}\">{status}</td><td>{age}</td><td>{trusted}</td><td>{connected}</td><td>{draining}</td><td>{gpus}</td></tr>",
            status = node.status.as_str(),
            age = node.age_ms,
            trusted = node.trusted,
            connected = node.connected,
            draining = node.draining,
            gpus = node.gpus.len(),
        );
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>gpumesh {name}</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;text-align:left}}\
.alive{{color:#080}}.suspect{{color:#b60}}.dead{{color:#c00}}</style></head><body>\
<h1>gpumesh node {name}</h1><p>{alive} alive of {total} known members</p>\
<table><tr><th>node</th><th>status</th><th>age ms</th><th>trusted</th><th>connected</th><th>draining</th><th>gpus</th></tr>{rows}</table>\
</body></html>",
        name = escape(&cluster.self_name),
        alive = cluster.totals.nodes_alive,
        total = cluster.nodes.len(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("<b a='x'>&"), "&lt;b a=&#39;x&#39;&gt;&amp;");
    }
}
