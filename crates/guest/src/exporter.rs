//! The node exporter of the test image: `GET /metrics` on port 9100 in Prometheus'
//! text format, with node_exporter's names for what the monitoring contract
//! (`deploy/README.md`, job `shoal-guest`) uses, computed from `/proc`:
//!
//! - `node_boot_time_seconds` (`btime` of `/proc/stat`);
//! - `node_load1`, `node_load5`, `node_load15` (`/proc/loadavg`);
//! - `node_memory_MemTotal_bytes`, `node_memory_MemAvailable_bytes` (`/proc/meminfo`);
//! - `node_cpu_seconds_total{cpu,mode}` (the `cpuN` lines of `/proc/stat`, in
//!   USER_HZ = 100 ticks per second);
//! - `node_uname_info{nodename,release}` 1 (`/proc/sys/kernel/{hostname,osrelease}`).
//!
//! The host agent scrapes it for Prometheus (`/guests/<ns>/<machine>/metrics` on the
//! agent's metrics listener), so guest networks are never opened to the monitoring
//! host. Any other path is 404. A `/proc` file that cannot be read or parsed leaves
//! out its metrics (with a comment saying why) rather than failing the scrape.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::http1::{Request, Responder, Response, Status};

/// The exporter's port in the guest (node_exporter's).
pub const EXPORTER_PORT: u16 = 9100;
/// The content type of Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Kernel clock ticks per second in `/proc/stat` (USER_HZ, 100 on Linux).
pub const USER_HZ: f64 = 100.0;
/// The CPU modes of `/proc/stat`'s `cpuN` lines, in their order, as node_exporter
/// names them (`guest` and `guest_nice` are already counted in `user` and `nice`).
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// The exporter's default address: every interface, [`EXPORTER_PORT`].
pub fn default_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, EXPORTER_PORT))
}

/// Why a `/proc` file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A field is missing.
    #[error("{file}: no {field}")]
    Missing {
        /// The file, e.g. `/proc/stat`.
        file: &'static str,
        /// The field looked for.
        field: &'static str,
    },
    /// A field is not a number.
    #[error("{file}: {field}: {value:?} is not a number")]
    NotANumber {
        /// The file.
        file: &'static str,
        /// The field.
        field: String,
        /// What was found.
        value: String,
    },
}

/// One CPU's times from `/proc/stat`, in seconds, per mode of [`CPU_MODES`].
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTimes {
    /// The CPU number (`N` of `cpuN`).
    pub cpu: u32,
    /// Seconds per mode, in the order of [`CPU_MODES`]; modes the kernel does not
    /// report are absent.
    pub seconds: Vec<(&'static str, f64)>,
}

/// What `/proc/stat` gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// The boot time, in seconds since the epoch.
    pub boot_time: u64,
    /// Each CPU's times (not the `cpu` total line).
    pub cpus: Vec<CpuTimes>,
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Over 1 minute.
    pub load1: f64,
    /// Over 5 minutes.
    pub load5: f64,
    /// Over 15 minutes.
    pub load15: f64,
}

/// What `/proc/meminfo` gives, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`.
    pub available: u64,
}

fn number<T: std::str::FromStr>(
    file: &'static str,
    field: &str,
    value: &str,
) -> Result<T, ParseError> {
    value.parse().map_err(|_| ParseError::NotANumber {
        file,
        field: field.to_string(),
        value: value.to_string(),
    })
}

/// Parses `/proc/stat`: `btime` and the `cpuN` lines.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    const FILE: &str = "/proc/stat";
    let mut boot_time = None;
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "btime" {
            let value = fields.next().ok_or(ParseError::Missing {
                file: FILE,
                field: "btime",
            })?;
            boot_time = Some(number(FILE, "btime", value)?);
        } else if let Some(n) = key.strip_prefix("cpu").filter(|n| !n.is_empty()) {
            let cpu = number(FILE, key, n)?;
            let seconds = CPU_MODES
                .iter()
                .zip(fields)
                .map(|(mode, ticks)| {
                    number::<u64>(FILE, &format!("{key} {mode}"), ticks)
                        .map(|t| (*mode, t as f64 / USER_HZ))
                })
                .collect::<Result<_, _>>()?;
            cpus.push(CpuTimes { cpu, seconds });
        }
    }
    Ok(Stat {
        boot_time: boot_time.ok_or(ParseError::Missing {
            file: FILE,
            field: "btime",
        })?,
        cpus,
    })
}

