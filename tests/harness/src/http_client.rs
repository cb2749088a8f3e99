//! Test helper: a raw HTTP/1.1 client over std `TcpStream` that reads chunked SSE bodies chunk by chunk.
//!
//! Every read gives up after 10 s, so a server that stops answering fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response's head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 connection; every read gives up after a timeout instead of hanging the test.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { reader: BufReader::new(stream) }
    }

    pub fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Head {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        self.read_head()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "cut short: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read_head(&mut self) -> Head {
        let status_line = self.read_line();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.read_line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        Head { status, headers }
    }

    /// A whole body, sized by Content-Length (none for `204 No Content` and `304 Not Modified`).
    pub fn read_sized_body(&mut self, head: &Head) -> String {
        if matches!(head.status, 204 | 304) {
            return String::new();
        }
        let len: usize = head.header("content-length").expect("a sized body").parse().unwrap();
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    /// The next chunk of a chunked body; `None` at the final, empty chunk (a clean end).
    pub fn read_chunk(&mut self) -> Option<String> {
        let size = usize::from_str_radix(self.read_line().split(';').next().unwrap(), 16).unwrap();
        let mut chunk = vec![0; size];
        self.reader.read_exact(&mut chunk).unwrap();
        assert_eq!(self.read_line(), "", "chunk ends with CRLF");
        (size > 0).then(|| String::from_utf8(chunk).unwrap())
    }

    /// Reads chunks until the stream text holds `frames` frames (blank-line terminated).
    pub fn read_frames(&mut self, frames: usize) -> Vec<String> {
        let mut text = String::new();
        while text.matches("\n\n").count() < frames {
            text.push_str(&self.read_chunk().expect("the stream goes on"));
        }
        text.split_terminator("\n\n").map(|frame| format!("{frame}\n\n")).collect()
    }
}

/// A whole request on a fresh connection: status, head and body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Head, String) {
    let mut client = Client::connect(addr);
    let head = client.send(method, target, headers, body);
    let body = client.read_sized_body(&head);
    (head, body)
}

/// `chunk` with each `id:` cursor checked (it parses, and its head is an
/// event id) and replaced by that event id, so it compares with a frame naming the event id.
pub fn ids_of(chunk: String) -> String {
    chunk
        .split_inclusive('\n')
        .map(|line| match line.strip_prefix("id: ") {
            Some(id) => {
                let cursor: ssehub::Cursor =
                    id.trim_end().parse().unwrap_or_else(|e| panic!("id {id:?}: {e}"));
                assert!(id.starts_with(&cursor.event_id().to_string()), "{id:?}");
                format!("id: {}\n", cursor.event_id())
            }
            None => line.to_owned(),
        })
        .collect()
}
