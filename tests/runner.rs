//! The runner protocol, exactly as the README shows it: the README's JavaScript block is
//! extracted and run with Node against a live mount. A runner declares its lane with
//! `<file>.lane`, takes a cursor from the size of `<file>.journal`, and asks what
//! changed: reads and its own appends are `nothing`, a foreign append is
//! `foreign-appends` (mergeable by entry id), a truncate is a `rewrite` (reload).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Node: the one the e2e set-up installs (`tests/e2e/setup.sh`), else `node` on PATH.
fn node() -> PathBuf {
    let cache = std::env::var_os("SESSIONFS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/sessionfs-tests")
        });
    let cached = cache.join("e2e/node/bin/node");
    if cached.exists() {
        return cached;
    }
    let found = Command::new("node").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "Node is needed: run `bash tests/e2e/setup.sh` (tests/run.sh does)"
    );
    PathBuf::from("node")
}

/// The README's runner-protocol code block.
fn readme_js() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### The runner protocol")
        .nth(1)
        .expect("README has a runner protocol section");
    let start = section.find("```js\n").expect("a js block") + "```js\n".len();
    let end = start + section[start..].find("\n```").unwrap();
    section[start..end].to_string()
}

/// Drives the README module from the test, one command per stdin line, one JSON
/// answer per stdout line.
const DRIVER: &str = r#"
const fs = require('fs');
const rp = require(process.argv[2]);
const file = process.argv[3];
rp.declareLane(file, 'main');
let c = rp.cursor(file);
console.log(JSON.stringify({ cursor: c, lane: fs.readFileSync(file + '.lane', 'utf8') }));
require('readline').createInterface({ input: process.stdin }).on('line', (cmd) => {
  if (cmd === 'own-append') {
    fs.appendFileSync(file, JSON.stringify({ type: 'message', id: 'own00001', message: { role: 'assistant' } }) + '\n');
    console.log('{}');
  } else if (cmd === 'check') {
    const r = rp.changesSince(file, c, 'main');
    c = r.next;
    console.log(JSON.stringify({ verdict: r.verdict, foreign: r.foreign.map((e) => e.id), n: r.records.length }));
  } else {
    process.exit(0);
  }
});
"#;

#[test]
fn readme_runner_protocol_runs_against_a_live_mount() {
    let m = common::Mount::new(&[]);
    let t = m.mnt.join("t.jsonl");
    std::fs::write(&t, b"{\"type\":\"session\",\"id\":\"s1\"}\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("runner.js");
    std::fs::write(&module, readme_js()).unwrap();
    let driver = dir.path().join("driver.js");
    std::fs::write(&driver, DRIVER).unwrap();
    let mut child = Command::new(node())
        .arg(&driver)
        .arg(&module)
        .arg(&t)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut read = || -> Value {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("driver said {l:?}: {e}"))
    };
    let hello = read();
    assert_eq!(
        hello["lane"], "main\n",
        "the lane file reads back the declaration"
    );
    assert!(hello["cursor"].as_u64().unwrap() > 0);
    let mut ask = |cmd: &str| -> Value {
        writeln!(stdin, "{cmd}").unwrap();
        read()
    };
    // Wait for the asynchronous RELEASE records, so each check sees whole changes.
    let settle = |n: usize| {
        assert!(common::wait_for(5, || {
            common::read_jsonl(&m.mnt.join("t.jsonl.journal"))
                .iter()
                .filter(|r| r["op"] == "release")
                .count()
                >= n
        }));
    };

    // A reader: nothing happened.
    assert_eq!(std::fs::read(&t).unwrap().len(), 29);
    settle(2);
    let r = ask("check");
    assert_eq!(r["verdict"], "nothing", "{r}");
    assert!(
        r["n"].as_u64().unwrap() >= 2,
        "the open and release were read: {r}"
    );

    // Its own append, in its own lane: nothing.
    ask("own-append");
    settle(3);
    assert_eq!(ask("check")["verdict"], "nothing");

    // Another process appends an entry: mergeable, by id.
    let py =
        "import sys; open(sys.argv[1], 'a').write('{\"type\":\"message\",\"id\":\"f0000001\"}\\n')";
    common::run_ok(Command::new("python3").args(["-c", py]).arg(&t));
    settle(4);
    let r = ask("check");
    assert_eq!(r["verdict"], "foreign-appends", "{r}");
    assert_eq!(r["foreign"], serde_json::json!(["f0000001"]));

    // A truncate: reload.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(10)
        .unwrap();
    settle(5);
    assert_eq!(ask("check")["verdict"], "rewrite");
    let _ = writeln!(stdin, "quit");
    assert!(child.wait().unwrap().success());
}

/// Found in review: declaring a lane before the transcript exists created a real
/// `<file>.lane` that shadowed the lane file for good. Now it fails ENOENT and
/// creates nothing; once the file exists the declaration works and is capped.
#[test]
fn lane_file_needs_its_transcript_and_a_sane_name() {
    let m = common::Mount::new(&[]);
    let lane = m.mnt.join("new.jsonl.lane");
    let e = std::fs::write(&lane, b"cron").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    assert!(!m.src.join("new.jsonl.lane").exists());
    std::fs::write(m.mnt.join("new.jsonl"), b"").unwrap();
    let e = std::fs::write(&lane, "x".repeat(300)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // Written in two pieces by one process: one declaration.
    let code = "import os,sys\nfd=os.open(sys.argv[1], os.O_WRONLY)\nos.write(fd,b'cr'); os.write(fd,b'on\\n')\nos.lseek(fd,0,0)\nos.close(fd)\nprint(open(sys.argv[1]).read().strip())";
    let out = common::run_ok(Command::new("python3").args(["-c", code]).arg(&lane));
    assert_eq!(out.trim(), "cron");
    assert!(!m.src.join("new.jsonl.lane").exists());
}
