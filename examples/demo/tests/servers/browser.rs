//! The demo page in headless Chromium (driven by `examples/demo/tests/browser/*.mjs`): reconnect with Last-Event-ID, every event once; a gzip stream decoded event by event; twelve streams to one origin over HTTP/2, six over HTTP/1.1.
//!
//! Built and run only with the test-only feature `browser-test`, which
//! `cargo test --all-features` (the full suite) turns on; a plain `cargo test`
//! needs no browser. Needs Node.js, Chromium (`$CHROMIUM`, else
//! `/usr/bin/chromium`) and the script's npm packages; without them this test
//! FAILS, naming what is missing and how to install it:
//!
//! ```text
//! bash tests/setup.sh    # or: apt-get install -y chromium nodejs npm && npm ci --prefix examples/demo/tests/browser
//! ```
//!
//! Set `SSEHUB_UPDATE_SCREENSHOT=1` to also write the screenshot to `docs/demo.png`.

use ssehub_demo::page as server;
use ssehub_demo::tls::{DemoTls, Protocols};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssehub::DynHub;
use ssehub::memory::MemoryHub;
use ssehub::sse::SseOptions;

const INSTALL: &str = "install it all with `bash tests/setup.sh` \
    (or: apt-get install -y chromium nodejs npm && npm ci --prefix examples/demo/tests/browser)";

/// How long the browser run may take before it counts as hung.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Everything the browser run needs, or one failure naming all that is missing and how to get it.
fn check_prerequisites(browser_dir: &Path) {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push(format!("node (`node --version` failed: {})", out.status)),
        Err(e) => missing.push(format!("node (not runnable: {e})")),
    }
    let chromium = chromium();
    if !chromium.is_file() {
        missing
            .push(format!("Chromium ({} does not exist; $CHROMIUM overrides the path)", chromium.display()));
    }
    let playwright = browser_dir.join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!(
            "the npm packages of examples/demo/tests/browser ({} does not exist)",
            playwright.display()
        ));
    }
    assert!(
        missing.is_empty(),
        "the browser test (feature `browser-test`, part of --all-features) needs what is missing here:\n  - {}\n{INSTALL}",
        missing.join("\n  - ")
    );
}

#[test]
fn browser_reconnects_with_last_event_id_and_logs_every_event_once_in_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    check_prerequisites(&browser_dir);

    let options = server::DemoOptions {
        // A retry long enough that several events are published while the browser is away.
        sse: SseOptions::new().retry(Duration::from_millis(1000)).heartbeat(Duration::from_secs(5)),
        generator_interval: Some(Duration::from_millis(100)),
    };
    let running = server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(MemoryHub::new()), options)
        .expect("the demo server starts");

    let screenshot = if std::env::var_os("SSEHUB_UPDATE_SCREENSHOT").is_some() {
        root.join("docs/demo.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo.png")
    };
    let _ = std::fs::remove_file(&screenshot);

    let out = run_node(
        &browser_dir,
        "demo.mjs",
        &[("DEMO_URL", running.url().into()), ("SCREENSHOT", screenshot.clone().into_os_string())],
    );
    assert!(out.contains("browser test passed"), "{out}");

    // The server's own record agrees: two requests by the user, the second with the Last-Event-ID.
    let bob = server::USERS[1].id.to_string();
    let served: Vec<_> = running.demo().served_streams().into_iter().filter(|c| c["user"] == bob).collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served[1]["last_event_id"].is_string(), "{served:?}");
    assert!(served[1]["replayed_events"].as_u64().unwrap() >= 1, "{served:?}");

    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real PNG: {} bytes", png.len());
}

/// Runs `script` of `browser_dir` with Node.js (and `$CHROMIUM`); its stdout, once it has exited successfully.
fn run_node(browser_dir: &Path, script: &str, env: &[(&str, std::ffi::OsString)]) -> String {
    let mut child = Command::new("node")
        .arg(browser_dir.join(script))
        .current_dir(browser_dir)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("node can be waited for") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    println!("{out}");
    eprintln!("{err}");
    let status = status.unwrap_or_else(|| panic!("{script} took longer than {NODE_TIMEOUT:?}"));
    assert!(status.success(), "{script} failed ({status}):\n{out}\n{err}");
    out
}

#[test]
fn browser_decodes_a_gzip_stream_event_by_event() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    check_prerequisites(&browser_dir);

    // No generator: the script publishes each event and waits for the page to show it.
    let options = quiet_options();
    let running = server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(MemoryHub::new()), options)
        .expect("the demo server starts");
    running.demo().compress_streams(true).expect("the browser-test feature brings gzip");

    let out = run_node(&browser_dir, "gzip.mjs", &[("DEMO_URL", running.url().into())]);
    assert!(out.contains("gzip browser test passed"), "{out}");
    // One request: every event came through the one stream while it stayed open.
    let served = running.demo().served_streams();
    assert_eq!(served.len(), 1, "{served:?}");
}

/// Runs `streams.mjs` against the demo over TLS offering `protocols`; returns the demo, for its record.
fn twelve_streams_on_one_origin(protocols: Protocols) -> server::RunningDemo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    check_prerequisites(&browser_dir);

    // No generator: the script publishes each event it waits for.
    let options = quiet_options();
    let tls = DemoTls::self_signed(protocols).expect("a self-signed certificate");
    let certificate = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-{protocols:?}.pem"));
    std::fs::write(&certificate, tls.certificate_pem()).expect("the certificate is written");
    let running =
        server::start_tls("127.0.0.1:0".parse().unwrap(), DynHub::new(MemoryHub::new()), options, tls)
            .expect("the demo server starts");
    let protocol = match protocols {
        Protocols::Http2AndHttp1 => "h2",
        Protocols::Http1Only => "http/1.1",
    };
    let out = run_node(
        &browser_dir,
        "streams.mjs",
        &[
            ("DEMO_URL", running.url().into()),
            ("PROTOCOL", protocol.into()),
            // The script's own fetch (publishing, the server's record) trusts the certificate.
            ("NODE_EXTRA_CA_CERTS", certificate.into_os_string()),
        ],
    );
    assert!(out.contains("streams browser test passed"), "{out}");
    running
}

#[test]
fn browser_streams_twelve_event_sources_to_one_origin_at_once_over_http2() {
    let running = twelve_streams_on_one_origin(Protocols::Http2AndHttp1);
    let served = running.demo().served_streams();
    assert_eq!(served.len(), 12, "{served:?}");
    assert!(served.iter().all(|stream| stream["http_version"] == "HTTP/2.0"), "{served:?}");
}

#[test]
fn browser_holds_the_seventh_event_source_to_one_origin_until_one_closes_over_http1() {
    let running = twelve_streams_on_one_origin(Protocols::Http1Only);
    // Six, then the six that waited for them.
    let served = running.demo().served_streams();
    assert_eq!(served.len(), 12, "{served:?}");
    assert!(served.iter().all(|stream| stream["http_version"] == "HTTP/1.1"), "{served:?}");
}

/// A demo server's options for a test that publishes its own events: no generator, a 1 s retry, a 5 s
/// heartbeat.
fn quiet_options() -> server::DemoOptions {
    server::DemoOptions {
        sse: SseOptions::new().retry(Duration::from_millis(1000)).heartbeat(Duration::from_secs(5)),
        generator_interval: None,
    }
}
