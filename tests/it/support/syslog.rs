//! syslog-ng and rsyslog from Debian's packages (unpacked under target/peers by
//! `scripts/peers`), run in the foreground with their own configuration, pid file, control
//! socket and work directory in a test's temporary directory: no system logging is touched.
//! Each takes messages on a TCP port on 127.0.0.1 and writes them to a FIFO with the README's
//! recipe (the files under contrib/, with the FIFO's path put in).

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

/// Where the recipes name the FIFO.
pub const RECIPE_FIFO: &str = "/run/fifo2kinesis/fifo2kinesis.pipe";

fn root() -> PathBuf {
    let root = std::env::var_os("FIFO2KINESIS_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"))
        .join("syslog/root");
    assert!(
        root.join("usr/sbin/syslog-ng").exists() && root.join("usr/sbin/rsyslogd").exists(),
        "syslog-ng and rsyslog are not unpacked in {}: run scripts/peers (scripts/test does it)",
        root.display()
    );
    root
}

/// A recipe from contrib/, with the FIFO path of the test.
pub fn recipe(name: &str, fifo: &Path) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(RECIPE_FIFO),
        "{} names no FIFO",
        path.display()
    );
    text.replace(RECIPE_FIFO, fifo.to_str().unwrap())
}

/// A running syslog daemon; killed when dropped.
pub struct SyslogDaemon {
    child: Child,
    /// Its TCP input on 127.0.0.1.
    pub port: u16,
    log_path: PathBuf,
}

impl Drop for SyslogDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SyslogDaemon {
    /// syslog-ng with a TCP source named `s_src` and the syslog-ng recipe.
    pub fn syslog_ng(dir: &TempDir, fifo: &Path) -> SyslogDaemon {
        let root = root();
        let port = free_port();
        let work = dir.join("syslog-ng");
        fs::create_dir_all(&work).unwrap();
        let conf = work.join("syslog-ng.conf");
        fs::write(
            &conf,
            format!(
                "@version: 3.38\n\
                 source s_src {{ network(ip(\"127.0.0.1\") port({port}) transport(\"tcp\")); }};\n{}",
                recipe("syslog-ng/fifo2kinesis.conf", fifo)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(root.join("usr/sbin/syslog-ng"));
        cmd.arg("--foreground")
            .arg("--stderr")
            .arg(format!("--cfgfile={}", conf.display()))
            .arg(format!(
                "--module-path={}",
                root.join("usr/lib/syslog-ng/3.38").display()
            ))
            .arg(format!("--pidfile={}", work.join("pid").display()))
            .arg(format!("--persist-file={}", work.join("persist").display()))
            .arg(format!("--control={}", work.join("ctl").display()));
        SyslogDaemon::spawn(cmd, &root, port, work.join("stderr"))
    }

    /// rsyslog with an imtcp input and the rsyslog recipe.
    pub fn rsyslog(dir: &TempDir, fifo: &Path) -> SyslogDaemon {
        let root = root();
        let port = free_port();
        let work = dir.join("rsyslog");
        fs::create_dir_all(&work).unwrap();
        let conf = work.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n{}",
                work.display(),
                recipe("rsyslog/fifo2kinesis.conf", fifo)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(root.join("usr/sbin/rsyslogd"));
        cmd.arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(work.join("pid"))
            .arg("-M")
            .arg(root.join("usr/lib/x86_64-linux-gnu/rsyslog"));
        SyslogDaemon::spawn(cmd, &root, port, work.join("stderr"))
    }

    fn spawn(mut cmd: Command, root: &Path, port: u16, log_path: PathBuf) -> SyslogDaemon {
        let libs = [
            "usr/lib/syslog-ng",
            "usr/lib/x86_64-linux-gnu",
            "lib/x86_64-linux-gnu",
        ]
        .map(|l| root.join(l).display().to_string())
        .join(":");
        let log = File::create(&log_path).unwrap();
        let child = cmd
            .env("LD_LIBRARY_PATH", libs)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = SyslogDaemon {
            child,
            port,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the syslog daemon exited ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "the syslog daemon did not listen on {port}:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// How it holds `fifo` open: `O_RDONLY`, `O_WRONLY` or `O_RDWR` (from /proc), or `None`
    /// while it does not.
    pub fn fifo_mode(&self, fifo: &Path) -> Option<&'static str> {
        let pid = self.child.id();
        for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
            if fs::read_link(fd.path()).ok().as_deref() != Some(fifo) {
                continue;
            }
            let info =
                fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str()?))
                    .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            let flags = u32::from_str_radix(flags, 8).ok()?;
            return Some(match flags & 3 {
                0 => "O_RDONLY",
                1 => "O_WRONLY",
                _ => "O_RDWR",
            });
        }
        None
    }

    /// What it printed.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `messages` to the daemon listening on `port` over one TCP connection, one
    /// RFC 3164 line each, `per_ms` a millisecond (0: as fast as the socket takes them).
    pub fn send_to(port: u16, messages: &[String], per_ms: usize) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for (i, m) in messages.iter().enumerate() {
            writeln!(s, "<14>Nov 26 01:02:03 testhost app[42]: {m}").unwrap();
            if per_ms > 0 && i % per_ms == per_ms - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        s.flush().unwrap();
    }
}
