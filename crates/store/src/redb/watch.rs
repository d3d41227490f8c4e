//! Watch streams: stored history first, then the live event feed.
//!
//! A watch subscribes to the writer's broadcast before it reads the history, so an
//! event is either committed before the history snapshot (and read from the log)
//! or published after the subscription (and received live). Live events at or
//! below the last revision already yielded are skipped, which removes the overlap.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// Builds the stream from the replayed `history` (all revisions up to `snapshot`)
/// and the live receiver `rx`, which was subscribed before the history was read.
pub(crate) fn stream(
    history: Vec<WatchEvent>,
    snapshot: Revision,
    prefix: String,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
) -> WatchStream {
    let live = Live {
        rx,
        prefix,
        last: snapshot,
        done: false,
    };
    stream::iter(history.into_iter().map(Ok))
        .chain(stream::unfold(live, Live::next))
        .boxed()
}

/// The live half of a watch.
struct Live {
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    prefix: String,
    /// The highest revision already yielded, or covered by the history snapshot.
    last: Revision,
    /// Set once an error has been yielded: the stream then ends.
    done: bool,
}

impl Live {
    async fn next(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Ok(event) => {
                    if event.revision <= self.last || !event.kv.key.starts_with(&self.prefix) {
                        continue;
                    }
                    self.last = event.revision;
                    return Some((Ok(WatchEvent::clone(&event)), self));
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, prefix = %self.prefix, "store watcher lagged; ending it");
                    self.done = true;
                    return Some((Err(StoreError::WatcherLagged), self));
                }
                Err(RecvError::Closed) => {
                    self.done = true;
                    return Some((Err(StoreError::Closed), self));
                }
            }
        }
    }
}
