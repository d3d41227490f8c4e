//! A Redfish client for what provisioning needs from a BMC: find the machine's
//! ComputerSystem, read its power state, set its next boot to PXE, and reset or
//! power it on.
//!
//! Every error names the BMC and, for an answer, the HTTP status and the BMC's own
//! message, so a person can tell a wrong password (401) from a wrong system (404).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// How long one request to a BMC may take (BMCs are slow, not that slow).
const TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to a BMC.
#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    /// No answer: address, routing, TLS.
    #[error("BMC {bmc} did not answer {url}: {source}")]
    Unreachable {
        /// The BMC's address.
        bmc: String,
        /// What was asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// It answered with an error status.
    #[error("BMC {bmc} answered {method} {url} with HTTP {status}{hint}: {message}")]
    Status {
        /// The BMC's address.
        bmc: String,
        /// The method.
        method: &'static str,
        /// What was asked.
        url: String,
        /// The status code.
        status: u16,
        /// What the status usually means here.
        hint: &'static str,
        /// The BMC's message, or the body's start.
        message: String,
    },
    /// Its answer was not the Redfish document expected.
    #[error("BMC {bmc} answered {url} with {what}")]
    Unexpected {
        /// The BMC's address.
        bmc: String,
        /// What was asked.
        url: String,
        /// What was wrong with it.
        what: String,
    },
    /// The client could not be built (TLS set-up).
    #[error("cannot make an HTTP client for BMC {bmc}: {source}")]
    Client {
        /// The BMC's address.
        bmc: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

impl RedfishError {
    /// The HTTP status the BMC answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RedfishError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A BMC's address and credentials.
pub struct Bmc {
    http: reqwest::Client,
    address: String,
    username: String,
    password: String,
}

/// A ComputerSystem as the BMC reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// Its resource path, e.g. `/redfish/v1/Systems/1`.
    pub path: String,
    /// Its Redfish id.
    pub id: String,
    /// `On`, `Off`, `PoweringOn`, `PoweringOff`, or absent.
    pub power_state: Option<String>,
    /// Where its reset action is posted.
    pub reset_target: String,
}

#[derive(Deserialize)]
struct Collection {
    #[serde(rename = "Members", default)]
    members: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(rename = "@odata.id")]
    id: String,
}

/// How the system resets: the Redfish `ResetType` values Shoal uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// Power on a machine that is off.
    On,
    /// Power off at once.
    ForceOff,
    /// Power cycle at once.
    ForceRestart,
}

impl Reset {
    fn as_str(self) -> &'static str {
        match self {
            Reset::On => "On",
            Reset::ForceOff => "ForceOff",
            Reset::ForceRestart => "ForceRestart",
        }
    }
}

/// What an HTTP status usually means from a BMC.
fn hint(status: u16) -> &'static str {
    match status {
        401 => " (the credentials were refused)",
        403 => " (the account may not do this)",
        404 => " (no such resource: check the system's id)",
        _ => "",
    }
}

/// The message in a Redfish error body (`error.@Message.ExtendedInfo[0].Message`,
/// else `error.message`), or the body's first 200 characters.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let err = v.get("error")?;
        err.pointer("/@Message.ExtendedInfo/0/Message")
            .or_else(|| err.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    from_json.unwrap_or_else(|| {
        let trimmed = body.trim();
        if trimmed.is_empty() {
            "no message".into()
        } else {
            trimmed.chars().take(200).collect()
        }
    })
}

