//! A blocking RESP2 client for checks made from tests (`CLIENT LIST`, `PUBSUB NUMSUB`, ...), on the `redis-protocol` codec.
//!
//! [`RespValue`] is the reply as tests read it (null bulk strings and null
//! arrays kept apart for messages); the bytes are decoded and encoded by
//! `redis-protocol`, the codec under the fred client.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Integer(i64),
    /// `$...`; `None` is the null reply (`$-1` or `*-1`).
    Bulk(Option<Vec<u8>>),
    /// `*...`
    Array(Option<Vec<RespValue>>),
}

impl From<OwnedFrame> for RespValue {
    fn from(frame: OwnedFrame) -> Self {
        match frame {
            OwnedFrame::SimpleString(text) => RespValue::Simple(String::from_utf8_lossy(&text).into_owned()),
            OwnedFrame::Error(message) => RespValue::Error(message),
            OwnedFrame::Integer(value) => RespValue::Integer(value),
            OwnedFrame::BulkString(bytes) => RespValue::Bulk(Some(bytes)),
            OwnedFrame::Array(items) => {
                RespValue::Array(Some(items.into_iter().map(RespValue::from).collect()))
            }
            OwnedFrame::Null => RespValue::Bulk(None),
        }
    }
}

impl RespValue {
    /// `true` for `-ERR ...` style replies.
    pub fn is_error(&self) -> bool {
        matches!(self, RespValue::Error(_))
    }

    /// `true` for the null reply.
    pub fn is_null(&self) -> bool {
        matches!(self, RespValue::Bulk(None) | RespValue::Array(None))
    }

    /// The text of a simple string or a (UTF-8) bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RespValue::Simple(s) => Some(s),
            RespValue::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a simple string or a bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RespValue::Simple(s) => Some(s.as_bytes()),
            RespValue::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RespValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of a (non-null) array reply.
    pub fn as_array(&self) -> Option<&[RespValue]> {
        match self {
            RespValue::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The message of an error reply.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            RespValue::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Panics unless this is `+OK`.
    #[track_caller]
    pub fn expect_ok(&self) {
        assert_eq!(self, &RespValue::Simple("OK".into()), "expected +OK, got {self}");
    }
}

impl fmt::Display for RespValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespValue::Simple(s) => write!(f, "+{s}"),
            RespValue::Error(e) => write!(f, "-{e}"),
            RespValue::Integer(i) => write!(f, ":{i}"),
            RespValue::Bulk(None) | RespValue::Array(None) => f.write_str("(nil)"),
            RespValue::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            RespValue::Array(Some(items)) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Encodes one command as a RESP2 array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let frame =
        OwnedFrame::Array(args.iter().map(|arg| OwnedFrame::BulkString(arg.as_ref().to_vec())).collect());
    let mut out = vec![0; frame.encode_len(false)];
    let written = encode(&mut out, &frame, false).expect("the buffer is sized by encode_len");
    out.truncate(written);
    out
}

/// Reads one RESP2 value from `r`, consuming its bytes and no more.
pub fn read_resp<R: BufRead>(r: &mut R) -> io::Result<RespValue> {
    read_frame(r).map(|(value, _)| value)
}

/// Reads one RESP2 value from `r` with the bytes it came in, consuming those and no more.
pub fn read_frame<R: BufRead>(r: &mut R) -> io::Result<(RespValue, Vec<u8>)> {
    let mut pending = Vec::new();
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by redis"));
        }
        let before = pending.len();
        let read = available.len();
        pending.extend_from_slice(available);
        match decode(&pending) {
            Ok(Some((frame, used))) => {
                r.consume(used - before);
                pending.truncate(used);
                return Ok((frame.into(), pending));
            }
            Ok(None) => r.consume(read),
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error.to_string())),
        }
    }
}

/// A plain, blocking RESP2 connection to one server (no AUTH, no RESP3).
pub struct RespConnection {
    reader: BufReader<TcpStream>,
}

impl RespConnection {
    /// Connects to `127.0.0.1:port` (2 s connect timeout, 10 s read/write timeouts).
    pub fn connect(port: u16) -> io::Result<RespConnection> {
        Self::connect_with_timeout(port, Duration::from_secs(2), Duration::from_secs(10))
    }

    /// Connects to `127.0.0.1:port` with the given connect and read/write timeouts.
    pub fn connect_with_timeout(
        port: u16,
        connect: Duration,
        io_timeout: Duration,
    ) -> io::Result<RespConnection> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, connect)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        Ok(RespConnection { reader: BufReader::new(stream) })
    }

    /// Sends one command without reading the reply (e.g. for `SUBSCRIBE`).
    pub fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(&encode_command(args))?;
        stream.flush()
    }

    /// Reads the next reply / push message.
    pub fn read_value(&mut self) -> io::Result<RespValue> {
        read_resp(&mut self.reader)
    }

    /// Sends one command and reads its reply. Redis errors come back as [`RespValue::Error`].
    pub fn command(&mut self, args: &[&str]) -> io::Result<RespValue> {
        self.send(args)?;
        self.read_value()
    }

    /// Changes the read timeout (`None` blocks forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// The local address of this connection (matches `laddr=` in `CLIENT LIST`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }
}
