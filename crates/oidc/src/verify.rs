//! ID token verification for the API server.
//!
//! A token is accepted only when its signature checks against a key the issuer
//! publishes in its JWKS (found through discovery, cached, and fetched again
//! when a token names a `kid` the cache does not hold, at most once a second),
//! its `iss` is a configured issuer, its `aud` holds that issuer's client id, and
//! `exp` and `nbf` hold within a small clock skew. Symmetric algorithms and
//! `alg: none` are refused before any key is looked at.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::discovery::{discover, DiscoveryError};
use crate::http::{client, HttpClientError};

/// The clock skew allowed on `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The shortest time between two JWKS fetches of one issuer.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// One issuer the API server trusts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as tokens carry it in `iss`.
    #[serde(rename = "issuerURL")]
    pub issuer_url: String,
    /// The client id tokens must be issued to (`aud`).
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The claim naming the user.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim listing the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// A CA (PEM) to trust for the issuer's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

/// Who a verified token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The issuer that signed it.
    pub issuer: String,
    /// Its `sub`.
    pub subject: String,
    /// The value of the issuer's username claim.
    pub username: String,
    /// The values of the issuer's groups claim (none when absent).
    pub groups: Vec<String>,
    /// When it expires, in seconds since the epoch.
    pub expires: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("the bearer token is not a JSON Web Token")]
    Malformed,
    /// `alg: none` or a symmetric algorithm.
    #[error("the ID token's algorithm {alg:?} is not accepted: issuers must sign ID tokens with a public-key algorithm (RS256, ES256, ...)")]
    AlgorithmRefused {
        /// The algorithm the header names.
        alg: String,
    },
    /// `iss` names no configured issuer.
    #[error("the ID token's issuer {issuer:?} is not trusted by this server (trusted: {trusted}); log in with a trusted issuer")]
    UnknownIssuer {
        /// The `iss` claim.
        issuer: String,
        /// The configured issuers, comma-separated.
        trusted: String,
    },
    /// The `kid` is not in the issuer's JWKS, even after fetching it again.
    #[error(
        "the ID token is signed with key {kid:?}, which {issuer} does not publish: log in again"
    )]
    UnknownKey {
        /// The issuer.
        issuer: String,
        /// The header's `kid` (empty when absent).
        kid: String,
    },
    /// The signature does not check.
    #[error("the ID token's signature does not verify against {issuer}'s keys")]
    BadSignature {
        /// The issuer.
        issuer: String,
    },
    /// `exp` has passed.
    #[error(
        "the ID token has expired: log in again (shoal login --oidc), or let the CLI refresh it"
    )]
    Expired,
    /// `nbf` is in the future.
    #[error("the ID token is not valid yet (nbf is in the future): check the clocks of this server and the issuer")]
    NotYetValid,
    /// `aud` does not hold the client id.
    #[error("the ID token was issued to another client (aud does not contain {client_id:?}): log in with client id {client_id:?}")]
    WrongAudience {
        /// The configured client id.
        client_id: String,
    },
    /// A claim the server needs is missing or has the wrong type.
    #[error("the ID token's claim {claim:?} is missing or not {expected}")]
    Claim {
        /// The claim.
        claim: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `email` is the username claim and `email_verified` is false.
    #[error("the ID token's email is not verified by the issuer: verify it there, or ask an admin to use another username claim")]
    EmailUnverified,
    /// Any other refusal by the JWT library.
    #[error("the ID token is invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The issuer could not be asked for its keys.
    #[error("cannot fetch the signing keys of {issuer}: {reason}; retry later")]
    IssuerUnavailable {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
}

impl VerifyError {
    /// True when the token may be fine and the issuer was unreachable.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VerifyError::IssuerUnavailable { .. })
    }
}

/// Why a verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The issuer URL is not usable.
    #[error("the OIDC issuer URL {url:?} must be an https:// URL (http:// only for 127.0.0.1 or localhost) without a query or fragment")]
    IssuerUrl {
        /// The URL given.
        url: String,
    },
    /// The client id is empty.
    #[error("the OIDC issuer {issuer} needs a client id (--oidc-client-id)")]
    ClientId {
        /// The issuer.
        issuer: String,
    },
    /// Two issuers share an issuer URL.
    #[error("the OIDC issuer {issuer} is configured twice")]
    Duplicate {
        /// The issuer.
        issuer: String,
    },
    /// The HTTP client could not be built.
    #[error("OIDC issuer {issuer}: {source}")]
    Http {
        /// The issuer.
        issuer: String,
        /// Why.
        #[source]
        source: HttpClientError,
    },
}

