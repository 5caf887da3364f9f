//! `thicket serve` as a user runs it: a real process on an ephemeral loopback port with a
//! temp data dir; buckets created, written and read over HTTP; bad input answered with a
//! JSON error; SIGTERM flushes and a restart finds everything.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_thicket"))
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start thicket");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            assert!(
                Instant::now() < deadline,
                "thicket did not report its address"
            );
            let line = lines
                .next()
                .expect("thicket exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.trim().to_string();
            }
        };
        Server { child, base }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        // SAFETY: signals only the child this test started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "thicket exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn buckets_over_http_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let s = Server::start(dir.path());

    // Phase 1: create a bucket and write records, one and many.
    let r = http
        .post(format!("{}/v1/users/acme/buckets", s.base))
        .body(
            r#"{"bucket":"env","name":"Environment","config":{"source":"api","tags":["device"]}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{}/v1/users/acme/buckets/env/data", s.base))
        .body(r#"[{"ts":3600000,"device":"a","t":20.5},{"ts":3660000,"device":"a","t":21.5},{"ts":3600000,"device":"b","t":10}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A record without ts gets the server's clock.
    let r = http
        .post(format!("{}/v1/users/acme/buckets/env/data", s.base))
        .body(r#"{"device":"c","t":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Phase 2: bad input is a 4xx with a JSON message naming the problem.
    let r = http
        .post(format!("{}/v1/users/acme/buckets/env/data", s.base))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let r = http
        .get(format!("{}/v1/users/acme/buckets/nope/data", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!(
            "{}/v1/users/acme/buckets/env/data?agg=1h&agg_type=nonsense",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agg_type"),
        "{body}"
    );

    // Phase 3: reads with parameters, raw and aggregated.
    let rows: serde_json::Value = http
        .get(format!(
            "{}/v1/users/acme/buckets/env/data?device=a&sort=asc",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"ts":3600000,"device":"a","t":20.5},{"ts":3660000,"device":"a","t":21.5}])
    );
    let rows: serde_json::Value = http
        .get(format!(
            "{}/v1/users/acme/buckets/env/data?agg=1h&agg_type=mean&group_by=device&max_ts=4000000",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"ts":3600000,"device":"a","t":21.0},{"ts":3600000,"device":"b","t":10.0}])
    );
    s.stop();

    // Phase 4: a restart on the same data dir serves the same data.
    let s = Server::start(dir.path());
    let rows: serde_json::Value = http
        .get(format!(
            "{}/v1/users/acme/buckets/env/data?items=10",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4, "{rows}");
    s.stop();
}
