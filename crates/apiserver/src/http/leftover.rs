//! The part of a request body a handler did not read.
//!
//! A request refused before its body is read (a bad token, an unknown path, a
//! bad query) leaves that body on the connection. If it is still in flight when
//! the answer goes out, the HTTP server closes the connection once it notices,
//! without saying so in the answer: a client that reuses the connection for its
//! next request then finds it closed under it. So the rest of the body is read
//! and dropped before the answer is sent, up to [`MAX_BYTES`] and [`MAX_TIME`];
//! beyond those the answer says `Connection: close`, so the client opens a new
//! connection instead of losing a request.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Response};
use futures::StreamExt;

/// How much of an unread body is read and dropped to keep the connection.
pub const MAX_BYTES: usize = 256 * 1024;

/// How long an unread body is waited for to keep the connection.
pub const MAX_TIME: Duration = Duration::from_secs(2);

/// A request's body, lent to its handler; what the handler leaves is kept here.
pub struct Leftover(Arc<Mutex<Option<BodyDataStream>>>);

impl Leftover {
    /// Splits `req` into a request whose body reads through to the original,
    /// and the handle that reads what remains of it afterwards.
    pub fn lend(req: Request) -> (Request, Self) {
        let (parts, body) = req.into_parts();
        let slot = Arc::new(Mutex::new(Some(body.into_data_stream())));
        let reader = Arc::clone(&slot);
        let lent = futures::stream::poll_fn(move |cx| {
            let mut guard = reader.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_mut() {
                Some(stream) => stream.poll_next_unpin(cx),
                None => Poll::Ready(None),
            }
        });
        (
            Request::from_parts(parts, Body::from_stream(lent)),
            Self(slot),
        )
    }

    /// Reads and drops the rest of the body; marks `resp` `Connection: close`
    /// when the rest is over the bounds or cannot be read.
    pub async fn settle(self, resp: Response<Body>) -> Response<Body> {
        self.settle_within(resp, MAX_TIME).await
    }

    /// [`Leftover::settle`], waiting at most `max_time` for the rest.
    async fn settle_within(self, mut resp: Response<Body>, max_time: Duration) -> Response<Body> {
        let rest = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut rest) = rest else {
            return resp;
        };
        let drained = tokio::time::timeout(max_time, async {
            let mut seen = 0usize;
            while let Some(chunk) = rest.next().await {
                let Ok(chunk) = chunk else { return false };
                seen = seen.saturating_add(chunk.len());
                if seen > MAX_BYTES {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        if !drained {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Middleware for every route on the listener (the API, the UI, the monitoring
/// front ends): the handler gets the body lent, and what it leaves is read and
/// dropped before the answer goes out.
pub async fn keep_connection(req: Request, next: axum::middleware::Next) -> Response<Body> {
    let (req, leftover) = Leftover::lend(req);
    let resp = next.run(req).await;
    leftover.settle(resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Body) -> Request {
        Request::builder()
            .method("POST")
            .uri("/x")
            .body(body)
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn an_unread_small_body_is_read_and_the_connection_kept() {
        let (req, leftover) = Leftover::lend(request(Body::from("{\"a\":1}")));
        drop(req);
        let resp = leftover.settle(Response::new(Body::empty())).await;
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_body_the_handler_read_leaves_nothing() {
        let (req, leftover) = Leftover::lend(request(Body::from("hello")));
        let bytes = axum::body::to_bytes(req.into_body(), 100).await;
        assert_eq!(bytes.ok().as_deref(), Some(&b"hello"[..]));
        let resp = leftover.settle(Response::new(Body::empty())).await;
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn an_unread_large_body_closes_the_connection() {
        let big = vec![b'x'; MAX_BYTES + 1];
        let (req, leftover) = Leftover::lend(request(Body::from(big)));
        drop(req);
        let resp = leftover.settle(Response::new(Body::empty())).await;
        assert_eq!(
            resp.headers().get(header::CONNECTION),
            Some(&HeaderValue::from_static("close"))
        );
    }

    #[tokio::test]
    async fn a_body_that_never_comes_closes_the_connection() {
        let never = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let (req, leftover) = Leftover::lend(request(Body::from_stream(never)));
        drop(req);
        let resp = leftover
            .settle_within(Response::new(Body::empty()), Duration::from_millis(50))
            .await;
        assert_eq!(
            resp.headers().get(header::CONNECTION),
            Some(&HeaderValue::from_static("close"))
        );
    }
}
