//! Per-object retry delays for failed reconciles: exponential from a base, capped,
//! with a little jitter, and forgotten on the object's next success. One object
//! that keeps failing (a bad release image, an API that refuses it) then backs off
//! alone instead of every failure being retried at the same fixed pace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// The failure counts of the objects whose last reconcile failed.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Delays of `base`, 2×`base`, 4×`base`, ... up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: Mutex::default(),
        }
    }

    /// The delay after the `n`th failure in a row (1-based), before jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Records one more failure of `key` and returns how long to wait before
    /// retrying it: [`Backoff::delay`] less up to a tenth, so that objects that
    /// failed together do not retry in lockstep.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut map = self
                .failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = map.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = self.delay(n);
        let jitter = rand::thread_rng().gen_range(0.0..0.1);
        delay.mul_f64(1.0 - jitter)
    }

    /// Forgets the failures of `key`: its next failure waits `base` again.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The backoff key of `obj`: its Rust type (one per controller) and
/// `namespace/name`.
pub fn key_of<K: kube::Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}:{}/{}",
        std::any::type_name::<K>(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let secs: Vec<f64> = (1..=10).map(|n| b.delay(n).as_secs_f64()).collect();
        assert_eq!(
            secs,
            [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
        );
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn each_object_backs_off_alone_and_success_resets_it() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..4 {
            b.failed("a");
        }
        let next = b.failed("a");
        assert!(
            next > Duration::from_secs(8) && next <= Duration::from_secs(10),
            "{next:?}"
        );
        let other = b.failed("b");
        assert!(
            other > Duration::from_millis(899) && other <= Duration::from_secs(1),
            "{other:?}"
        );
        assert_eq!(b.failures("a"), 5);
        b.succeeded("a");
        assert_eq!(b.failures("a"), 0);
        assert!(b.failed("a") <= Duration::from_secs(1));
        assert_eq!(b.failures("b"), 1);
    }
}
