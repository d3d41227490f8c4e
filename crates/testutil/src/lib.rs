//! Helpers that Shoal's tests share. Only ever a dev-dependency: nothing here runs
//! in a shipped binary, so it may panic on what a test must not see.

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
