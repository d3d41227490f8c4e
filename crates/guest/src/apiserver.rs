//! What the API server stand-in answers, as pure data: health and version for
//! anyone, and for every other path the identity of a client that authenticated
//! with a certificate from the cluster CA.
//!
//! It stands in for kube-apiserver in tests of what Shoal sets up around it (the
//! certificates, the kubeconfigs, the gateway's routing); it serves no Kubernetes
//! API.

use serde_json::json;

use crate::http1::{Request, Responder, Response, Status};
use crate::node::KubeVersion;
use crate::whoami::Identity;

/// The kind of the JSON answer to an authenticated request.
pub const WHOAMI_KIND: &str = "ShoalGuestWhoAmI";

/// The API server stand-in for one Kubernetes release.
#[derive(Debug, Clone)]
pub struct ApiServer {
    version: KubeVersion,
}

impl ApiServer {
    /// A stand-in reporting `version` on `/version`.
    pub fn new(version: KubeVersion) -> Self {
        Self { version }
    }

    /// kube-apiserver's `/version` document (`version.Info`).
    fn version_info(&self) -> serde_json::Value {
        json!({
            "major": self.version.major.to_string(),
            "minor": self.version.minor.to_string(),
            "gitVersion": self.version.to_string(),
            "gitCommit": "",
            "gitTreeState": "",
            "buildDate": "",
            "goVersion": "",
            "compiler": "",
            "platform": "linux/amd64",
        })
    }
}

/// A Kubernetes `Status` failure.
pub fn status(code: Status, message: &str) -> Response {
    Response::json(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": code.reason(),
            "code": code.code(),
        }),
    )
}

impl Responder for ApiServer {
    fn respond(&self, req: &Request, client_cert: Option<&[u8]>) -> Response {
        match req.path.as_str() {
            "/readyz" | "/livez" | "/healthz" => Response::text(Status::Ok, "ok"),
            "/version" => Response::json(Status::Ok, &self.version_info()),
            path => {
                let Some(der) = client_cert else {
                    return status(
                        Status::Unauthorized,
                        &format!(
                            "{path} needs a client certificate signed by the cluster CA \
                             (only /readyz, /livez, /healthz and /version are anonymous)"
                        ),
                    );
                };
                match Identity::from_der(der) {
                    Ok(id) => Response::json(
                        Status::Ok,
                        &json!({
                            "kind": WHOAMI_KIND,
                            "user": id.user,
                            "groups": id.groups,
                            "path": path,
                        }),
                    ),
                    Err(e) => status(Status::Unauthorized, &e.to_string()),
                }
            }
        }
    }

    fn refuse(&self, code: Status, why: &str) -> Response {
        status(code, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
        }
    }

    fn body(r: &Response) -> serde_json::Value {
        serde_json::from_slice(&r.body).expect("JSON body")
    }

    fn server() -> ApiServer {
        ApiServer::new("1.31.2".parse().expect("version"))
    }

    #[test]
    fn health_and_version_are_anonymous() {
        for path in ["/readyz", "/livez", "/healthz"] {
            let r = server().respond(&get(path), None);
            assert_eq!(
                (r.status, r.body.as_slice()),
                (Status::Ok, &b"ok"[..]),
                "{path}"
            );
        }
        let r = server().respond(&get("/version"), None);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.content_type, "application/json");
        let v = body(&r);
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "31");
        assert_eq!(v["gitVersion"], "v1.31.2");
        assert_eq!(v["platform"], "linux/amd64");
    }

    #[test]
    fn anything_else_without_a_certificate_is_a_401_status() {
        let r = server().respond(&get("/api"), None);
        assert_eq!(r.status, Status::Unauthorized);
        let v = body(&r);
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Unauthorized");
        assert_eq!(v["code"], 401);
        assert!(v["message"]
            .as_str()
            .expect("message")
            .starts_with("/api needs"));

        // A certificate the handshake let through but that names nobody.
        let r = server().respond(&get("/api"), Some(b"junk"));
        assert_eq!(r.status, Status::Unauthorized);
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let r = server().refuse(Status::HeaderFieldsTooLarge, "too big");
        assert_eq!(r.status.code(), 431);
        assert_eq!(body(&r)["reason"], "RequestHeaderFieldsTooLarge");
        assert_eq!(body(&r)["message"], "too big");
    }
}
