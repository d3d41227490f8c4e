//! The systemd units in `deploy/systemd/` that the alert runbooks name
//! (`journalctl -u shoal-server`, `systemctl status shoal-agent`):
//! - `systemd-analyze verify` accepts each one without a warning, with its
//!   `ExecStart` pointed at the freshly built `shoal`;
//! - every flag its `ExecStart` passes is one that `shoal <command> --help` lists;
//! - every unit a runbook names exists.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use shoal_e2e::{shoal_bin, workspace_root};

const INSTALLED: &str = "/usr/local/bin/shoal";

fn units() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("deploy/systemd");
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    out.retain(|p| p.extension().is_some_and(|e| e == "service"));
    out.sort();
    ensure!(!out.is_empty(), "no units in {}", dir.display());
    Ok(out)
}

fn exec_start(unit: &str) -> Result<&str> {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("no ExecStart")
}

#[test]
fn units_verify_and_pass_only_known_flags() -> Result<()> {
    let shoal = shoal_bin()?;
    let tmp = tempfile::tempdir()?;
    for path in units()? {
        let name = path.file_name().context("a unit name")?.to_owned();
        let text = fs::read_to_string(&path)?;
        let exec = exec_start(&text).with_context(|| path.display().to_string())?;
        ensure!(
            exec.starts_with(INSTALLED),
            "{}: ExecStart does not run {INSTALLED}: {exec}",
            path.display()
        );
        // The installed path does not exist here: point it at the built binary.
        let local = tmp.path().join(&name);
        fs::write(
            &local,
            text.replace(INSTALLED, &shoal.display().to_string()),
        )?;
        let out = match Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("systemd-analyze is missing (package systemd)")
            }
            Err(e) => return Err(e).context("running systemd-analyze"),
        };
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {}: {}\n{said}",
            path.display(),
            out.status
        );

        // `shoal <command> --flag …`: each flag is in that command's help.
        let mut words = exec.split_whitespace().skip(1);
        let command = words.next().context("ExecStart runs no shoal command")?;
        let help = Command::new(&shoal).args([command, "--help"]).output()?;
        ensure!(help.status.success(), "shoal {command} --help failed");
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in words.filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            ensure!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: shoal {command} has no {flag}",
                path.display()
            );
        }
    }
    Ok(())
}

#[test]
fn every_unit_a_runbook_names_exists() -> Result<()> {
    let have: Vec<String> = units()?
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let rules = fs::read_to_string(workspace_root().join("deploy/prometheus/alerts.yaml"))?;
    let mut named = 0;
    for marker in ["journalctl -u ", "systemctl status ", "systemctl restart "] {
        for rest in rules.split(marker).skip(1) {
            let unit: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if unit.is_empty() {
                continue; // a template such as {{ $labels.job }}
            }
            named += 1;
            ensure!(
                have.contains(&unit),
                "a runbook names unit {unit}, which deploy/systemd does not have ({have:?})"
            );
        }
    }
    ensure!(
        named > 0,
        "no runbook names a unit: the check would pass vacuously"
    );
    Ok(())
}
