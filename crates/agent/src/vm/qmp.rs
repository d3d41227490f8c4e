//! A small async QMP client over QEMU's unix socket: one JSON object per line.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A QMP failure, naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("connecting to QMP socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP I/O on {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection before answering.
    #[error("QMP socket {path} closed while waiting for a reply to {command}")]
    Closed {
        /// The socket.
        path: PathBuf,
        /// The command (or `greeting`) that was waiting.
        command: String,
    },
    /// QEMU sent something that is not a QMP message.
    #[error("QMP socket {path} sent invalid JSON: {line}")]
    Decode {
        /// The socket.
        path: PathBuf,
        /// The line received.
        line: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The first message was not a QMP greeting.
    #[error("QMP socket {path} did not greet with QMP: {message}")]
    Greeting {
        /// The socket.
        path: PathBuf,
        /// What it sent instead.
        message: String,
    },
    /// QEMU answered the command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP's error class, e.g. `GenericError`.
        class: String,
        /// QMP's description.
        desc: String,
    },
}

/// The guest's run state as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    /// Whether the vCPUs run.
    pub running: bool,
    /// QEMU's run state, e.g. `running`, `paused`, `shutdown`, `prelaunch`.
    pub status: String,
}

/// A connected QMP session, past the greeting and capability negotiation.
#[derive(Debug)]
pub struct QmpClient {
    path: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl QmpClient {
    /// Connects to `path`, reads the greeting and leaves capability negotiation mode.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut client = QmpClient {
            path: path.to_path_buf(),
            lines: BufReader::new(read).lines(),
            writer,
        };
        let greeting = client.read_message("greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting {
                path: client.path.clone(),
                message: greeting.to_string(),
            });
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    async fn read_message(&mut self, command: &str) -> Result<Value, QmpError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?
            .ok_or_else(|| QmpError::Closed {
                path: self.path.clone(),
                command: command.to_string(),
            })?;
        serde_json::from_str(&line).map_err(|source| QmpError::Decode {
            path: self.path.clone(),
            line,
            source,
        })
    }

    /// Runs `command` with optional `arguments`, skipping asynchronous events, and
    /// returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let mut message = self.read_message(command).await?;
            if message.get("event").is_some() {
                tracing::debug!(event = %message, "QMP event");
                continue;
            }
            if let Some(ret) = message.get_mut("return") {
                return Ok(ret.take());
            }
            let error = message.get("error");
            let field = |name: &str| {
                error
                    .and_then(|e| e.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string()
            };
            return Err(QmpError::Command {
                command: command.to_string(),
                class: field("class"),
                desc: if error.is_some() {
                    field("desc")
                } else {
                    format!("unexpected reply {message}")
                },
            });
        }
    }

    /// `query-status`: whether the guest runs, and QEMU's run state.
    pub async fn query_status(&mut self) -> Result<RunStatus, QmpError> {
        let ret = self.execute("query-status", None).await?;
        Ok(RunStatus {
            running: ret.get("running").and_then(Value::as_bool).unwrap_or(false),
            status: ret
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
        })
    }

    /// `system_powerdown`: presses the ACPI power button; the guest decides what to do.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once. The connection closing right after counts as success.
    pub async fn quit(mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP peer: checks each request and sends canned lines.
    async fn serve(listener: UnixListener, script: Vec<(&'static str, Vec<&'static str>)>) {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .expect("greet");
        for (want, replies) in script {
            let got = lines.next_line().await.expect("read").expect("line");
            let got: Value = serde_json::from_str(&got).expect("json");
            assert_eq!(got["execute"], want);
            for r in replies {
                write
                    .write_all(format!("{r}\n").as_bytes())
                    .await
                    .expect("write");
            }
        }
    }

    #[tokio::test]
    async fn status_skips_events_and_errors_are_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(serve(
            listener,
            vec![
                ("qmp_capabilities", vec![r#"{"return": {}}"#]),
                (
                    "query-status",
                    vec![
                        r#"{"event": "RESUME", "timestamp": {}}"#,
                        r#"{"return": {"running": true, "status": "running"}}"#,
                    ],
                ),
                (
                    "system_powerdown",
                    vec![r#"{"error": {"class": "GenericError", "desc": "nope"}}"#],
                ),
            ],
        ));
        let mut qmp = QmpClient::connect(&path).await.expect("connect");
        let status = qmp.query_status().await.expect("status");
        assert_eq!(
            status,
            RunStatus {
                running: true,
                status: "running".into()
            }
        );
        match qmp.system_powerdown().await {
            Err(QmpError::Command { class, desc, .. }) => {
                assert_eq!((class.as_str(), desc.as_str()), ("GenericError", "nope"));
            }
            other => panic!("expected a command error, got {other:?}"),
        }
        server.await.expect("server");
        // The peer is gone now: a further command reports the closed socket.
        assert!(matches!(
            qmp.query_status().await,
            Err(QmpError::Closed { .. } | QmpError::Io { .. })
        ));
    }
}
