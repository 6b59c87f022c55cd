//! A CONNECT proxy on 127.0.0.1 for tests: it records the target each client asks for and
//! tunnels every connection to one fixed upstream on loopback (never to the named target).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct ConnectProxy {
    pub url: String,
    /// The `host:port` of every CONNECT request seen.
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// A proxy sending every tunnel to `upstream` (`host:port` on loopback).
    pub fn start(upstream: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (seen, upstream) = (Arc::clone(&targets), upstream.to_string());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (seen, upstream) = (Arc::clone(&seen), upstream.clone());
                thread::spawn(move || tunnel(client, &upstream, &seen));
            }
        });
        ConnectProxy { url, targets }
    }
}

fn tunnel(client: TcpStream, upstream: &str, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut parts = first.split_whitespace();
    if parts.next() != Some("CONNECT") {
        let _ = (&client).write_all(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    seen.lock()
        .unwrap()
        .push(parts.next().unwrap_or("").to_string());
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    if (&client)
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Bytes the reader already buffered belong to the tunnel.
    let buffered = reader.buffer().to_vec();
    let up = thread::spawn(move || {
        let _ = s2.write_all(&buffered);
        let _ = std::io::copy(&mut reader, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let mut server = server;
    let _ = std::io::copy(&mut server, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
