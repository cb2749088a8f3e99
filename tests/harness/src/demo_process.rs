//! The demo binary as a child process on a free port, killed when dropped, panic or not.
//!
//! The demo crate's tests pass the binary cargo built for them
//! (`env!("CARGO_BIN_EXE_demo")`), so it has their features.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running demo binary.
pub struct DemoProcess {
    child: Child,
    addr: SocketAddr,
}

impl DemoProcess {
    /// Starts the demo `binary` with `args` plus `--port 0`, and reads the address it prints (`http://` or, with `--tls`, `https://`).
    pub fn start(binary: impl AsRef<Path>, args: &[&str]) -> Self {
        let mut child = Command::new(binary.as_ref())
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
            let url = line.trim().strip_prefix("ssehub demo listening on ")?;
            let authority = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
            authority.trim_end_matches('/').parse().ok()
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