/// Parses `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    const FILE: &str = "/proc/loadavg";
    let mut fields = text.split_ascii_whitespace();
    let mut next = |field: &'static str| {
        fields
            .next()
            .ok_or(ParseError::Missing { file: FILE, field })
            .and_then(|v| number(FILE, field, v))
    };
    Ok(LoadAvg {
        load1: next("load1")?,
        load5: next("load5")?,
        load15: next("load15")?,
    })
}

/// Parses `/proc/meminfo`'s `MemTotal` and `MemAvailable` (given in kB, i.e. KiB).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let field = |name: &'static str| -> Result<u64, ParseError> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or(ParseError::Missing {
                file: FILE,
                field: name,
            })?;
        let mut parts = line.split_ascii_whitespace();
        let value: u64 = number(FILE, name, parts.next().unwrap_or(""))?;
        Ok(match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        })
    };
    Ok(MemInfo {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
    })
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/proc` files the exporter reads, as text (or why one could not be read).
#[derive(Debug, Clone)]
pub struct ProcFiles {
    /// `/proc/stat`.
    pub stat: Result<String, String>,
    /// `/proc/loadavg`.
    pub loadavg: Result<String, String>,
    /// `/proc/meminfo`.
    pub meminfo: Result<String, String>,
    /// `/proc/sys/kernel/hostname`.
    pub hostname: Result<String, String>,
    /// `/proc/sys/kernel/osrelease`.
    pub osrelease: Result<String, String>,
}

impl ProcFiles {
    /// Reads them under `proc_root` (normally `/proc`).
    pub fn read(proc_root: &std::path::Path) -> Self {
        let read = |rel: &str| {
            let path = proc_root.join(rel);
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        Self {
            stat: read("stat"),
            loadavg: read("loadavg"),
            meminfo: read("meminfo"),
            hostname: read("sys/kernel/hostname"),
            osrelease: read("sys/kernel/osrelease"),
        }
    }
}

/// Renders the metrics from the `/proc` files, in the text format. What cannot be
/// read or parsed is left out, with a `# ` comment saying why.
pub fn render(files: &ProcFiles) -> String {
    let mut out = String::new();
    let skip = |out: &mut String, why: &dyn std::fmt::Display| {
        let _ = writeln!(out, "# {}", why.to_string().replace('\n', " "));
    };
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    match files.stat.as_deref().map(parse_stat) {
        Ok(Ok(stat)) => {
            header(
                &mut out,
                "node_boot_time_seconds",
                "gauge",
                "Node boot time, in unixtime.",
            );
            let _ = writeln!(out, "node_boot_time_seconds {}", stat.boot_time);
            header(
                &mut out,
                "node_cpu_seconds_total",
                "counter",
                "Seconds the CPUs spent in each mode.",
            );
            for cpu in &stat.cpus {
                for (mode, secs) in &cpu.seconds {
                    let _ = writeln!(
                        out,
                        "node_cpu_seconds_total{{cpu=\"{}\",mode=\"{mode}\"}} {secs}",
                        cpu.cpu
                    );
                }
            }
        }
        Ok(Err(e)) => skip(&mut out, &e),
        Err(e) => skip(&mut out, &e),
    }
    match files.loadavg.as_deref().map(parse_loadavg) {
        Ok(Ok(l)) => {
            for (name, value, span) in [
                ("node_load1", l.load1, "1m"),
                ("node_load5", l.load5, "5m"),
                ("node_load15", l.load15, "15m"),
            ] {
                header(&mut out, name, "gauge", &format!("{span} load average."));
                let _ = writeln!(out, "{name} {value}");
            }
        }
        Ok(Err(e)) => skip(&mut out, &e),
        Err(e) => skip(&mut out, &e),
    }
    match files.meminfo.as_deref().map(parse_meminfo) {
        Ok(Ok(m)) => {
            for (name, value, field) in [
                ("node_memory_MemTotal_bytes", m.total, "MemTotal"),
                (
                    "node_memory_MemAvailable_bytes",
                    m.available,
                    "MemAvailable",
                ),
            ] {
                header(
                    &mut out,
                    name,
                    "gauge",
                    &format!("Memory information field {field}_bytes."),
                );
                let _ = writeln!(out, "{name} {value}");
            }
        }
        Ok(Err(e)) => skip(&mut out, &e),
        Err(e) => skip(&mut out, &e),
    }
    match (&files.hostname, &files.osrelease) {
        (Ok(nodename), Ok(release)) => {
            header(
                &mut out,
                "node_uname_info",
                "gauge",
                "Labeled system information as provided by the uname system call.",
            );
            let _ = writeln!(
                out,
                "node_uname_info{{nodename=\"{}\",release=\"{}\"}} 1",
                escape(nodename.trim()),
                escape(release.trim())
            );
        }
        (Err(e), _) | (_, Err(e)) => skip(&mut out, e),
    }
    out
}