/// The keys of one issuer, by `kid`.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<(Option<Algorithm>, DecodingKey)>>,
    /// Keys without a `kid`, tried in order when a token has none.
    unnamed: Vec<Arc<(Option<Algorithm>, DecodingKey)>>,
    fetched: Option<Instant>,
}

/// One trusted issuer and its cached keys.
struct Issuer {
    config: IssuerConfig,
    http: reqwest::Client,
    keys: Mutex<KeySet>,
}

/// The most verified tokens remembered at once.
const CACHE_ENTRIES: usize = 10_000;

/// Verifies ID tokens from a fixed set of issuers.
pub struct Verifier {
    issuers: Vec<Issuer>,
    /// Tokens already verified, by the SHA-256 of the token, until they expire:
    /// a client sends the same ID token with every request, and its signature
    /// need not be checked again. Only what the token says is kept; roles are
    /// never cached.
    verified: std::sync::Mutex<HashMap<[u8; 32], Cached>>,
}

/// A verified token and the key that signed it: a hit counts only while the
/// issuer still publishes that key, so a retired key's tokens stop working.
#[derive(Clone)]
struct Cached {
    token: VerifiedToken,
    kid: Option<String>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The JOSE header fields Shoal reads.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, VerifyError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

fn valid_issuer_url(url: &str) -> bool {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split(['/', ':']).next().unwrap_or_default();
        if host != "127.0.0.1" && host != "localhost" {
            return false;
        }
        r
    } else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['?', '#', ' '])
}

/// The algorithm an issuer's JWK declares, if any; a token signed with another
/// algorithm is not checked against it.
fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    jwk.common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok())
}

fn parse_algorithm(alg: &str) -> Result<Algorithm, VerifyError> {
    let refused = || VerifyError::AlgorithmRefused {
        alg: alg.to_owned(),
    };
    let parsed: Algorithm = alg.parse().map_err(|_| refused())?;
    match parsed {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(refused()),
        other => Ok(other),
    }
}

impl Issuer {
    /// Fetches the JWKS again unless it was fetched less than
    /// [`MIN_REFRESH_INTERVAL`] ago.
    async fn refresh(&self, keys: &mut KeySet) -> Result<(), VerifyError> {
        if keys
            .fetched
            .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL)
        {
            return Ok(());
        }
        let issuer = &self.config.issuer_url;
        let unavailable = |reason: String| VerifyError::IssuerUnavailable {
            issuer: issuer.clone(),
            reason,
        };
        let meta = discover(&self.http, issuer)
            .await
            .map_err(|e: DiscoveryError| unavailable(crate::error_chain(&e)))?;
        let doc: Value = self
            .http
            .get(&meta.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable(format!("{}: {}", meta.jwks_uri, crate::error_chain(&e))))?
            .json()
            .await
            .map_err(|e| unavailable(format!("{}: {}", meta.jwks_uri, crate::error_chain(&e))))?;
        let mut fresh = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        for raw in doc
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A key Shoal cannot use (another type, an encryption key) is skipped,
            // not fatal: the issuer may publish more than ID token keys.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if raw
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let alg = jwk_algorithm(&jwk);
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let entry = Arc::new((alg, key));
            match &jwk.common.key_id {
                Some(kid) => {
                    fresh.keys.insert(kid.clone(), entry);
                }
                None => fresh.unnamed.push(entry),
            }
        }
        tracing::info!(issuer = %issuer, keys = fresh.keys.len() + fresh.unnamed.len(), "fetched the OIDC issuer's signing keys");
        *keys = fresh;
        Ok(())
    }

    /// The keys that may have signed a token with `kid`, fetching the JWKS when
    /// the cache has no match.
    async fn keys_for(
        &self,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<(Option<Algorithm>, DecodingKey)>>, VerifyError> {
        let mut keys = self.keys.lock().await;
        let lookup = |k: &KeySet| match kid {
            Some(kid) => k.keys.get(kid).cloned().into_iter().collect::<Vec<_>>(),
            None => k.unnamed.iter().chain(k.keys.values()).cloned().collect(),
        };
        let found = lookup(&keys);
        if !found.is_empty() {
            return Ok(found);
        }
        self.refresh(&mut keys).await?;
        let found = lookup(&keys);
        if found.is_empty() {
            return Err(VerifyError::UnknownKey {
                issuer: self.config.issuer_url.clone(),
                kid: kid.unwrap_or_default().to_owned(),
            });
        }
        Ok(found)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = CLOCK_SKEW.as_secs();
        v.validate_nbf = true;
        v.set_audience(&[&self.config.client_id]);
        v.set_issuer(&[&self.config.issuer_url]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v
    }

    fn map_error(&self, e: jsonwebtoken::errors::Error) -> VerifyError {
        match e.kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature {
                issuer: self.config.issuer_url.clone(),
            },
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidAudience => VerifyError::WrongAudience {
                client_id: self.config.client_id.clone(),
            },
            ErrorKind::MissingRequiredClaim(c) => VerifyError::Claim {
                claim: c.clone(),
                expected: "present",
            },
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                VerifyError::Malformed
            }
            _ => VerifyError::Invalid(e),
        }
    }

    fn identity(&self, claims: &Value) -> Result<VerifiedToken, VerifyError> {
        let string_claim = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| VerifyError::Claim {
                    claim: name.to_owned(),
                    expected: "a non-empty string",
                })
        };
        let subject = string_claim("sub")?;
        let username = string_claim(&self.config.username_claim)?;
        if self.config.username_claim == "email"
            && claims.get("email_verified").and_then(Value::as_bool) == Some(false)
        {
            return Err(VerifyError::EmailUnverified);
        }
        let groups = match claims.get(&self.config.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| {
                    g.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| VerifyError::Claim {
                            claim: self.config.groups_claim.clone(),
                            expected: "a string or a list of strings",
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(VerifyError::Claim {
                    claim: self.config.groups_claim.clone(),
                    expected: "a string or a list of strings",
                })
            }
        };
        let expires =
            claims
                .get("exp")
                .and_then(Value::as_u64)
                .ok_or_else(|| VerifyError::Claim {
                    claim: "exp".to_owned(),
                    expected: "a number of seconds",
                })?;
        Ok(VerifiedToken {
            issuer: self.config.issuer_url.clone(),
            subject,
            username,
            groups,
            expires,
        })
    }
}

