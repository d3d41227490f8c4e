//! The agent's forwarding protocol: how the gateway asks a host agent to open a TCP
//! connection to one of that host's VMs.
//!
//! The gateway connects to the agent's forward endpoint (`Host.status.forwardEndpoint`)
//! and sends one line, `SHOAL-FORWARD <ipv4>:<port>\n`. The agent answers `OK\n` once
//! it has connected to the VM, and from then on copies bytes both ways; or it answers
//! `ERR <reason>\n` and closes. The agent forwards only to ports the gateway itself
//! exposes (the guest API port and the cluster's ingress ports) of VMs it runs, so the
//! endpoint reaches nothing the gateway does not already publish.

use std::net::SocketAddrV4;

/// The first word of a forward request.
pub const REQUEST_PREFIX: &str = "SHOAL-FORWARD ";
/// The agent's answer when the connection to the VM is open.
pub const REPLY_OK: &str = "OK";
/// The first word of the agent's refusal.
pub const REPLY_ERR_PREFIX: &str = "ERR ";
/// The longest request or reply line, newline included.
pub const MAX_LINE: usize = 128;
/// The guest API server's port on control-plane VMs.
pub const GUEST_API_PORT: u16 = 6443;

/// The request line for `target`, newline included.
pub fn request_line(target: SocketAddrV4) -> String {
    format!("{REQUEST_PREFIX}{target}\n")
}

/// Why a request or reply line does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardParseError {
    /// A request line that does not start with [`REQUEST_PREFIX`].
    #[error("expected {prefix:?}<ipv4>:<port>", prefix = REQUEST_PREFIX)]
    NotARequest,
    /// A request whose target is not an IPv4 address and port.
    #[error("{0:?} is not an IPv4 address and port")]
    BadTarget(String),
    /// A reply that is neither `OK` nor `ERR <reason>`.
    #[error("unexpected forward reply {0:?}")]
    UnexpectedReply(String),
}

/// Parses a request line (with or without its newline).
pub fn parse_request(line: &str) -> Result<SocketAddrV4, ForwardParseError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let rest = line
        .strip_prefix(REQUEST_PREFIX)
        .ok_or(ForwardParseError::NotARequest)?;
    rest.parse()
        .map_err(|_| ForwardParseError::BadTarget(rest.to_owned()))
}

/// What the agent answered: a wire message, so the refusal is the agent's text as
/// sent (the agent's typed error, printed), not an error of this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Connected; bytes flow from now on.
    Ok,
    /// Refused, with the agent's reason.
    Err(String),
}

/// Parses a reply line (with or without its newline).
pub fn parse_reply(line: &str) -> Result<Reply, ForwardParseError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line == REPLY_OK {
        return Ok(Reply::Ok);
    }
    match line.strip_prefix(REPLY_ERR_PREFIX) {
        Some(why) => Ok(Reply::Err(why.to_owned())),
        None => Err(ForwardParseError::UnexpectedReply(line.to_owned())),
    }
}

/// The refusal line for `why` (newlines in it become spaces), newline included.
pub fn error_line(why: &str) -> String {
    let mut line: String = why
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    line.truncate(MAX_LINE - REPLY_ERR_PREFIX.len() - 1);
    format!("{REPLY_ERR_PREFIX}{line}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let target: SocketAddrV4 = "10.128.0.10:6443".parse().expect("addr");
        let line = request_line(target);
        assert_eq!(line, "SHOAL-FORWARD 10.128.0.10:6443\n");
        assert!(line.len() <= MAX_LINE);
        assert_eq!(parse_request(&line), Ok(target));
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(parse_request("GET / HTTP/1.1\n").is_err());
        assert!(parse_request("SHOAL-FORWARD example.com:80\n").is_err());
        assert!(parse_request("SHOAL-FORWARD 10.0.0.1\n").is_err());
        assert!(parse_request("SHOAL-FORWARD 10.0.0.1:99999\n").is_err());
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(parse_reply("OK\n"), Ok(Reply::Ok));
        let line = error_line("no VM\nhere");
        assert_eq!(line, "ERR no VM here\n");
        assert_eq!(parse_reply(&line), Ok(Reply::Err("no VM here".into())));
        assert!(error_line(&"x".repeat(500)).len() <= MAX_LINE);
        assert!(parse_reply("HTTP/1.1 400\n").is_err());
    }
}
