//! `images/build-kubernetes-image.sh` on bad input: a Go build that fails names its
//! step and leaves no entry that looks complete; a cache entry that is corrupt (a
//! stamp that is not one, a truncated file, a changed byte) is reported by `--check`
//! and rebuilt by the next build. Runs on copies in a temporary cache, with the
//! machine's Go module and build caches (`SHOAL_GO_DIR`) so nothing is downloaded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};
use shoal_e2e::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("images/build-kubernetes-image.sh")
}

fn real_cache() -> Result<PathBuf> {
    Ok(match std::env::var_os("SHOAL_CACHE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache/shoal")
        }
    })
}

fn run(cache: &Path, envs: &[(&str, &Path)], args: &[&str]) -> Result<Output> {
    let mut c = Command::new("bash");
    c.arg(script())
        .args(args)
        .env("SHOAL_CACHE_DIR", cache)
        .env("SHOAL_GO_DIR", real_cache()?.join("go"));
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().context("running build-kubernetes-image.sh")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The real cache's go-addons entry, as `--check` names it.
fn addons_entry() -> Result<PathBuf> {
    let out = run(&real_cache()?, &[], &["--check"])?;
    let all = text(&out);
    ensure!(
        out.status.success(),
        "--check of the real cache failed: run scripts/setup.sh first\n{all}"
    );
    let line = all
        .lines()
        .find(|l| l.contains("step go-addons: ok ("))
        .with_context(|| format!("no go-addons line in\n{all}"))?;
    let dir = line
        .split_once("ok (")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .context("unparsable --check line")?;
    Ok(PathBuf::from(dir))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {}", from.display(), to.display());
    }
    Ok(())
}

#[test]
fn a_go_build_failure_names_its_step_and_leaves_no_entry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let module = tmp.path().join("addons");
    copy_dir(&workspace_root().join("images/kubernetes/addons"), &module)?;
    let main = module.join("shoal-flannel-cni/main.go");
    let mut code = fs::read_to_string(&main)?;
    code.push_str("\nfunc broken( {\n");
    fs::write(&main, code)?;
    let cache = tmp.path().join("cache");

    let out = run(
        &cache,
        &[("SHOAL_K8S_ADDONS_MODULE", &module)],
        &["--step", "go-addons"],
    )?;
    let all = text(&out);
    assert!(!out.status.success(), "a broken module built:\n{all}");
    assert!(
        all.contains("step go-addons: go build in") && all.contains("failed"),
        "the error names the step and the module:\n{all}"
    );
    assert!(
        all.contains("shoal-flannel-cni/main.go"),
        "the compiler's own message is shown:\n{all}"
    );
    let addons = cache.join("kubernetes/addons");
    let left: Vec<_> = fs::read_dir(&addons)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the failed step left {left:?} in {}",
        addons.display()
    );
    Ok(())
}

#[test]
fn corrupt_cache_entries_are_reported_and_rebuilt() -> Result<()> {
    let entry = addons_entry()?;
    let inputs = entry
        .file_name()
        .context("entry has no name")?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("cache");
    let copy = cache.join("kubernetes/addons").join(&inputs);
    fs::create_dir_all(copy.parent().context("no parent")?)?;
    let check = |what: &str| -> Result<String> {
        let out = run(&cache, &[], &["--check"])?;
        let all = text(&out);
        ensure!(!out.status.success(), "--check passed with {what}:\n{all}");
        Ok(all
            .lines()
            .find(|l| l.contains("step go-addons:"))
            .unwrap_or_default()
            .to_owned())
    };

    // A byte changed, the size kept: only the checksum sees it.
    copy_dir(&entry, &copy)?;
    let crictl = copy.join("crictl");
    let mut bytes = fs::read(&crictl)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&crictl, &bytes)?;
    let line = check("a changed byte")?;
    assert!(
        line.contains("crictl does not match its checksum"),
        "{line}"
    );

    // A truncated file.
    fs::write(&crictl, b"")?;
    let line = check("a truncated file")?;
    assert!(line.contains("crictl has the wrong size"), "{line}");

    // A stamp that is not one.
    fs::remove_dir_all(&copy)?;
    copy_dir(&entry, &copy)?;
    fs::write(copy.join(".stamp"), "garbage\n")?;
    let line = check("a corrupt stamp")?;
    assert!(line.contains(".stamp is corrupt"), "{line}");

    // A missing file.
    fs::remove_dir_all(&copy)?;
    copy_dir(&entry, &copy)?;
    fs::remove_file(copy.join("flanneld"))?;
    let line = check("a missing file")?;
    assert!(line.contains("flanneld is missing"), "{line}");

    // The next build notices, says so, and rebuilds the entry (from Go's build cache).
    let out = run(&cache, &[], &["--step", "go-addons"])?;
    let all = text(&out);
    assert!(out.status.success(), "rebuild failed:\n{all}");
    assert!(
        all.contains("cached entry unusable") && all.contains("rebuilding"),
        "{all}"
    );
    let out = run(&cache, &[], &["--check"])?;
    let all = text(&out);
    assert!(
        all.contains(&format!("step go-addons: ok ({})", copy.display())),
        "the rebuilt entry verifies:\n{all}"
    );
    Ok(())
}
