//! The demo over TLS and HTTP/2: many streams on one connection, a graceful shutdown that sends GOAWAY and ends every stream with a retry hint, and the binary's `--tls`.

use ssehub_demo::page as server;
use ssehub_demo::tls::{DemoTls, Protocols};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use futures_rustls::TlsConnector;
use futures_rustls::rustls::pki_types::ServerName;
use http_body_util::{BodyStream, Empty};
use hyper::client::conn::http2;
use hyper::{Request, Version};
use server::Topic as C;
use smol_hyper::rt::FuturesIo;
use ssehub::memory::MemoryHub;
use ssehub::shutdown::SHUTDOWN_COMMENT;
use ssehub::sse::SseOptions;
use ssehub::{Audience, DynHub, Event};

/// Streams opened on the one connection.
const STREAMS: usize = 3;
/// The type of an HTTP/2 GOAWAY frame (RFC 9113, section 6.8).
const GOAWAY_FRAME: u8 = 0x7;

/// Runs hyper's HTTP/2 client tasks on smol's global executor.
#[derive(Clone, Copy)]
struct SmolGlobal;

impl<F: Future + Send + 'static> hyper::rt::Executor<F> for SmolGlobal
where
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        smol::spawn(future).detach();
    }
}

/// A connection that keeps a copy of every byte read from it (the plaintext inside TLS).
struct Recorded<S> {
    inner: S,
    read: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(read)) = poll {
            self.read.lock().unwrap().extend_from_slice(&buf[..read]);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The type of every whole HTTP/2 frame in what a server sent (it sends no preface: frames from the first byte).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = bytes.get(9 + length..).unwrap_or_default();
    }
    types
}

/// The retry delay of a stream that a shutdown ended: its text ends with `retry: <ms>` and the comment.
fn shutdown_retry_millis(text: &str) -> Option<u64> {
    let before = text.strip_suffix(&format!("\n\n: {SHUTDOWN_COMMENT}\n\n"))?;
    before.rsplit_once("retry: ")?.1.parse().ok()
}

/// Connects over TLS offering only `h2`, trusting `tls`'s certificate; returns the request sender,
/// the connection's task and what the server sent.
async fn connect_http2(
    addr: SocketAddr,
    tls: &DemoTls,
) -> (http2::SendRequest<Empty<Bytes>>, smol::Task<hyper::Result<()>>, Arc<Mutex<Vec<u8>>>) {
    let connector = TlsConnector::from(tls.client_config(Protocols::Http2AndHttp1).unwrap());
    let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.expect("the TLS handshake succeeds");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose HTTP/2");
    let read = Arc::new(Mutex::new(Vec::new()));
    let recorded = Recorded { inner: stream, read: Arc::clone(&read) };
    let (sender, connection) = http2::handshake(SmolGlobal, FuturesIo::new(recorded)).await.unwrap();
    (sender, smol::spawn(connection), read)
}

#[test]
fn http2_streams_share_one_connection_and_a_shutdown_sends_goaway_and_a_retry_hint_on_each() {
    let tls = DemoTls::self_signed(Protocols::Http2AndHttp1).unwrap();
    let options = server::DemoOptions {
        sse: SseOptions::new().retry(Duration::from_millis(1000)).heartbeat(Duration::from_secs(30)),
        generator_interval: None,
    };
    let running = server::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        DynHub::new(MemoryHub::new()),
        options,
        tls.clone(),
    )
    .unwrap();
    assert!(running.url().starts_with("https://"), "{}", running.url());
    let alice = server::USERS[0].id;

    smol::block_on(async {
        let (mut sender, connection, read) = connect_http2(running.addr(), &tls).await;
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let request =
                Request::get(format!("{}/events?user={alice}", running.url())).body(Empty::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), Version::HTTP_2);
            let mut body = BodyStream::new(response.into_body());
            let first = body.next().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, "retry: 1000\n\n");
            streams.push(body);
        }
        let served = running.demo().served_streams();
        assert_eq!(served.len(), STREAMS, "{served:?}");
        assert!(served.iter().all(|stream| stream["http_version"] == "HTTP/2.0"), "{served:?}");

        // Every stream carries the event, on the one connection.
        let event = Event::new(Audience::User(alice), "marker", C::Ai, "{\"n\":1}").unwrap();
        running.demo().publish(event.clone()).await.unwrap();
        for body in &mut streams {
            let frame = body.next().await.unwrap().unwrap().into_data().unwrap();
            let frame = String::from_utf8(frame.to_vec()).unwrap();
            assert!(frame.contains("event: marker\n") && frame.contains("data: {\"n\":1}\n"), "{frame:?}");
        }

        // The graceful stop: each stream ends with the hint, then the connection closes cleanly.
        let stopping = std::thread::spawn(move || running.shutdown());
        for body in streams {
            let mut rest = String::new();
            let mut body = body;
            while let Some(frame) = body.next().await {
                let frame = frame.expect("the stream ends cleanly, not reset");
                if let Ok(data) = frame.into_data() {
                    rest.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            let retry =
                shutdown_retry_millis(&rest).unwrap_or_else(|| panic!("not a shutdown ending: {rest:?}"));
            assert!((250..1250).contains(&retry), "retry {retry} ms outside the demo's 250..1250");
        }
        connection.await.expect("the connection closes cleanly");
        assert_eq!(stopping.join().unwrap(), STREAMS, "the open streams the shutdown reported");
        let types = frame_types(&read.lock().unwrap());
        assert!(types.contains(&GOAWAY_FRAME), "no GOAWAY among the server's frames {types:?}");
    });
}

#[test]
fn demo_binary_documents_tls_starts_with_it_and_refuses_http1_only_without_it() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_demo"));
    let help = std::process::Command::new(binary).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--tls") && help.contains("--http1-only"), "{help}");

    let alone = std::process::Command::new(binary).arg("--http1-only").output().unwrap();
    assert_eq!(alone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--http1-only goes with --tls"));

    // It prints an https:// address (the harness reads either scheme) and stops cleanly on SIGTERM.
    let mut demo =
        ssehub_harness::demo_process::DemoProcess::start(binary, &["--tls", "--generator-ms", "0"]);
    assert!(demo.stop_with("TERM").success());
}
