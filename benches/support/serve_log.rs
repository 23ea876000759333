//! Where a `countersign serve --listen 127.0.0.1:0 --log-format json` child is listening,
//! read from its log, for the benchmarks that run the real server.

use std::io::{BufRead, BufReader};
use std::process::ChildStderr;

/// Reads the server's JSON log until the line that names its address (`addr`), then keeps
/// draining the log on a thread so the server never blocks on a full pipe; warnings and
/// errors are passed on to this process's stderr.
pub fn listening_addr(stderr: ChildStderr) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(a) = v["addr"].as_str()
        {
            break a.to_string();
        }
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if l.contains("\"ERROR\"") || l.contains("\"WARN\"") {
                eprintln!("server: {l}");
            }
        }
    });
    addr
}
