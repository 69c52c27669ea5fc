//! Escaping and the page frame shared by every page.

use std::fmt::Write;

/// `text` as HTML text (or an attribute value in double quotes): `<`, `>`, `&`, `"` and `'`
/// are escaped, so whatever a run holds is shown, never interpreted.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` (text) and `body` (HTML, already escaped); `user` is who is signed in.
pub fn page(title: &str, user: Option<&str>, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · AgentHelm</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
         <script src=\"/ui/app.js\" defer></script></head><body>",
        escape(title)
    );
    out.push_str("<header class=\"top\"><a class=\"brand\" href=\"/\">AgentHelm</a>");
    if let Some(user) = user {
        let _ = write!(
            out,
            "<nav><a href=\"/\">Runs</a><a href=\"/submit\">Submit a plan</a>\
             <a href=\"/approvals\">Approvals</a></nav>\
             <form class=\"signout\" method=\"post\" action=\"/logout\">\
             <span class=\"user\">{}</span><button type=\"submit\">Sign out</button></form>",
            escape(user)
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_becomes_text() {
        assert_eq!(
            escape("<img src=x onerror=\"alert('1')\"> & co"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt; &amp; co"
        );
    }
}
