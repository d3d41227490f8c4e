//! HTML building: escaping and the page frame. Every value from the API or the
//! user goes through [`escape`].

use std::fmt::Write as _;

/// `s` with the five HTML-significant characters escaped, safe in text and in
/// quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` (escaped) and `body` (already HTML). `signed_in`
/// shows the navigation and the sign-out button.
pub fn page(title: &str, signed_in: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let title = escape(title);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Shoal</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #1a1a1a; background: #fff; }}
header {{ display: flex; gap: 1rem; align-items: center; padding: .5rem 1rem; background: #0b3d5c; color: #fff; }}
header a {{ color: #fff; }}
main {{ padding: 1rem; max-width: 70rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #999; }}
label {{ display: block; font-weight: 600; margin-top: .8rem; }}
input {{ font: inherit; padding: .3rem; min-width: 20rem; }}
input[type=number] {{ min-width: 5rem; }}
pre {{ background: #f2f2f2; padding: .5rem; overflow-x: auto; }}
button {{ font: inherit; padding: .3rem .8rem; margin-top: .8rem; }}
.error {{ color: #a00000; font-weight: 600; }}
a:focus, button:focus, input:focus {{ outline: 3px solid #e07b00; outline-offset: 2px; }}
</style>
</head>
<body>
<header><strong>Shoal</strong>"#
    );
    if signed_in {
        out.push_str(
            r#"<nav aria-label="Main"><a href="/ui/clusters">Clusters</a> · <a href="/ui/organizations">Organizations</a> · <a href="/ui/releases">Releases</a> · <a href="/ui/hosts">Hosts</a> · <a href="/ui/getting-started">Getting started</a></nav>
<form method="post" action="/ui/sign-out" style="margin-left:auto"><button type="submit">Sign out</button></form>"#,
        );
    }
    let _ = write!(
        out,
        "</header>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">O'Neil & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn page_escapes_the_title_and_shows_sign_out_only_when_signed_in() {
        let out = page("<x>", false, "<p>b</p>");
        assert!(out.contains("<title>&lt;x&gt; · Shoal</title>"));
        assert!(out.contains("<p>b</p>"));
        assert!(!out.contains("Sign out"));
        assert!(page("t", true, "").contains("Sign out"));
    }
}
