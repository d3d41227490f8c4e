//! Helpers that Shoal's tests share: golden files and seeded fuzz inputs. Only ever a
//! dev-dependency: nothing here runs in a shipped binary, so it may panic on what a
//! test must not see.

use std::path::Path;

/// Compares `rendered` with `<manifest_dir>/testdata/<name>` (pass
/// `env!("CARGO_MANIFEST_DIR")`); with `SHOAL_UPDATE_GOLDEN=1` it rewrites the file
/// instead. Panics with the path and what to do when they differ.
pub fn check_golden(manifest_dir: &str, name: &str, rendered: &str) {
    let path = Path::new(manifest_dir).join("testdata").join(name);
    if std::env::var_os("SHOAL_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a golden file has a parent"))
            .expect("create the golden file's directory");
        std::fs::write(&path, rendered).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with SHOAL_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        rendered,
        want,
        "output differs from {}; if the change is intended, rerun with SHOAL_UPDATE_GOLDEN=1",
        path.display()
    );
}

/// Seeded arbitrary inputs for fuzzing a decoder of network bytes inside
/// `cargo test`: the seed comes from `SHOAL_FUZZ_SEED` (else a fresh one) and the
/// count from `SHOAL_FUZZ_CASES` (else `default_cases`); both are printed, so a
/// failure is replayed by setting them.
pub mod fuzz {
    /// A small, fast, seedable generator (SplitMix64); tests need no more.
    #[derive(Clone, Debug)]
    pub struct Rng(u64);

    impl Rng {
        /// A generator started at `seed`.
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }

        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// A number below `n` (0 for `n == 0`).
        pub fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                return 0;
            }
            (self.next_u64() % n as u64) as usize
        }

        /// A random byte.
        pub fn byte(&mut self) -> u8 {
            self.next_u64().to_le_bytes()[0]
        }

        /// `len` random bytes.
        pub fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.byte()).collect()
        }
    }

    /// Runs `f` with the panic messages of this thread silenced (a guarded
    /// decoder's caught panics would flood the test output); other threads'
    /// panics are reported as before.
    pub fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
        use std::sync::Arc;
        type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;
        let me = std::thread::current().id();
        let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
        let forward = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != me {
                forward(info);
            }
        }));
        let out = f();
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| previous(info)));
        out
    }

    /// The seed and case count of this run, printed for replay.
    pub fn plan(name: &str, default_cases: usize) -> (u64, usize) {
        let seed = std::env::var("SHOAL_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let cases = std::env::var("SHOAL_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_cases);
        eprintln!("{name}: SHOAL_FUZZ_SEED={seed} SHOAL_FUZZ_CASES={cases}");
        (seed, cases)
    }

    /// One arbitrary input derived from the valid `seeds`: random bytes of a
    /// random length, or a seed with bytes flipped, replaced, cut, or random
    /// type-length-value options (lengths that lie included) spliced in at
    /// `options_at` (the offset where options start, e.g. after a magic cookie).
    pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], options_at: usize) -> Vec<u8> {
        let Some(base) = seeds.get(rng.below(seeds.len())) else {
            let len = rng.below(600);
            return rng.bytes(len);
        };
        let mut b = base.clone();
        match rng.below(6) {
            0 => {
                let len = rng.below(600);
                b = rng.bytes(len);
            }
            1 => {
                for _ in 0..=rng.below(8) {
                    let i = rng.below(b.len());
                    if let Some(x) = b.get_mut(i) {
                        *x ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                for _ in 0..=rng.below(16) {
                    let i = rng.below(b.len());
                    let v = rng.byte();
                    if let Some(x) = b.get_mut(i) {
                        *x = v;
                    }
                }
            }
            3 => {
                let cut = rng.below(b.len() + 1);
                b.truncate(cut);
            }
            _ => {
                let at =
                    options_at.min(b.len()) + rng.below(b.len().saturating_sub(options_at) + 1);
                let mut opts = Vec::new();
                for _ in 0..=rng.below(6) {
                    let code = if rng.below(2) == 0 {
                        rng.byte()
                    } else {
                        // The codes decoders treat specially.
                        [
                            1, 3, 6, 12, 15, 28, 50, 51, 53, 54, 55, 61, 81, 82, 119, 121, 255, 0,
                        ][rng.below(18)]
                    };
                    let len = rng.below(20);
                    let claimed = if rng.below(4) == 0 {
                        rng.byte()
                    } else {
                        len as u8
                    };
                    opts.push(code);
                    opts.push(claimed);
                    opts.extend(rng.bytes(len));
                }
                b.splice(at..at, opts);
                if rng.below(2) == 0 {
                    b.truncate(at + rng.below(b.len() - at + 1));
                }
            }
        }
        b
    }
}