/// The exporter's [`Responder`]: `GET /metrics` renders the metrics from the `/proc`
/// under its root; any other path is 404.
#[derive(Debug, Clone)]
pub struct Exporter {
    proc_root: PathBuf,
}

impl Exporter {
    /// An exporter reading `/proc`.
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// An exporter reading `proc_root` instead of `/proc` (for tests).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Responder for Exporter {
    fn respond(&self, req: &Request, _client_cert: Option<&[u8]>) -> Response {
        match (req.path.as_str(), req.method.as_str()) {
            ("/metrics", "GET" | "HEAD") => Response {
                status: Status::Ok,
                content_type: CONTENT_TYPE,
                body: render(&ProcFiles::read(&self.proc_root)).into_bytes(),
            },
            ("/metrics", method) => Response::text(
                Status::MethodNotAllowed,
                format!("{method} /metrics: only GET is served\n"),
            ),
            (path, _) => Response::text(
                Status::NotFound,
                format!("{path}: not found: the metrics are at /metrics\n"),
            ),
        }
    }

    fn refuse(&self, status: Status, why: &str) -> Response {
        Response::text(status, format!("{why}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335 7 250 4000 12 3 4 5 0 0
intr 1462898 0 0
ctxt 115315
btime 1733390000
processes 1234
procs_running 1
";

    #[test]
    fn stat_gives_the_boot_time_and_each_cpu_in_seconds() {
        let stat = parse_stat(STAT).expect("parses");
        assert_eq!(stat.boot_time, 1_733_390_000);
        assert_eq!(stat.cpus.len(), 2);
        assert_eq!(stat.cpus[0].cpu, 0);
        assert_eq!(stat.cpus[1].cpu, 1);
        assert_eq!(
            stat.cpus[1].seconds,
            vec![
                ("user", 13.35),
                ("nice", 0.07),
                ("system", 2.5),
                ("idle", 40.0),
                ("iowait", 0.12),
                ("irq", 0.03),
                ("softirq", 0.04),
                ("steal", 0.05),
            ]
        );
    }

    #[test]
    fn old_kernels_with_fewer_cpu_fields_report_what_they_have() {
        let stat = parse_stat("cpu0 100 200 300 400\nbtime 5\n").expect("parses");
        let modes: Vec<_> = stat.cpus[0].seconds.iter().map(|(m, _)| *m).collect();
        assert_eq!(modes, ["user", "nice", "system", "idle"]);
    }

    #[test]
    fn bad_stat_is_an_error_naming_the_field() {
        assert_eq!(
            parse_stat("cpu0 1 2 3\n"),
            Err(ParseError::Missing {
                file: "/proc/stat",
                field: "btime"
            })
        );
        let e = parse_stat("cpu0 1 x 3\nbtime 1\n").expect_err("x is not a number");
        assert_eq!(
            e.to_string(),
            "/proc/stat: cpu0 nice: \"x\" is not a number"
        );
        assert!(parse_stat("cpuX 1 2\nbtime 1\n").is_err());
    }

    #[test]
    fn loadavg_gives_three_averages() {
        let l = parse_loadavg("0.52 0.58 0.59 1/467 12345\n").expect("parses");
        assert_eq!(
            l,
            LoadAvg {
                load1: 0.52,
                load5: 0.58,
                load15: 0.59
            }
        );
        assert!(parse_loadavg("0.52 0.58").is_err());
        assert!(parse_loadavg("a b c").is_err());
    }

    #[test]
    fn meminfo_gives_bytes() {
        let text = "MemTotal:        2030592 kB\nMemFree:          100000 kB\n\
                    MemAvailable:    1500000 kB\nBuffers:            1000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Ok(MemInfo {
                total: 2_030_592 * 1024,
                available: 1_500_000 * 1024
            })
        );
        assert_eq!(
            parse_meminfo("MemTotal: 1 kB\n"),
            Err(ParseError::Missing {
                file: "/proc/meminfo",
                field: "MemAvailable"
            })
        );
    }