impl Bmc {
    /// A client for the BMC at `address` (`http(s)://host[:port]`).
    pub fn new(
        address: &str,
        username: &str,
        password: &str,
        insecure_skip_verify: bool,
    ) -> Result<Self, RedfishError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .danger_accept_invalid_certs(insecure_skip_verify)
            .build()
            .map_err(|source| RedfishError::Client {
                bmc: address.to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            address: address.trim_end_matches('/').to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The URL of `path`, a BMC's path or (in some BMCs' links) a full URL.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.address)
        }
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(String, Value), RedfishError> {
        let url = self.url(path);
        let req = match method {
            "GET" => self.http.get(&url),
            "PATCH" => self.http.patch(&url),
            _ => self.http.post(&url),
        };
        let req = req
            .basic_auth(&self.username, Some(&self.password))
            .header("Accept", "application/json");
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let unreachable = |source| RedfishError::Unreachable {
            bmc: self.address.clone(),
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        // Where a redirect (a system named by its name) ended.
        let final_path = resp.url().path().to_owned();
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            return Err(RedfishError::Status {
                bmc: self.address.clone(),
                method,
                url,
                status,
                hint: hint(status),
                message: error_message(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok((final_path, Value::Null));
        }
        let value = serde_json::from_str(&text).map_err(|e| RedfishError::Unexpected {
            bmc: self.address.clone(),
            url,
            what: format!("a body that is not JSON ({e})"),
        })?;
        Ok((final_path, value))
    }

    /// The ComputerSystem `id` (a Redfish id or a name the BMC redirects), or the
    /// only one the BMC has.
    pub async fn system(&self, id: Option<&str>) -> Result<System, RedfishError> {
        let path = match id {
            Some(id) => format!("/redfish/v1/Systems/{id}"),
            None => {
                let (_, v) = self.send("GET", "/redfish/v1/Systems", None).await?;
                let list: Collection =
                    serde_json::from_value(v).map_err(|e| RedfishError::Unexpected {
                        bmc: self.address.clone(),
                        url: self.url("/redfish/v1/Systems"),
                        what: format!("no system collection ({e})"),
                    })?;
                match list.members.as_slice() {
                    [only] => only.id.clone(),
                    others => {
                        return Err(RedfishError::Unexpected {
                            bmc: self.address.clone(),
                            url: self.url("/redfish/v1/Systems"),
                            what: format!(
                                "{} systems: name one in spec.bmc.system ({})",
                                others.len(),
                                others
                                    .iter()
                                    .map(|l| l.id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        })
                    }
                }
            }
        };
        let (final_path, v) = self.send("GET", &path, None).await?;
        let unexpected = |what: &str| RedfishError::Unexpected {
            bmc: self.address.clone(),
            url: self.url(&path),
            what: what.to_owned(),
        };
        let id = v
            .get("Id")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("a ComputerSystem without an Id"))?
            .to_owned();
        let path = v
            .get("@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(final_path);
        let reset_target = v
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        Ok(System {
            power_state: v
                .get("PowerState")
                .and_then(Value::as_str)
                .map(str::to_owned),
            path,
            id,
            reset_target,
        })
    }

    /// Makes the system's next boot, once, from the network (PXE).
    pub async fn boot_pxe_once(&self, system: &System) -> Result<(), RedfishError> {
        let body = json!({"Boot": {
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
        }});
        self.send("PATCH", &system.path, Some(body)).await?;
        Ok(())
    }

    /// Resets the system.
    pub async fn reset(&self, system: &System, how: Reset) -> Result<(), RedfishError> {
        let body = json!({"ResetType": how.as_str()});
        self.send("POST", &system.reset_target, Some(body)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redfish_error_body_gives_its_message() {
        let body = r#"{"error": {"code": "Base.1.0.GeneralError", "message": "general",
            "@Message.ExtendedInfo": [{"Message": "The system is locked."}]}}"#;
        assert_eq!(error_message(body), "The system is locked.");
        assert_eq!(
            error_message(r#"{"error": {"message": "Authentication failed"}}"#),
            "Authentication failed"
        );
        assert_eq!(
            error_message("  <html>denied</html> "),
            "<html>denied</html>"
        );
        assert_eq!(error_message(""), "no message");
    }

    #[test]
    fn statuses_say_what_they_usually_mean() {
        let e = RedfishError::Status {
            bmc: "http://10.0.0.5".into(),
            method: "GET",
            url: "http://10.0.0.5/redfish/v1/Systems".into(),
            status: 401,
            hint: hint(401),
            message: "Authentication failed".into(),
        };
        assert_eq!(
            e.to_string(),
            "BMC http://10.0.0.5 answered GET http://10.0.0.5/redfish/v1/Systems with HTTP 401 (the credentials were refused): Authentication failed"
        );
        assert_eq!(e.status(), Some(401));
    }
}
