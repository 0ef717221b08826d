//! `baton-entrypoint`: the first program of a Baton step container. It needs
//! nothing from the step's image (linked statically, copied in by an init
//! container), so images without a shell can be steps and keep their outputs.
//!
//! `run` starts the step's command as a child, passes SIGTERM and SIGINT on to it
//! (as PID 1 it would otherwise ignore them), waits, frames `$BATON_OUTPUT` into
//! stdout, and exits with the child's code.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use baton_entrypoint::{
    MAX_OUTPUT_BYTES, Mode, OOM_COUNTERS, OOM_MARKER, USAGE, exit_code, frame, oom_kills, parse,
    spawn_failure_code,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    match parse(std::env::args_os().skip(1)) {
        Ok(Mode::Install { dest }) => install(Path::new(&dest)),
        Ok(Mode::Run { nonce, argv }) => ExitCode::from(run(&nonce, &argv)),
        Err(message) => {
            eprintln!("baton-entrypoint: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Copy this program to `dest`, runnable by the step's user.
fn install(dest: &Path) -> ExitCode {
    let copied = dest
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::copy("/proc/self/exe", dest))
        .and_then(|_| std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)));
    match copied {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "baton-entrypoint: cannot install into {}: {e}",
                dest.display()
            );
            ExitCode::from(1)
        }
    }
}

fn run(nonce: &str, argv: &[OsString]) -> u8 {
    let output = std::env::var_os("BATON_OUTPUT");
    if let Some(path) = &output
        && let Err(e) = File::create(path)
    {
        eprintln!(
            "baton: cannot prepare $BATON_OUTPUT ({}): {e}",
            Path::new(path).display()
        );
        return 126;
    }
    // Caught before the step starts, so none is lost (as a container's PID 1,
    // a signal without a handler is dropped). Handlers do not survive exec: the
    // step starts with the default actions and nothing blocked.
    let signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("baton: cannot catch SIGTERM/SIGINT: {e}");
            return 126;
        }
    };
    let Some((program, rest)) = argv.split_first() else {
        return 2;
    };
    let kills_before = container_oom_kills();
    let mut child = match Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("baton: cannot run {}: {e}", program.to_string_lossy());
            return spawn_failure_code(e.kind());
        }
    };
    if let Ok(raw) = i32::try_from(child.id()) {
        std::thread::spawn(move || forward(signals, Pid::from_raw(raw)));
    }
    let code = match child.wait() {
        Ok(status) => exit_code(status.code(), status.signal()),
        Err(e) => {
            eprintln!("baton: lost the step's process: {e}");
            1
        }
    };
    if code != 0 && container_oom_kills() > kills_before {
        eprintln!("baton: a process of the step was killed for using more memory than its limit");
        // Kubernetes' default terminationMessagePath, which the kubelet mounts
        // (opened without create: outside a pod there is nothing to tell).
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open("/dev/termination-log")
            .and_then(|mut f| f.write_all(OOM_MARKER.as_bytes()));
    }
    if let Some(path) = output {
        frame_outputs(nonce, Path::new(&path));
    }
    code
}

/// How many processes the container's memory cgroup has killed so far (0 when
/// no cgroup file is readable: outside a container, or one without the mount).
fn container_oom_kills() -> u64 {
    OOM_COUNTERS
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| oom_kills(&text))
        .unwrap_or(0)
}

/// Pass every SIGTERM/SIGINT this process gets on to the step's process.
fn forward(mut signals: Signals, child: Pid) {
    for raw in signals.forever() {
        if let Ok(signal) = Signal::try_from(raw) {
            // The child may have ended already: nothing to tell it then.
            let _ = kill(child, signal);
        }
    }
}

/// Print the outputs file as one frame after everything the step wrote.
fn frame_outputs(nonce: &str, path: &Path) {
    let mut outputs = Vec::new();
    let read = File::open(path).and_then(|f| f.take(MAX_OUTPUT_BYTES).read_to_end(&mut outputs));
    if let Err(e) = read {
        eprintln!(
            "baton: cannot read $BATON_OUTPUT ({}): {e}; outputs are lost",
            path.display()
        );
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(&frame(nonce, &outputs))
        .and_then(|()| stdout.flush())
    {
        eprintln!("baton: cannot write the outputs to the log: {e}");
    }
}
