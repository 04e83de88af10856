use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method};

/// ticketd: the longest request line accepted (longer: `414`).
const REQUEST_LINE_BYTES_MAX: usize = 8 * 1024;
/// ticketd: the largest request head (request line and headers, line
/// ends included) accepted (larger: `431`).
const HEAD_BYTES_MAX: usize = 32 * 1024;
/// ticketd: the most headers accepted in one request (more: `431`).
const HEADERS_MAX: usize = 128;
/// ticketd: how long a request head may take to arrive, from the
/// connection's accept for its first request and from its first byte for
/// later ones, whatever the byte rate (longer: `408`).
pub(crate) const HEAD_DEADLINE: Duration = Duration::from_secs(10);
use crate::util::read_deadline::ReadDeadline;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    /// ticketd: bounds the time the request head takes to arrive.
    deadline: Arc<ReadDeadline>,

    /// ticketd: bytes of the current request head read so far.
    head_bytes: usize,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// ticketd: the request line is over `REQUEST_LINE_BYTES_MAX`.
    RequestLineTooLong,
    /// ticketd: the head is over `HEAD_BYTES_MAX` or `HEADERS_MAX`.
    HeadTooLarge,
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        // ticketd: the first request's head is due from the accept on.
        let deadline = Arc::new(ReadDeadline::new(crate::CLIENT_IDLE_TIMEOUT));
        deadline.set(Some(Instant::now() + HEAD_DEADLINE));
        read_socket.set_deadline(Arc::clone(&deadline));

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            deadline,
            head_bytes: 0,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// ticketd: a line of any length was kept in memory, so one client
    /// could make the server run out of it. The request line is now at
    /// most `REQUEST_LINE_BYTES_MAX` and the whole head `HEAD_BYTES_MAX`;
    /// the first byte of a request starts its head's deadline.
    fn read_next_line(&mut self, request_line: bool) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            if request_line && buf.len() > REQUEST_LINE_BYTES_MAX {
                return Err(ReadError::RequestLineTooLong);
            }
            if self.head_bytes >= HEAD_BYTES_MAX {
                return Err(ReadError::HeadTooLarge);
            }
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(ReadError::ReadIoError)?,
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };
            if self.head_bytes == 0 {
                self.deadline.set_if_unset(Instant::now() + HEAD_DEADLINE);
            }
            self.head_bytes += 1;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| {
                    ReadError::ReadIoError(IoError::new(
                        ErrorKind::InvalidInput,
                        "Header is not in ASCII",
                    ))
                });
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        self.head_bytes = 0;
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(true)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(false)?;

                    if line.is_empty() {
                        break;
                    };
                    // ticketd: so was any number of headers.
                    if headers.len() >= HEADERS_MAX {
                        return Err(ReadError::HeadTooLarge);
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        // ticketd: the head is in; the body and the next request's wait
        // have the idle timeout only.
        self.deadline.set(None);

        // ticketd: the peer address was unwrapped below, which panicked
        // the connection's thread when the client had already gone.
        let remote_addr = match self.remote_addr.as_ref() {
            Ok(addr) => *addr,
            Err(_) => {
                return Err(ReadError::ReadIoError(IoError::new(
                    ErrorKind::NotConnected,
                    "client went away",
                )))
            }
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            remote_addr,
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl ClientConnection {
    /// ticketd: answers `status` with a one-line `body` and
    /// `Connection: close`, before the connection is closed.
    fn refuse(&mut self, status: u16, body: &str) {
        if let Some(mut writer) = self.sink.next() {
            let answer = refusal(status, "", body);
            let _ = writer.write_all(&answer).and_then(|()| writer.flush());
        }
    }
}

/// ticketd: a whole short answer that closes the connection: status line,
/// `extra_headers` (each ending in CRLF), and a one-line text body.
pub(crate) fn refusal(status: u16, extra_headers: &str, body: &str) -> Vec<u8> {
    let reason = crate::StatusCode(status).default_reason_phrase();
    format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{extra_headers}\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}\n",
        body.len() + 1
    )
    .into_bytes()
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                // ticketd: a timeout in the middle of a head (its deadline,
                // see `HEAD_DEADLINE`) is answered; one between requests
                // (an idle keep-alive client) just closes.
                Err(ReadError::ReadIoError(ref err))
                    if err.kind() == ErrorKind::TimedOut && self.head_bytes > 0 =>
                {
                    self.refuse(408, "the request head took too long");
                    return None; // closing the connection
                }

                Err(ReadError::RequestLineTooLong) => {
                    self.refuse(414, "the request line is too long");
                    return None;
                }

                Err(ReadError::HeadTooLarge) => {
                    self.refuse(431, "the request head is too large");
                    return None;
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                // ticketd: this took a second writer from the sink while
                // `rq` still held the first, which waits for it forever: the
                // connection's thread deadlocked. Answer through `rq` and
                // close (what follows is not HTTP/1).
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                let mut writer = rq.into_writer();
                let _ = response.raw_print(&mut writer, HTTPVersion(1, 1), &[], false, None);
                let _ = writer.flush();
                return None;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
