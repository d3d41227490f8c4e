//! TFTP packets (RFC 1350) with option negotiation (RFC 2347: `blksize` of RFC 2348,
//! `tsize` and `timeout` of RFC 2349), as a PXE ROM speaks them to fetch iPXE.
//!
//! [`Packet::decode`] takes any bytes from the network and returns an error, never
//! panics; [`Packet::encode`] is its inverse.

/// The largest block size the server agrees to (RFC 2348 allows 65,464; this fits
/// an Ethernet frame with the IP and UDP headers).
pub const MAX_BLOCK: usize = 1468;
/// The block size without negotiation.
pub const DEFAULT_BLOCK: usize = 512;

/// A TFTP error code (RFC 1350 §5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined; see the message.
    Undefined = 0,
    /// File not found.
    NotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTid = 5,
    /// Option negotiation refused.
    BadOption = 8,
}

/// One TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request: file name, mode (`octet` or `netascii`) and options.
    Rrq {
        /// The file asked for.
        filename: String,
        /// The transfer mode, lower-cased.
        mode: String,
        /// Option names (lower-cased) and values, in the order sent.
        options: Vec<(String, String)>,
    },
    /// Write request; the server refuses every one.
    Wrq {
        /// The file named.
        filename: String,
    },
    /// A block of the file.
    Data {
        /// The block number, from 1, wrapping at 65,535.
        block: u16,
        /// The block's bytes; fewer than the block size ends the transfer.
        data: Vec<u8>,
    },
    /// Acknowledges a block (0 acknowledges an OACK).
    Ack {
        /// The block acknowledged.
        block: u16,
    },
    /// An error, which ends the transfer.
    Error {
        /// The code.
        code: u16,
        /// The message.
        message: String,
    },
    /// The options the server accepted.
    Oack {
        /// Option names and values.
        options: Vec<(String, String)>,
    },
}

/// Bytes that are no TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TftpError {
    /// Shorter than an opcode and its fixed fields.
    #[error("TFTP packet of {0} bytes is too short")]
    Short(usize),
    /// An opcode outside 1 to 6.
    #[error("unknown TFTP opcode {0}")]
    Opcode(u16),
    /// A string field without its terminating NUL.
    #[error("TFTP string field without its NUL")]
    Unterminated,
    /// A string field that is not UTF-8 (file names, modes, options are ASCII).
    #[error("TFTP string field is not text")]
    NotText,
    /// An option name without its value.
    #[error("TFTP option {0:?} has no value")]
    OptionWithoutValue(String),
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, TftpError> {
    match bytes.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(TftpError::Short(bytes.len())),
    }
}

/// Splits NUL-terminated strings; the bytes after the last NUL must be empty.
fn strings(mut bytes: &[u8]) -> Result<Vec<String>, TftpError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or(TftpError::Unterminated)?;
        let s = std::str::from_utf8(&bytes[..end]).map_err(|_| TftpError::NotText)?;
        out.push(s.to_owned());
        bytes = &bytes[end + 1..];
    }
    Ok(out)
}

fn options(fields: &[String]) -> Result<Vec<(String, String)>, TftpError> {
    fields
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => Ok((name.to_ascii_lowercase(), value.clone())),
            [name] => Err(TftpError::OptionWithoutValue(name.clone())),
            _ => Err(TftpError::Unterminated),
        })
        .collect()
}

impl Packet {
    /// Decodes one datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, TftpError> {
        let opcode = u16_at(bytes, 0)?;
        let body = &bytes[2..];
        match opcode {
            1 | 2 => {
                let fields = strings(body)?;
                let (filename, mode) = match fields.as_slice() {
                    [f, m, ..] => (f.clone(), m.to_ascii_lowercase()),
                    _ => return Err(TftpError::Unterminated),
                };
                if opcode == 2 {
                    return Ok(Self::Wrq { filename });
                }
                Ok(Self::Rrq {
                    filename,
                    mode,
                    options: options(&fields[2..])?,
                })
            }
            3 => Ok(Self::Data {
                block: u16_at(bytes, 2)?,
                data: bytes[4..].to_vec(),
            }),
            4 => Ok(Self::Ack {
                block: u16_at(bytes, 2)?,
            }),
            5 => {
                let code = u16_at(bytes, 2)?;
                // Some clients leave out the message's NUL.
                let text = bytes[4..].strip_suffix(&[0]).unwrap_or(&bytes[4..]);
                Ok(Self::Error {
                    code,
                    message: String::from_utf8_lossy(text).into_owned(),
                })
            }
            6 => Ok(Self::Oack {
                options: options(&strings(body)?)?,
            }),
            other => Err(TftpError::Opcode(other)),
        }
    }

    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let push_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Self::Rrq {
                filename,
                mode,
                options,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                push_str(&mut out, filename);
                push_str(&mut out, mode);
                for (k, v) in options {
                    push_str(&mut out, k);
                    push_str(&mut out, v);
                }
            }
            Self::Wrq { filename } => {
                out.extend_from_slice(&2u16.to_be_bytes());
                push_str(&mut out, filename);
                push_str(&mut out, "octet");
            }
            Self::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Self::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Self::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                push_str(&mut out, message);
            }
            Self::Oack { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    push_str(&mut out, k);
                    push_str(&mut out, v);
                }
            }
        }
        out
    }

    /// An error packet.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code: code as u16,
            message: message.into(),
        }
    }
}

