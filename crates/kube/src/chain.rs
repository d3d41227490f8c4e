//! One way to render an error with its sources, for logs, conditions and events.

/// An error with its sources on one line, `outer: inner: ...`. A source whose text
/// the message already holds (many errors print their source) is said once.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /etc/x")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading /etc/x: {0}")]
    struct Repeats(#[source] std::io::Error);

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn sources_are_appended() {
        assert_eq!(chain(&Outer(io())), "reading /etc/x: no such file");
    }

    #[test]
    fn a_source_already_printed_is_said_once() {
        assert_eq!(chain(&Repeats(io())), "reading /etc/x: no such file");
    }
}
