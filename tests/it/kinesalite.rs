//! End to end against kinesalite, an independently written Kinesis server (installed under
//! target/peers by `scripts/peers`): create a stream, run the daemon, write lines into the
//! FIFO, stop the daemon, and read the lines back with GetRecords.

use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;

#[test]
fn lines_written_to_the_fifo_can_be_read_back_from_kinesalite() {
    let peer = Peer::kinesalite();
    let client = AwsClient::test_keys(&peer.url);
    client.create_stream("e2e");

    let dir = TempDir::new("kinesalite");
    let fifo = dir.join("in.pipe");
    let fifo_arg = fifo.to_str().unwrap();
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--fifo-name",
            fifo_arg,
            "--stream-name",
            "e2e",
            "--flush-interval",
            "200ms",
            "--debug",
        ],
        &aws_env(&peer.url),
    );
    wait_until(Duration::from_secs(30), "the FIFO", || fifo.exists());
    let mut lines: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("e2e line {i:05} {}", "x".repeat(i % 300)).into_bytes())
        .collect();
    lines.insert(10, b".flush".to_vec());
    lines.insert(20, b".stop".to_vec());
    lines.push(vec![0, 1, 2, 255, b'\t']);
    // Two writer sessions: the daemon reopens the FIFO in between.
    let (a, b) = lines.split_at(1000);
    write_lines_atomically(&mut open_writer(&fifo, Duration::from_secs(30)), a);
    write_lines_atomically(&mut open_writer(&fifo, Duration::from_secs(30)), b);
    daemon.wait_lines_read(lines.len() as u64, Duration::from_secs(60));
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.stderr());

    let got = client.read_all("e2e");
    assert_eq!(got.len(), lines.len());
    assert_eq!(
        got, lines,
        "kinesalite holds the lines in the order written"
    );
    let log = daemon.stderr();
    assert!(!log.contains(TEST_SECRET), "the secret leaked into the log");
    assert!(
        log.contains(&format!("records_sent={} ", lines.len())),
        "{log}"
    );
}