/// The options of a read request the server accepts, with the values it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The block size.
    pub block: usize,
    /// The options to acknowledge in an OACK; empty means no OACK (plain RFC 1350).
    pub ack: Vec<(String, String)>,
}

/// Grants what a read request of a file of `size` bytes asks: `blksize` clamped to
/// 8..=[`MAX_BLOCK`], `tsize` answered with the size; unknown options are ignored
/// (RFC 2347), and so is a malformed value.
pub fn negotiate(options: &[(String, String)], size: u64) -> Negotiated {
    let mut block = DEFAULT_BLOCK;
    let mut ack = Vec::new();
    for (name, value) in options {
        match name.as_str() {
            "blksize" => {
                if let Ok(asked) = value.parse::<usize>() {
                    if asked >= 8 {
                        block = asked.min(MAX_BLOCK);
                        ack.push((name.clone(), block.to_string()));
                    }
                }
            }
            "tsize" => ack.push((name.clone(), size.to_string())),
            _ => {}
        }
    }
    Negotiated { block, ack }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pxe_rom_read_request_decodes_with_its_options() {
        let mut bytes = vec![0, 1];
        bytes.extend_from_slice(b"undionly.kpxe\0octet\0tsize\x000\0BLKSIZE\x001432\0");
        let p = Packet::decode(&bytes).expect("decodes");
        assert_eq!(
            p,
            Packet::Rrq {
                filename: "undionly.kpxe".into(),
                mode: "octet".into(),
                options: vec![
                    ("tsize".into(), "0".into()),
                    ("blksize".into(), "1432".into())
                ],
            }
        );
        assert_eq!(Packet::decode(&p.encode()).expect("round trip"), p);
    }

    #[test]
    fn every_packet_round_trips() {
        for p in [
            Packet::Wrq {
                filename: "x".into(),
            },
            Packet::Data {
                block: 65535,
                data: vec![1, 2, 3],
            },
            Packet::Ack { block: 7 },
            Packet::error(ErrorCode::NotFound, "no such file"),
            Packet::Oack {
                options: vec![("blksize".into(), "1468".into())],
            },
        ] {
            assert_eq!(Packet::decode(&p.encode()).expect("decodes"), p);
        }
    }

    #[test]
    fn broken_packets_are_errors() {
        assert_eq!(Packet::decode(&[]), Err(TftpError::Short(0)));
        assert_eq!(Packet::decode(&[0, 4, 1]), Err(TftpError::Short(3)));
        assert_eq!(Packet::decode(&[0, 9, 0, 0]), Err(TftpError::Opcode(9)));
        assert_eq!(Packet::decode(b"\0\x01file"), Err(TftpError::Unterminated));
        assert_eq!(
            Packet::decode(b"\0\x01file\0octet\0blksize\0"),
            Err(TftpError::OptionWithoutValue("blksize".into()))
        );
        assert_eq!(
            Packet::decode(b"\0\x01\xff\0octet\0"),
            Err(TftpError::NotText)
        );
    }

    #[test]
    fn negotiation_clamps_the_block_and_answers_the_size() {
        let asked = vec![
            ("blksize".to_string(), "65464".to_string()),
            ("tsize".to_string(), "0".to_string()),
            ("windowsize".to_string(), "4".to_string()),
        ];
        let n = negotiate(&asked, 70_000);
        assert_eq!(n.block, MAX_BLOCK);
        assert_eq!(
            n.ack,
            vec![
                ("blksize".to_string(), "1468".to_string()),
                ("tsize".to_string(), "70000".to_string())
            ]
        );
        let plain = negotiate(&[("blksize".into(), "4".into())], 1);
        assert_eq!(plain.block, DEFAULT_BLOCK);
        assert!(plain.ack.is_empty());
    }
}
