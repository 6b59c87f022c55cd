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

/// Debian's tinyproxy, a real HTTP proxy, on 127.0.0.1 (unpacked under target/peers by
/// `scripts/peers`): run in the foreground with a configuration of the test's own that lets
/// clients on loopback CONNECT to `ports` only. Killed when dropped.
pub struct Tinyproxy {
    pub url: String,
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Tinyproxy {
    pub fn start(dir: &super::TempDir, ports: &[u16]) -> Tinyproxy {
        let bin = super::peers::peers_dir().join("tinyproxy/root/usr/bin/tinyproxy");
        assert!(
            bin.exists(),
            "tinyproxy is not unpacked at {}: run scripts/peers (scripts/test does it)",
            bin.display()
        );
        let port = super::free_port();
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 50\n\
             LogLevel Connect\nDisableViaHeader Yes\nPidFile \"{}\"\nLogFile \"{}\"\n",
            dir.join("tinyproxy.pid").display(),
            log.display()
        );
        for p in ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("tinyproxy.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut proxy = Tinyproxy {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let stderr = dir.join("tinyproxy.stderr");
        super::wait_until(
            std::time::Duration::from_secs(30),
            "tinyproxy listening",
            || {
                if let Ok(Some(status)) = proxy.child.try_wait() {
                    panic!(
                        "tinyproxy exited ({status}): {}{}",
                        std::fs::read_to_string(&stderr).unwrap_or_default(),
                        proxy.log()
                    );
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
        );
        proxy
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts that tinyproxy was asked to CONNECT to `target` (`host:port`) and opened that
    /// connection: the traffic went through it.
    pub fn assert_tunnelled_to(&self, target: &str) {
        let log = self.log();
        let (host, _) = target.rsplit_once(':').unwrap();
        assert!(
            log.contains(&format!("CONNECT {target} "))
                && log.contains(&format!("Established connection to host \"{host}\"")),
            "tinyproxy tunnelled nothing to {target}:\n{log}"
        );
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
