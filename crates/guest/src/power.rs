//! The ACPI power button: QEMU's `system_powerdown` (what the host agent sends on
//! a stop) presses it, the kernel's `button` driver reports it as `KEY_POWER` on
//! an evdev device named "Power Button", and the guest powers off at once, as
//! acpid would, so that a stop does not wait out the agent's grace period.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::say;

/// The name the kernel gives the ACPI power button's input device.
pub const POWER_BUTTON: &str = "Power Button";

/// The size of `struct input_event` on a 64-bit kernel: a 16-byte timeval, then
/// type (u16), code (u16) and value (i32).
pub const EVENT_SIZE: usize = 24;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// Why the power button cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// No input device is the power button (no ACPI, or the `button` or `evdev`
    /// module is not loaded).
    #[error("no input device named {POWER_BUTTON:?} under {}", dir.display())]
    NoButton {
        /// The sysfs input class directory searched.
        dir: PathBuf,
    },
    /// The device could not be opened or read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The device node.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The device node (`<dev>/eventN`) of the input device named
/// [`POWER_BUTTON`] under the sysfs input class directory `sys_input`.
pub fn find_button(sys_input: &Path, dev: &Path) -> Result<PathBuf, PowerError> {
    let entries = std::fs::read_dir(sys_input).map_err(|_| PowerError::NoButton {
        dir: sys_input.to_owned(),
    })?;
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_event = name.starts_with("event");
            let label = std::fs::read_to_string(e.path().join("device/name")).ok()?;
            (is_event && label.trim() == POWER_BUTTON).then_some(name)
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .map(|n| dev.join(n))
        .ok_or_else(|| PowerError::NoButton {
            dir: sys_input.to_owned(),
        })
}

/// True for one `input_event` that is a press of the power key.
pub fn is_power_press(event: &[u8]) -> bool {
    let Some(e) = event.get(16..EVENT_SIZE) else {
        return false;
    };
    let kind = u16::from_ne_bytes([e[0], e[1]]);
    let code = u16::from_ne_bytes([e[2], e[3]]);
    let value = i32::from_ne_bytes([e[4], e[5], e[6], e[7]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Blocks reading `device` until the power key is pressed.
pub fn wait_for_press(device: &Path, mut input: impl Read) -> Result<(), PowerError> {
    let mut event = [0u8; EVENT_SIZE];
    loop {
        input
            .read_exact(&mut event)
            .map_err(|source| PowerError::Read {
                path: device.to_owned(),
                source,
            })?;
        if is_power_press(&event) {
            return Ok(());
        }
    }
}

/// Watches the power button on a thread of its own, looking for the device for
/// up to `find_for`; on a press it syncs and powers the machine off (as
/// `poweroff -f` does). Problems are reported on the console; the guest keeps
/// running without the watcher.
pub fn spawn_watcher(sys_input: PathBuf, dev: PathBuf, find_for: Duration) {
    let spawned = std::thread::Builder::new()
        .name("power-button".into())
        .spawn(move || {
            let deadline = Instant::now() + find_for;
            let device = loop {
                match find_button(&sys_input, &dev) {
                    Ok(d) => break d,
                    Err(e) if Instant::now() >= deadline => {
                        say!("power button: {e}; a stop waits for the host's grace period");
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            let file = match std::fs::File::open(&device) {
                Ok(f) => f,
                Err(source) => {
                    say!(
                        "power button: {}",
                        PowerError::Read {
                            path: device,
                            source
                        }
                    );
                    return;
                }
            };
            say!("power button: watching {}", device.display());
            if let Err(e) = wait_for_press(&device, file) {
                say!("power button: {e}");
                return;
            }
            say!("power button pressed: powering off");
            rustix::fs::sync();
            if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
                say!("power off: {e}; exiting so that init powers off");
                std::process::exit(0);
            }
        });
    if let Err(e) = spawned {
        say!("power button: cannot start the watcher: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend(kind.to_ne_bytes());
        e.extend(code.to_ne_bytes());
        e.extend(value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 115, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "EV_SYN");
        assert!(!is_power_press(&[0u8; 10]), "short");
    }

    #[test]
    fn waits_past_other_events_for_the_press() {
        let mut stream = event(0, 0, 0);
        stream.extend(event(EV_KEY, KEY_POWER, 0));
        stream.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(wait_for_press(Path::new("/dev/input/event0"), &stream[..]).is_ok());
        let no_press = event(EV_KEY, 115, 1);
        assert!(matches!(
            wait_for_press(Path::new("/dev/input/event0"), &no_press[..]),
            Err(PowerError::Read { .. })
        ));
    }

    #[test]
    fn finds_the_device_named_power_button() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (n, label) in [("event0", "AT Keyboard"), ("event1", "Power Button")] {
            let d = tmp.path().join(n).join("device");
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("name"), format!("{label}\n")).expect("write");
        }
        let dev = Path::new("/dev/input");
        assert_eq!(
            find_button(tmp.path(), dev).expect("found"),
            dev.join("event1")
        );
        std::fs::remove_dir_all(tmp.path().join("event1")).expect("rm");
        assert!(matches!(
            find_button(tmp.path(), dev),
            Err(PowerError::NoButton { .. })
        ));
    }
}