    fn files() -> ProcFiles {
        ProcFiles {
            stat: Ok(STAT.into()),
            loadavg: Ok("0.52 0.58 0.59 1/467 12345\n".into()),
            meminfo: Ok("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n".into()),
            hostname: Ok("node-\"a\"\n".into()),
            osrelease: Ok("6.1.0-test\n".into()),
        }
    }

    #[test]
    fn render_writes_node_exporter_names() {
        let out = render(&files());
        for line in [
            "node_boot_time_seconds 1733390000",
            "node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 40",
            "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 13932.8",
            "node_load1 0.52",
            "node_load5 0.58",
            "node_load15 0.59",
            "node_memory_MemTotal_bytes 2097152",
            "node_memory_MemAvailable_bytes 1048576",
            "node_uname_info{nodename=\"node-\\\"a\\\"\",release=\"6.1.0-test\"} 1",
            "# TYPE node_cpu_seconds_total counter",
            "# TYPE node_load1 gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} not in\n{out}");
        }
    }

    #[test]
    fn an_unreadable_file_leaves_out_its_metrics_only() {
        let mut f = files();
        f.meminfo = Err("/proc/meminfo: gone".into());
        f.loadavg = Ok("garbage".into());
        let out = render(&f);
        assert!(!out.contains("node_memory_"), "{out}");
        assert!(!out.contains("node_load"), "{out}");
        assert!(out.contains("# /proc/meminfo: gone\n"), "{out}");
        assert!(out.contains("node_boot_time_seconds 1733390000"), "{out}");
    }

    #[test]
    fn only_get_metrics_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/kernel")).expect("mkdir");
        for (rel, text) in [
            ("stat", STAT),
            ("loadavg", "1 2 3 1/1 1\n"),
            ("meminfo", "MemTotal: 4 kB\nMemAvailable: 2 kB\n"),
            ("sys/kernel/hostname", "n1\n"),
            ("sys/kernel/osrelease", "6.1\n"),
        ] {
            std::fs::write(root.join(rel), text).expect("write");
        }
        let exporter = Exporter::with_proc_root(root);
        let req = |method: &str, path: &str| Request {
            method: method.into(),
            path: path.into(),
        };
        let r = exporter.respond(&req("GET", "/metrics"), None);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.content_type, CONTENT_TYPE);
        let body = String::from_utf8(r.body).expect("utf-8");
        assert!(body.contains("node_memory_MemTotal_bytes 4096\n"), "{body}");
        assert!(body.contains("nodename=\"n1\",release=\"6.1\""), "{body}");
        assert_eq!(
            exporter.respond(&req("GET", "/"), None).status,
            Status::NotFound
        );
        assert_eq!(
            exporter.respond(&req("GET", "/metricsx"), None).status,
            Status::NotFound
        );
        assert_eq!(
            exporter.respond(&req("POST", "/metrics"), None).status,
            Status::MethodNotAllowed
        );
    }

    #[test]
    fn the_real_proc_parses() {
        // The machine running the tests is Linux too.
        let out = render(&ProcFiles::read(std::path::Path::new("/proc")));
        assert!(!out.lines().any(|l| l.starts_with("# /")), "{out}");
        assert!(out.contains("node_memory_MemTotal_bytes "), "{out}");
    }
}
