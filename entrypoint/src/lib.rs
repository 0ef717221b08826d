//! The pure half of `baton-entrypoint`: its command line, the outputs frame it
//! prints, and the exit code it passes on. `main.rs` does the I/O.
//!
//! The frame is the one `baton`'s Kubernetes backend strips from a step's log
//! (`src/backend/kubernetes/outputs.rs`): the record separator, a begin marker
//! carrying the attempt's nonce, the outputs file in base64 lines, an end marker.

use std::ffi::OsString;

/// How the program is called.
pub const USAGE: &str = "usage:
  baton-entrypoint install DEST          copy this program to DEST (mode 0755)
  baton-entrypoint run NONCE -- CMD...   run CMD, then frame $BATON_OUTPUT into stdout";

/// Most bytes of `$BATON_OUTPUT` framed: their base64 is the 8 MiB the backend
/// keeps of a frame (far over any Job's outputs limit).
pub const MAX_OUTPUT_BYTES: u64 = 6 * 1024 * 1024;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copy this program to `dest` (an init container fills the step pod's
    /// scratch volume with it).
    Install { dest: OsString },
    /// Run `argv` as the step, then frame the outputs file with `nonce`.
    Run { nonce: String, argv: Vec<OsString> },
}

/// Read the arguments after the program's name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Mode, String> {
    let mut args = args.into_iter();
    let verb = args.next().ok_or("no command given")?;
    match verb.to_str() {
        Some("install") => {
            let dest = args.next().ok_or("install needs a destination")?;
            if args.next().is_some() {
                return Err("install takes one destination".into());
            }
            Ok(Mode::Install { dest })
        }
        Some("run") => {
            let nonce = args
                .next()
                .and_then(|n| n.into_string().ok())
                .filter(|n| is_nonce(n))
                .ok_or("run needs a nonce of letters, digits and dashes")?;
            if args.next().is_none_or(|sep| sep != "--") {
                return Err("run needs `--` before the command".into());
            }
            let argv: Vec<OsString> = args.collect();
            if argv.is_empty() {
                return Err("run needs a command after `--`".into());
            }
            Ok(Mode::Run { nonce, argv })
        }
        _ => Err(format!("unknown command {verb:?}")),
    }
}

/// A nonce never holds what could end a marker early (`:`), whitespace or a byte a
/// shell or the log would change.
fn is_nonce(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The exit code to pass on, as `sh` reports it: the child's own, or 128 plus
/// the signal that killed it.
pub fn exit_code(code: Option<i32>, signal: Option<i32>) -> u8 {
    match (code, signal) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal).clamp(0, 255)).unwrap_or(1),
        (None, None) => 1,
    }
}

/// The code for a command that could not be started, as `sh` uses them: 127 not
/// found, 126 found but not runnable.
pub fn spawn_failure_code(kind: std::io::ErrorKind) -> u8 {
    if kind == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Where the container's memory cgroup counts its OOM kills: cgroup v2's
/// `memory.events`, or v1's `memory.oom_control` (both have an `oom_kill` line).
pub const OOM_COUNTERS: [&str; 2] = [
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.oom_control",
];

/// What this program writes to the termination message of a step whose
/// container had a process killed for memory. The runtime says `OOMKilled` too,
/// but its OOM event races the exit event, so it sometimes says `Error`.
pub const OOM_MARKER: &str = "OOMKilled";

/// The `oom_kill` count in a memory cgroup file.
pub fn oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The outputs frame around `outputs` (nothing for an empty file).
pub fn frame(nonce: &str, outputs: &[u8]) -> Vec<u8> {
    if outputs.is_empty() {
        return Vec::new();
    }
    let mut out = format!("\u{1e}::baton-outputs-begin {nonce}::\n").into_bytes();
    // 57 bytes make one 76-character line, as base64(1) writes them.
    for line in outputs.chunks(57) {
        out.extend(base64(line));
        out.push(b'\n');
    }
    out.extend(format!("::baton-outputs-end {nonce}::\n").into_bytes());
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 63) as usize];
        out.extend([sextet(18), sextet(12)]);
        out.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            parse(args(&["install", "/baton/bin/e"])),
            Ok(Mode::Install {
                dest: "/baton/bin/e".into()
            })
        );
        assert_eq!(
            parse(args(&["run", "ab-12", "--", "ls", "-l"])),
            Ok(Mode::Run {
                nonce: "ab-12".into(),
                argv: args(&["ls", "-l"])
            })
        );
        for bad in [
            &[][..],
            &["install"],
            &["install", "a", "b"],
            &["run", "n", "ls"],
            &["run", "n", "--"],
            &["run", "bad:nonce", "--", "ls"],
            &["run", "bad nonce", "--", "ls"],
            &["run", "", "--", "ls"],
            &["exec", "ls"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exit_codes_as_sh_reports_them() {
        assert_eq!(exit_code(Some(0), None), 0);
        assert_eq!(exit_code(Some(3), None), 3);
        assert_eq!(exit_code(None, Some(15)), 143);
        assert_eq!(exit_code(None, Some(9)), 137);
        assert_eq!(exit_code(None, None), 1);
        assert_eq!(spawn_failure_code(std::io::ErrorKind::NotFound), 127);
        assert_eq!(
            spawn_failure_code(std::io::ErrorKind::PermissionDenied),
            126
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded.as_bytes(), "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), b"//4A");
    }

    #[test]
    fn oom_kill_counts_from_either_cgroup_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(v1), Some(2));
        assert_eq!(oom_kills(v2), Some(1));
        assert_eq!(oom_kills("oom_kill_disable 0\n"), None);
        assert_eq!(oom_kills("oom_kill lots\n"), None);
        assert_eq!(oom_kills(""), None);
    }

    #[test]
    fn frames_wrap_lines_and_skip_empty_files() {
        assert!(frame("n", b"").is_empty());
        let text = String::from_utf8(frame("n1", &[b'x'; 100])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "\u{1e}::baton-outputs-begin n1::");
        assert_eq!(lines[1].len(), 76);
        assert_eq!(lines[2].len(), 60);
        assert_eq!(lines[3], "::baton-outputs-end n1::");
        assert!(text.ends_with('\n'));
    }
}
