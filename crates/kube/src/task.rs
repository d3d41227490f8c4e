//! Tasks that end with their owner.

use tokio::task::JoinHandle;

/// Aborts the tasks it holds when dropped, so that a watch or a loop spawned for an
/// owner never outlives it.
#[derive(Debug, Default)]
pub struct AbortOnDrop(Vec<JoinHandle<()>>);

impl AbortOnDrop {
    /// Holds `tasks`.
    pub fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        Self(tasks)
    }

    /// Holds one more task.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl From<JoinHandle<()>> for AbortOnDrop {
    fn from(task: JoinHandle<()>) -> Self {
        Self(vec![task])
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_aborts_every_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let held = tokio::spawn(async move {
            // Holds the sender until aborted.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let mut guard = AbortOnDrop::from(held);
        guard.push(tokio::spawn(std::future::pending::<()>()));
        drop(guard);
        assert!(rx.await.is_err(), "the aborted task dropped its sender");
    }
}
