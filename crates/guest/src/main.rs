//! `shoal-guest guest` (installed in the test image as `/bin/shoal`, so also
//! `shoal guest`): runs [`shoal_guest::run`] and exits with its error's code.

use std::process::ExitCode;

const USAGE: &str = "usage: shoal guest\n\nRuns inside a Shoal test-image VM: DHCP, NoCloud seed, hostname, write_files,\nservices on 8080 and 7070, the role's stand-ins (API server on 6443 on control-plane\nnodes, ingress on 30080/30443 on workers), phone home.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["guest"] => {}
        ["-h"] | ["--help"] | ["help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    match shoal_guest::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's Display already carries its causes.
            eprintln!("shoal-guest: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
