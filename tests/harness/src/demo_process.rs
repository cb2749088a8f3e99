//! Test helper: builds the `demo` example binary and runs it as a child process on a free port.
//!
//! Include it with `#[path = "support/demo_process.rs"] mod demo_process;`. The binary is
//! built with the features of the test build that includes this file, so it is not rebuilt
//! with others. A [`DemoProcess`] kills its child when dropped, panic or not.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Builds the demo example (once per test binary) and returns its path.
pub fn demo_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let features: Vec<&str> = [
                ("fred", cfg!(feature = "fred")),
                ("conformance", cfg!(feature = "conformance")),
                ("serde", cfg!(feature = "serde")),
                ("metrics", cfg!(feature = "metrics")),
                ("browser-test", cfg!(feature = "browser-test")),
            ]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let built = Command::new(cargo)
                .args(["build", "--quiet", "--example", "demo", "--features", &features.join(",")])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(built.success(), "cargo build --example demo failed");
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
            target_dir.join("debug/examples/demo")
        })
        .clone()
}

/// A running demo binary.
pub struct DemoProcess {
    child: Child,
    addr: SocketAddr,
}

impl DemoProcess {
    /// Starts the demo with `args` plus `--port 0`, and reads the address it prints.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(demo_binary())
            .args(args)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the demo binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        // Keep reading, so the demo never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = read.ok().and_then(|_| {
            line.trim().strip_prefix("ssehub demo listening on http://")?.trim_end_matches('/').parse().ok()
        });
        match addr {
            Some(addr) => Self { child, addr },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the demo printed no address: {line:?} (exit: {status:?})");
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends it `signal` (`"TERM"`, `"INT"`) and waits, up to 60 s, for it to exit.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        // The shell's builtin `kill`: no procps package needed.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.child.id())])
            .status()
            .expect("sh runs");
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("the demo's status") {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not exit within 60 s of SIG{signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
