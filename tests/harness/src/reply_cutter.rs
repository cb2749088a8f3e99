//! A TCP proxy in front of a Redis server that can drop a connection right after Redis ran a script and before its reply arrives.
//!
//! Every connection made to [`ReplyCutter::port`] is relayed to the server one RESP value at a
//! time (relayed byte for byte), counting the commands each client sent and the replies it got (RESP2: one reply per
//! command). [`ReplyCutter::cut_next_script_replies`] arms it: the next `EVALSHA`/`EVAL` a client
//! sends is forwarded, and when Redis's reply to it comes back (so the script has run), the proxy
//! closes both sides of that connection instead of relaying the reply. The client sees a
//! connection lost with a command in flight, the fault a network drop causes.

use std::collections::BTreeSet;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::resp::{RespValue, read_frame};

/// The proxy; it stops accepting connections when dropped.
pub struct ReplyCutter {
    port: u16,
    state: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Script replies still to cut.
    armed: AtomicU64,
    /// Script replies cut so far.
    cut: AtomicU64,
    stopped: AtomicBool,
}

/// Per connection: the numbers (0-based, in sending order) of the commands whose replies are cut.
type Targets = Arc<Mutex<BTreeSet<u64>>>;

impl ReplyCutter {
    /// Starts relaying a free loopback port to the Redis server on `upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Shared::default());
        let accepting = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                relay(client, server, Arc::clone(&accepting));
            }
        });
        Self { port, state }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts the connection instead of relaying the reply of each of the next `count` scripts sent.
    pub fn cut_next_script_replies(&self, count: u64) {
        self.state.armed.fetch_add(count, Ordering::SeqCst);
    }

    /// How many script replies were cut so far.
    pub fn cuts(&self) -> u64 {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// How many armed cuts have not found their script yet.
    pub fn armed(&self) -> u64 {
        self.state.armed.load(Ordering::SeqCst)
    }
}

impl Drop for ReplyCutter {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Starts the two relay threads of one connection.
fn relay(client: TcpStream, server: TcpStream, state: Arc<Shared>) {
    let targets: Targets = Arc::default();
    let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (commands_state, commands_targets) = (Arc::clone(&state), Arc::clone(&targets));
    thread::spawn(move || {
        let _ = relay_commands(client_in, server_out, &commands_state, &commands_targets);
    });
    thread::spawn(move || {
        let _ = relay_replies(server, client, &state, &targets);
    });
}

/// Client to server: one command at a time, noting which scripts' replies to cut.
fn relay_commands(client: TcpStream, server: TcpStream, state: &Shared, targets: &Targets) -> io::Result<()> {
    let mut from = BufReader::new(client.try_clone()?);
    let mut to = BufWriter::new(server.try_clone()?);
    let mut sent = 0u64;
    let result = loop {
        let (command, bytes) = match read_frame(&mut from) {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        let is_script =
            command.as_array().and_then(|args| args.first()).and_then(RespValue::as_bytes).is_some_and(
                |name| name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL"),
            );
        let take_one = |armed: u64| armed.checked_sub(1);
        if is_script && state.armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, take_one).is_ok() {
            // Noted before the command leaves, so the reply side knows it when the reply comes.
            targets.lock().unwrap().insert(sent);
        }
        to.write_all(&bytes)?;
        // Flush once nothing more is buffered from the client, so pipelined commands travel together.
        if from.buffer().is_empty() {
            to.flush()?;
        }
        sent += 1;
    };
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// Server to client: one reply at a time; a targeted reply closes both sides instead.
fn relay_replies(server: TcpStream, client: TcpStream, state: &Shared, targets: &Targets) -> io::Result<()> {
    let mut from = BufReader::new(server.try_clone()?);
    let mut to = BufWriter::new(client.try_clone()?);
    let mut received = 0u64;
    let result = loop {
        let (_, bytes) = match read_frame(&mut from) {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        if targets.lock().unwrap().remove(&received) {
            // Redis answered, so the script ran; the client never learns how.
            state.cut.fetch_add(1, Ordering::SeqCst);
            break Ok(());
        }
        to.write_all(&bytes)?;
        if from.buffer().is_empty() {
            to.flush()?;
        }
        received += 1;
    };
    let _ = to.flush();
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    result
}