impl Verifier {
    /// A verifier trusting `issuers`. Nothing is fetched until the first token.
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Self, SetupError> {
        let mut out: Vec<Issuer> = Vec::with_capacity(issuers.len());
        for config in issuers {
            if !valid_issuer_url(&config.issuer_url) {
                return Err(SetupError::IssuerUrl {
                    url: config.issuer_url,
                });
            }
            if config.client_id.trim().is_empty() {
                return Err(SetupError::ClientId {
                    issuer: config.issuer_url,
                });
            }
            if out.iter().any(|i| i.config.issuer_url == config.issuer_url) {
                return Err(SetupError::Duplicate {
                    issuer: config.issuer_url,
                });
            }
            let http = client(config.ca_file.as_deref()).map_err(|source| SetupError::Http {
                issuer: config.issuer_url.clone(),
                source,
            })?;
            out.push(Issuer {
                config,
                http,
                keys: Mutex::new(KeySet::default()),
            });
        }
        Ok(Self {
            issuers: out,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|i| &i.config)
    }

    /// True when `token` has the shape of a JWT (three dot-separated parts), so
    /// that it is worth verifying as an ID token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("ey")
    }

    /// Verifies `token` and says who it names; a token verified before is
    /// answered from memory until its `exp`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        let hit = self.verified.lock().ok().and_then(|cache| {
            cache
                .get(&digest)
                .filter(|c| c.token.expires > now)
                .cloned()
        });
        if let Some(hit) = hit {
            if self.still_published(&hit).await {
                return Ok(hit.token);
            }
        }
        let (verified, kid) = self.verify_uncached(token).await?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, c| c.token.expires > now);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                digest,
                Cached {
                    token: verified.clone(),
                    kid,
                },
            );
        }
        Ok(verified)
    }

    /// True while the issuer's cached keys still hold the key of `hit`.
    async fn still_published(&self, hit: &Cached) -> bool {
        let Some(issuer) = self
            .issuers
            .iter()
            .find(|i| i.config.issuer_url == hit.token.issuer)
        else {
            return false;
        };
        let keys = issuer.keys.lock().await;
        match &hit.kid {
            Some(kid) => keys.keys.contains_key(kid),
            None => !keys.unnamed.is_empty(),
        }
    }

    /// Verifies `token` against the issuer's keys; also returns the `kid` it names.
    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(VerifiedToken, Option<String>), VerifyError> {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header: RawHeader = b64_json(head)?;
        let alg = parse_algorithm(&header.alg)?;
        let unverified: Value = b64_json(body)?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::Claim {
                claim: "iss".to_owned(),
                expected: "a string",
            })?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer_url == iss)
            .ok_or_else(|| VerifyError::UnknownIssuer {
                issuer: iss.to_owned(),
                trusted: self
                    .issuers
                    .iter()
                    .map(|i| i.config.issuer_url.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let candidates = issuer.keys_for(header.kid.as_deref()).await?;
        let validation = issuer.validation(alg);
        let mut last = None;
        for key in candidates {
            let (key_alg, key) = &*key;
            // A key is only used with the algorithm family it was published for.
            if key_alg.is_some_and(|k| k != alg) || key.family() != alg.family() {
                last = Some(VerifyError::BadSignature {
                    issuer: issuer.config.issuer_url.clone(),
                });
                continue;
            }
            match jsonwebtoken::decode::<Value>(token, key, &validation) {
                Ok(data) => return Ok((issuer.identity(&data.claims)?, header.kid.clone())),
                Err(e) => {
                    let mapped = issuer.map_error(e);
                    if !matches!(mapped, VerifyError::BadSignature { .. }) {
                        return Err(mapped);
                    }
                    last = Some(mapped);
                }
            }
        }
        Err(last.unwrap_or(VerifyError::BadSignature {
            issuer: issuer.config.issuer_url.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn verifier() -> Verifier {
        Verifier::new(vec![IssuerConfig {
            issuer_url: "https://issuer.example".into(),
            client_id: "shoal".into(),
            username_claim: "email".into(),
            groups_claim: "groups".into(),
            ca_file: None,
        }])
        .expect("a valid configuration")
    }

    fn claims() -> Value {
        serde_json::json!({"iss": "https://issuer.example", "aud": "shoal", "sub": "a", "exp": 4_000_000_000u64})
    }

    #[tokio::test]
    async fn none_and_symmetric_algorithms_are_refused_before_any_key_is_fetched() {
        let v = verifier();
        for alg in ["none", "HS256", "HS512", "nonsense"] {
            let t = token(serde_json::json!({"alg": alg, "typ": "JWT"}), claims());
            match v.verify(&t).await {
                Err(VerifyError::AlgorithmRefused { alg: got }) => assert_eq!(got, alg),
                other => panic!("{alg}: {other:?}"),
            }
        }
        // `alg: none` with an empty signature, as forged tokens carry it.
        let t = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            b64(&claims())
        );
        assert!(matches!(
            v.verify(&t).await,
            Err(VerifyError::AlgorithmRefused { .. })
        ));
    }

    #[tokio::test]
    async fn an_untrusted_issuer_is_named() {
        let mut c = claims();
        c["iss"] = "https://other.example".into();
        let t = token(serde_json::json!({"alg": "RS256", "kid": "k"}), c);
        let err = v_err(verifier().verify(&t).await);
        assert!(
            matches!(&err, VerifyError::UnknownIssuer { issuer, trusted } if issuer == "https://other.example" && trusted == "https://issuer.example"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn malformed_tokens() {
        let v = verifier();
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.x",
            "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.x",
        ] {
            assert!(
                matches!(v.verify(t).await, Err(VerifyError::Malformed)),
                "{t:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_unavailable_not_unauthorized() {
        // Port 9 on loopback: nothing listens, the connection is refused.
        let v = Verifier::new(vec![IssuerConfig {
            issuer_url: "http://127.0.0.1:9".into(),
            client_id: "shoal".into(),
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            ca_file: None,
        }])
        .expect("a valid configuration");
        let mut c = claims();
        c["iss"] = "http://127.0.0.1:9".into();
        let err = v_err(
            v.verify(&token(serde_json::json!({"alg": "RS256", "kid": "k"}), c))
                .await,
        );
        assert!(err.is_unavailable(), "{err:?}");
    }

    fn v_err(r: Result<VerifiedToken, VerifyError>) -> VerifyError {
        match r {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn issuer_urls_and_client_ids_are_checked_at_setup() {
        let cfg = |url: &str, client: &str| IssuerConfig {
            issuer_url: url.into(),
            client_id: client.into(),
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            ca_file: None,
        };
        for bad in [
            "http://issuer.example",
            "ftp://x",
            "https://",
            "https://a?b",
            "issuer.example",
        ] {
            assert!(
                matches!(
                    Verifier::new(vec![cfg(bad, "c")]),
                    Err(SetupError::IssuerUrl { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Verifier::new(vec![cfg("https://a", " ")]),
            Err(SetupError::ClientId { .. })
        ));
        assert!(matches!(
            Verifier::new(vec![cfg("https://a", "c"), cfg("https://a", "d")]),
            Err(SetupError::Duplicate { .. })
        ));
        assert!(Verifier::new(vec![cfg("http://127.0.0.1:5556/dex", "c")]).is_ok());
    }

    #[test]
    fn key_algorithms_parse_from_their_jwk_names() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "alg": "RS256", "kid": "k", "n": "AQAB", "e": "AQAB"
        }))
        .expect("a JWK");
        assert_eq!(jwk_algorithm(&jwk), Some(Algorithm::RS256));
    }
}
