//! Many keep-alive clients that connect at once are each served at
//! once: none waits for another to leave (a lost wake-up in tiny_http's
//! thread pool, fixed in vendor/tiny_http, made some wait for good).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::Cluster;

/// Sends `POST /` on a kept-alive connection and reads one answer.
fn post_keep_alive(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> u16 {
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    read_response(reader).0
}

#[test]
fn simultaneous_keep_alive_clients_are_all_served() {
    let cluster = Cluster::start("keep-alive", 1);
    let addr = cluster.nodes[0].http();
    let clients = 48;
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut stream = TcpStream::connect(&addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                for _ in 0..20 {
                    assert_eq!(post_keep_alive(&mut stream, &mut reader), 200);
                }
                // Hold the connection while the others are served: a
                // client left waiting for another to leave never gets
                // here, and its read times out (an order, not a speed).
                barrier.wait();
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client was never served");
    }
}

/// Reads one response: status, body.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let cluster = Cluster::start("pipelined", 1);
    let addr = cluster.nodes[0].http();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // Each request is handled on the connection's thread; the next one is
    // read while the answer to the last may still be going out.
    let id = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let session = b"POST /api/v1/sessions?name=p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let missing = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut all = Vec::new();
    for _ in 0..5 {
        all.extend_from_slice(id);
        all.extend_from_slice(session);
        all.extend_from_slice(missing);
    }
    stream.write_all(&all).unwrap();
    let mut last_id = 0u64;
    for _ in 0..5 {
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        let id: u64 = body.trim().parse().unwrap();
        assert!(id > last_id, "IDs out of order: {id} after {last_id}");
        last_id = id;
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(body.trim().starts_with('"'), "a session id: {body:?}");
        let (status, _) = read_response(&mut reader);
        assert_eq!(status, 404);
    }
}
