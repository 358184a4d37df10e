//! The real OpenClaw 2026.5.22 gateway, end to end, on a plain directory (the control)
//! and on a sessionfs overlay mount of `$HOME/.openclaw/agents/main/sessions`.
//!
//! Each run: a mock model on 127.0.0.1 with a 3 s delay (the window in which 5.22 has
//! released its session lock), `openclaw onboard`, the gateway, a WebSocket client that
//! calls both `sessions.list` and `chat.history` on a 50 ms tick (at most one call per
//! method in flight: see tests/e2e/ws_client.mjs), and 5 `openclaw agent` turns.
//! A second test runs the turns (without the WebSocket client) while a loop chmods the
//! transcript to the mode it already has every 10 ms: on the plain directory the ctime
//! it moves trips the gateway's session fence (`EmbeddedAttemptSessionTakeoverError`);
//! on the mount sessionfs answers those chmods itself (journal class `noop`) and every
//! turn replies.
//! A third (`explain_agrees_with_the_gateway_on_every_turn`, mount only) injects one
//! outside change into each of 12 turns at a seeded random moment (an append by
//! another process without the lock, a chmod to the other mode, or a 1 s burst of
//! them) and checks that `sessionfs explain` says a release window tripped exactly
//! when the gateway reported a takeover for that turn, and that `explain
//! --gateway-log` matches every takeover of the log to the change that caused it.
//! The mount side of the first test also checks `sessionfs locks` (nothing left), the
//! `lock-*` records (each lock acquired and released by the gateway's pid, none reaped
//! or stolen) and `explain` (no window tripped).
//! A fourth (`supervised_mount_keeps_the_gateway_going_across_an_upgrade_and_a_kill_mid_turn`)
//! mounts with `--supervise`, runs `sessionfs upgrade` 1 s into turn 2's model call and
//! `kill -9`s the daemon 1 s into turn 3's (the gateway holds the session lock and its
//! files open meanwhile): every turn replies, the log has no takeover, the mount is the
//! same (st_dev, supervisor), and the journal has no `external` record, no seq gap across
//! the upgrade, and every transcript line in exactly one record.
//! Recipe: shared/OPENCLAW-E2E.md. Set-up: `tests/e2e/setup.sh` (run by tests/run.sh).
//!
//! Skipped only when `SESSIONFS_SKIP_E2E=1` and `CI` is not `true`; otherwise a missing
//! install is a failure.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Mount;
use serde_json::Value;

const TURNS: usize = 5;
const MODEL_DELAY_S: &str = "3";

/// Where tests/e2e/setup.sh installed Node 24 and openclaw.
fn install_dir() -> PathBuf {
    let cache = std::env::var_os("SESSIONFS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/sessionfs-tests")
        });
    cache.join("e2e")
}

fn may_skip() -> bool {
    std::env::var("SESSIONFS_SKIP_E2E").as_deref() == Ok("1")
        && std::env::var("CI").as_deref() != Ok("true")
}

/// A child in its own process group; the whole group is killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), sig);
        }
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL. Returns the exit status.
    fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            self.signal_group(libc::SIGKILL);
            return Some(st);
        }
        self.signal_group(libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.signal_group(libc::SIGKILL);
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("e2e: {} did not stop in {grace:?}; SIGKILL", self.name);
        self.signal_group(libc::SIGKILL);
        self.child.wait().ok()
    }

    /// Wait for exit up to `limit`; on timeout kill the group and return `None`.
    fn wait_until(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if t.elapsed() > limit {
                self.signal_group(libc::SIGKILL);
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for exit up to `limit`; kill the group and panic on timeout.
    fn wait_for(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.wait_until(limit)
            .unwrap_or_else(|| panic!("e2e: {} still running after {limit:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A loopback port `p` with `p..p+4` free (the gateway also takes port+2 for the
/// browser sidecar). Taken below the ephemeral range (32768–60999 here), so the
/// outgoing connections and `bind(0)` listeners made before the gateway binds it
/// (mock model, onboarding, clients) cannot take one of these ports meanwhile.
fn free_port() -> u16 {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for _ in 0..500 {
        // xorshift: a different start per run, so parallel runs rarely collide.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let p = 20000 + (x % 12000) as u16;
        if (0..5).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no free loopback port range in 20000-32004");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn read_lossy(p: &Path) -> String {
    strip_ansi(&String::from_utf8_lossy(&fs::read(p).unwrap_or_default()))
}

/// Everything one run needs: paths, environment, the long-lived processes.
struct Env {
    dir: PathBuf,
    home: PathBuf,
    path_var: String,
    openclaw: PathBuf,
    modules: PathBuf,
    port: u16,
    token: String,
}

impl Env {
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", &self.home)
            .env("PATH", &self.path_var)
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .env_remove("OPENCLAW_GATEWAY_TOKEN")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    fn openclaw(&self, args: &[&str]) -> Command {
        let mut c = self.command(&self.openclaw);
        c.args(args);
        c
    }

    /// Run an openclaw CLI command to completion, output to `<dir>/<log>.{out,err}`.
    fn run(&self, log: &str, args: &[&str], limit: Duration) -> (String, String) {
        let out = self.dir.join(format!("{log}.out"));
        let err = self.dir.join(format!("{log}.err"));
        let mut c = self.openclaw(args);
        c.stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        let mut p = Proc::spawn("openclaw cli", &mut c);
        let st = p.wait_for(limit);
        let (o, e) = (read_lossy(&out), read_lossy(&err));
        assert!(st.success(), "openclaw {args:?} failed ({st}):\n{o}\n{e}");
        (o, e)
    }
}

/// What one run produced, for the comparison between plain and mount.
#[derive(Debug)]
struct Outcome {
    replies: Vec<String>,
    turn_ms: Vec<u128>,
    roles: Vec<String>,
    files: Vec<String>,
    ws_ok: u64,
}

/// The session transcript (`<id>.jsonl`, not a trajectory) in `sessions`.
fn transcript(sessions: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = fs::read_dir(sessions)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".jsonl") && !n.ends_with(".trajectory.jsonl")
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one transcript in {sessions:?}: {found:?}"
    );
    found.pop().unwrap()
}

/// Shape of a directory listing: names with the session id replaced, sorted.
fn shape(sessions: &Path, id: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sessions)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().replace(id, "<id>"))
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// A mock model and a ready gateway for one run, on a plain sessions directory or with
/// sessionfs mounted over it. Dropped (also on panic) in field order: the gateway is
/// killed, the mount unmounted, the mock model killed, the scratch folder removed.
struct Gateway {
    proc: Proc,
    log: PathBuf,
    mount: Option<Mount>,
    sessions: PathBuf,
    env: Env,
    _mock: Proc,
    _tmp: tempfile::TempDir,
}

/// Start the mock model, onboard and configure openclaw in a scratch `HOME`, mount
/// sessionfs over the sessions directory when `on_mount`, and start the gateway; returns
/// once the gateway logged `[gateway] ready`.
fn start_gateway(label: &str, on_mount: bool) -> Gateway {
    start_gateway_with(label, on_mount.then_some(&[][..]))
}

/// [`start_gateway`], mounting sessionfs with these extra `mount` arguments when
/// `mount_args` is `Some` (journal in `<scratch>/state`).
fn start_gateway_with(label: &str, mount_args: Option<&[&str]>) -> Gateway {
    let base = install_dir();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("sessionfs-e2e-{label}-"))
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let home = dir.join("home");
    let sessions = home.join(".openclaw/agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    let path_var = format!(
        "{}:{}",
        base.join("node/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = Env {
        dir: dir.clone(),
        home,
        path_var,
        openclaw: base.join("openclaw/node_modules/.bin/openclaw"),
        modules: base.join("openclaw/node_modules"),
        port: free_port(),
        token: format!("e2e-token-{}", std::process::id()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The mock model.
    let delay_file = dir.join("delay");
    fs::write(&delay_file, MODEL_DELAY_S).unwrap();
    let mock_out = dir.join("mock.out");
    let mut mc = Command::new("python3");
    mc.arg(manifest.join("tests/e2e/mock_model.py"))
        .arg("--delay-file")
        .arg(&delay_file)
        .arg("--max-seconds")
        .arg("900")
        .stdout(fs::File::create(&mock_out).unwrap())
        .stderr(Stdio::inherit());
    let mock = Proc::spawn("mock model", &mut mc);
    let t = Instant::now();
    let mock_port: u16 = loop {
        let s = read_lossy(&mock_out);
        if let Some(p) = s.lines().find_map(|l| l.strip_prefix("PORT ")) {
            break p.trim().parse().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "mock model did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Onboard and configure (HOME is this run's scratch folder).
    let port = env.port.to_string();
    let base_url = format!("http://127.0.0.1:{mock_port}/v1");
    let t0 = Instant::now();
    env.run(
        "onboard",
        &[
            "onboard",
            "--non-interactive",
            "--accept-risk",
            "--mode",
            "local",
            "--flow",
            "quickstart",
            "--auth-choice",
            "custom-api-key",
            "--custom-base-url",
            &base_url,
            "--custom-model-id",
            "mock-model",
            "--custom-api-key",
            "sk-mock",
            "--custom-provider-id",
            "mock",
            "--custom-compatibility",
            "openai",
            "--custom-text-input",
            "--secret-input-mode",
            "plaintext",
            "--gateway-port",
            &port,
            "--gateway-bind",
            "loopback",
            "--gateway-auth",
            "token",
            "--gateway-token",
            &env.token,
            "--no-install-daemon",
            "--skip-channels",
            "--skip-health",
            "--skip-hooks",
            "--skip-search",
            "--skip-skills",
            "--skip-ui",
            "--json",
        ],
        Duration::from_secs(180),
    );
    for (k, v) in [
        ("update.checkOnStart", "false"),
        ("discovery.mdns.mode", "off"),
        ("agents.defaults.heartbeat.every", "0m"),
    ] {
        env.run("config", &["config", "set", k, v], Duration::from_secs(120));
    }
    eprintln!("e2e[{label}]: onboard + config {:?}", t0.elapsed());

    // The mount goes over the sessions directory before the gateway starts.
    let state = dir.join("state");
    let mount = mount_args.map(|a| Mount::overlay(&sessions, &state, a));

    // The gateway.
    let gw_log = dir.join("gateway.log");
    let mut gc = env.openclaw(&[
        "gateway",
        "run",
        "--port",
        &port,
        "--bind",
        "loopback",
        "--verbose",
    ]);
    let log_file = fs::File::create(&gw_log).unwrap();
    gc.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let mut gateway = Proc::spawn("gateway", &mut gc);
    let t = Instant::now();
    loop {
        if read_lossy(&gw_log).contains("[gateway] ready") {
            break;
        }
        if let Ok(Some(st)) = gateway.child.try_wait() {
            panic!(
                "gateway exited ({st}) before ready:\n{}",
                read_lossy(&gw_log)
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "gateway not ready after 180 s:\n{}",
            read_lossy(&gw_log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("e2e[{label}]: gateway ready in {:?}", t.elapsed());
    Gateway {
        proc: gateway,
        log: gw_log,
        mount,
        sessions,
        env,
        _mock: mock,
        _tmp: tmp,
    }
}

/// One `openclaw agent` turn as it ended.
struct Turn {
    /// `None`: still running after 240 s (then killed).
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
    ms: u128,
    pid: u32,
}

/// Run turn `i` (message `e2e turn <i>`) through the gateway to its end, without
/// judging it; output in `<dir>/turn<i>.{out,err}`.
fn run_turn(env: &Env, i: usize) -> Turn {
    run_turn_with_tools(env, i, 0)
}

/// As [`run_turn`], asking the mock model for `tools` tool calls first (its
/// `[tools=N]`): an attempt of `tools + 1` model calls.
fn run_turn_with_tools(env: &Env, i: usize, tools: usize) -> Turn {
    let t = Instant::now();
    let msg = if tools > 0 {
        format!("e2e turn {i} [tools={tools}]")
    } else {
        format!("e2e turn {i}")
    };
    let out = env.dir.join(format!("turn{i}.out"));
    let err = env.dir.join(format!("turn{i}.err"));
    let mut c = env.openclaw(&["agent", "--agent", "main", "--message", &msg, "--json"]);
    c.stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let mut p = Proc::spawn("openclaw agent", &mut c);
    let pid = p.pid();
    let status = p.wait_until(Duration::from_secs(240));
    Turn {
        status,
        stdout: read_lossy(&out),
        stderr: read_lossy(&err),
        ms: t.elapsed().as_millis(),
        pid,
    }
}

/// The model's reply if turn `i` went through the gateway and replied: exit 0, no
/// takeover or embedded fallback, `{"status":"ok"}`, a `mock reply…` text, not aborted.
/// Otherwise why not.
fn turn_reply(i: usize, turn: &Turn) -> Result<String, String> {
    let (o, e) = (&turn.stdout, &turn.stderr);
    let Some(st) = turn.status else {
        return Err(format!(
            "e2e: openclaw agent still running after 240 s (turn {i}):\n{o}\n{e}"
        ));
    };
    if !st.success() {
        return Err(format!("turn {i} failed ({st}):\n{o}\n{e}"));
    }
    for bad in ["EmbeddedAttemptSessionTakeoverError", "EMBEDDED FALLBACK"] {
        if o.contains(bad) || e.contains(bad) {
            return Err(format!("turn {i}: {bad}:\n{o}\n{e}"));
        }
    }
    let v: Value = serde_json::from_str(o.trim())
        .map_err(|x| format!("turn {i}: stdout is not JSON ({x}):\n{o}\n{e}"))?;
    // Through the gateway: {"status":"ok","result":{"payloads":…,"meta":…}}.
    if v["status"] != "ok" {
        return Err(format!("turn {i} did not go through the gateway: {o}"));
    }
    let v = &v["result"];
    let text = v["payloads"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !text.starts_with("mock reply") {
        return Err(format!("turn {i}: no model reply: {o}"));
    }
    if v["meta"]["aborted"] != Value::Bool(false) {
        return Err(format!("turn {i} aborted: {o}"));
    }
    Ok(text)
}

fn run_scenario(label: &str, on_mount: bool) -> Outcome {
    let base = install_dir();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut gw = start_gateway(label, on_mount);
    let env = &gw.env;
    let dir = &env.dir;
    let sessions = gw.sessions.clone();
    let port = env.port.to_string();

    // Control-UI-style reads every 50 ms while the turns run.
    let stop_file = dir.join("ws.stop");
    let ws_out = dir.join("ws.out");
    let mut wc = env.command(&base.join("node/bin/node"));
    wc.arg(manifest.join("tests/e2e/ws_client.mjs"))
        .arg(&port)
        .arg(&env.token)
        .arg(&stop_file)
        .arg(&env.modules)
        .stdout(fs::File::create(&ws_out).unwrap())
        .stderr(Stdio::inherit());
    let mut ws = Proc::spawn("ws client", &mut wc);

    let mut replies = Vec::new();
    let mut turn_ms = Vec::new();
    let mut cli_pids = Vec::new();
    for i in 1..=TURNS {
        let t = Instant::now();
        let turn = run_turn(env, i);
        cli_pids.push(turn.pid);
        turn_ms.push(turn.ms);
        let text = turn_reply(i, &turn).unwrap_or_else(|m| panic!("{m}"));
        replies.push(text);
        eprintln!("e2e[{label}]: turn {i} replied in {:?}", t.elapsed());
    }

    fs::write(&stop_file, b"").unwrap();
    ws.wait_for(Duration::from_secs(30));
    let ws_summary: Value = serde_json::from_str(read_lossy(&ws_out).trim())
        .unwrap_or_else(|e| panic!("ws client summary: {e}: {}", read_lossy(&ws_out)));
    eprintln!("e2e[{label}]: ws client {ws_summary}");
    assert_eq!(ws_summary["connected"], Value::Bool(true), "{ws_summary}");
    assert_eq!(
        ws_summary["errors"], 0,
        "read-only calls failed: {ws_summary}"
    );
    // Both methods were called, answered, and never failed; nothing was left
    // unanswered at the stop.
    for method in ["sessions.list", "chat.history"] {
        let m = &ws_summary["methods"][method];
        let ok = m["ok"].as_u64().unwrap_or(0);
        assert!(ok >= 1, "no successful {method} call: {ws_summary}");
        assert_eq!(m["err"], 0, "{method} calls failed: {ws_summary}");
        assert_eq!(
            m["sent"].as_u64(),
            Some(ok),
            "{method}: calls sent but not answered: {ws_summary}"
        );
    }
    assert_eq!(
        ws_summary["inFlightAtStop"], 0,
        "calls unanswered 5 s after the stop: {ws_summary}"
    );
    let ws_ok = ws_summary["ok"].as_u64().unwrap_or(0);
    assert!(
        ws_ok >= 20,
        "too few read-only calls answered: {ws_summary}"
    );

    let gateway_pid = gw.proc.pid();
    gw.proc.stop(Duration::from_secs(20));
    let log = read_lossy(&gw.log);
    for bad in ["EmbeddedAttemptSessionTakeoverError", "lane task error"] {
        assert!(!log.contains(bad), "gateway log has {bad}:\n{log}");
    }

    // The transcript: 5 user and 5 assistant messages, alternating, in turn order.
    let tr = transcript(&sessions);
    let lines = common::read_jsonl(&tr);
    let mut roles = Vec::new();
    let mut user_texts = Vec::new();
    for l in &lines {
        if l["type"] == "message" {
            let role = l["message"]["role"].as_str().unwrap_or("?").to_string();
            if role == "user" {
                user_texts.push(l["message"]["content"].to_string());
            }
            roles.push(role);
        }
    }
    let want: Vec<String> = (0..TURNS)
        .flat_map(|_| ["user".to_string(), "assistant".to_string()])
        .collect();
    assert_eq!(roles, want, "transcript message order in {tr:?}");
    for (i, t) in user_texts.iter().enumerate() {
        assert!(
            t.contains(&format!("e2e turn {}", i + 1)),
            "user line {i}: {t}"
        );
    }
    let id = tr.file_stem().unwrap().to_string_lossy().to_string();
    let locks: Vec<String> = shape(&sessions, &id)
        .into_iter()
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(locks.is_empty(), "lock files left behind: {locks:?}");
    let files = shape(&sessions, &id);

    if let Some(m) = gw.mount.as_mut() {
        check_journal(&sessions, &tr, gateway_pid, &cli_pids, lines.len());
        m.unmount();
        assert!(!common::is_mounted(&sessions));
    }
    Outcome {
        replies,
        turn_ms,
        roles,
        files,
        ws_ok,
    }
}

/// Is the record's process the gateway or a child of it?
fn by_gateway(r: &Value, gateway_pid: u32) -> bool {
    let g = Value::from(gateway_pid);
    r["pid"] == g
        || r["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["pid"] == g))
}

/// The journal of the transcript, read through the mount's virtual files.
fn check_journal(sessions: &Path, tr: &Path, gateway_pid: u32, cli_pids: &[u32], n_lines: usize) {
    let name = tr.file_name().unwrap().to_string_lossy().to_string();
    let mut jf = tr.as_os_str().to_os_string();
    jf.push(".journal");
    let recs = common::read_jsonl(Path::new(&jf));
    let all = common::read_jsonl(&sessions.join(".journal"));
    eprintln!(
        "e2e[mount]: {} journal records for the transcript, {} for the directory",
        recs.len(),
        all.len()
    );
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(r["path"], Value::from(name.as_str()), "{r}");
    }

    // Every complete line of the transcript is an entry of exactly one record, in order,
    // and each user/assistant entry was written by the gateway.
    let mut entries = Vec::new();
    for r in &recs {
        if let Some(es) = r["entries"].as_array() {
            for e in es {
                entries.push((e.clone(), r.clone()));
            }
        }
        assert!(
            r["removed"].is_null(),
            "the gateway never removes lines: {r}"
        );
    }
    assert_eq!(
        entries.len(),
        n_lines,
        "one journal entry per transcript line"
    );
    for (i, (e, _)) in entries.iter().enumerate() {
        assert_eq!(e["line"], Value::from(i as u64 + 1), "entry order: {e}");
        assert!(
            e["unparsed"].is_null(),
            "the gateway writes valid JSON: {e}"
        );
    }
    let mut user = 0;
    let mut assistant = 0;
    for (e, r) in &entries {
        let role = e["role"].as_str().unwrap_or("");
        if role == "user" || role == "assistant" {
            // The gateway's own pid, as the issue asks (its Node process appends them).
            assert_eq!(
                r["pid"],
                Value::from(gateway_pid),
                "{role} entry not written by the gateway (pid {gateway_pid}): {r}"
            );
            let pid = r["pid"].as_u64().unwrap_or(0) as u32;
            assert!(!cli_pids.contains(&pid), "entry written by the CLI: {r}");
            if role == "user" {
                user += 1;
            } else {
                assistant += 1;
            }
        }
    }
    assert_eq!((user, assistant), (TURNS, TURNS), "user/assistant entries");

    // Nothing but opens, appends, syncs and releases touched the transcript; no stat
    // change came from outside the mount. `stat` records are the lock holder's stats
    // while it holds the session lock (the fence reads): read-only, by the gateway or
    // an `openclaw agent` CLI process when it holds the lock itself.
    for r in &recs {
        let op = r["op"].as_str().unwrap();
        assert!(
            matches!(
                op,
                "open" | "create" | "write" | "fsync" | "release" | "stat"
            ),
            "unexpected {op} on the transcript: {r}"
        );
        if op == "stat" {
            let by_cli = cli_pids.iter().any(|p| r["pid"] == *p);
            assert!(
                (by_gateway(r, gateway_pid) || by_cli)
                    && r["class"] == "read"
                    && r["lock_context"] == "held_by_writer",
                "a stat record not by the lock holder: {r}"
            );
        }
    }
    // The read-only calls (sessions.list, chat.history) show up only as read-only opens:
    // they are there, and none of them moved the file's fingerprint.
    let reads: Vec<&Value> = recs
        .iter()
        .filter(|r| r["op"] == "open" && r["access"] == "read")
        .collect();
    assert!(
        !reads.is_empty(),
        "no read-only opens of the transcript recorded"
    );
    for r in &reads {
        assert_eq!(r["result"], "ok", "{r}");
        assert!(r["entries"].is_null() && r["size_before"].is_null(), "{r}");
        let fl: Vec<&str> = r["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        assert!(
            !fl.iter()
                .any(|f| matches!(*f, "O_TRUNC" | "O_CREAT" | "O_APPEND")),
            "{r}"
        );
    }
    let writes = recs.iter().filter(|r| r["op"] == "write").count();
    eprintln!(
        "e2e[mount]: transcript: {} read-only opens, {writes} writes, {user} user + {assistant} assistant entries by gateway pid {gateway_pid}",
        reads.len()
    );

    // The session lock: created with O_EXCL and unlinked, by the gateway, every turn.
    let lock = format!("{name}.lock");
    let creates: Vec<&Value> = all
        .iter()
        .filter(|r| r["op"] == "create" && r["path"] == lock.as_str())
        .collect();
    let unlinks: Vec<&Value> = all
        .iter()
        .filter(|r| r["op"] == "unlink" && r["path"] == lock.as_str())
        .collect();
    assert!(creates.len() >= TURNS, "lock creates: {}", creates.len());
    assert_eq!(
        creates.len(),
        unlinks.len(),
        "every lock create has its unlink"
    );
    for r in creates.iter().chain(unlinks.iter()) {
        assert_eq!(r["result"], "ok", "{r}");
        assert!(
            by_gateway(r, gateway_pid),
            "lock op not by the gateway: {r}"
        );
    }
    for r in &creates {
        let fl = r["flags"].to_string();
        assert!(fl.contains("O_EXCL"), "lock create without O_EXCL: {r}");
    }
    let externals: Vec<&Value> = all.iter().filter(|r| r["op"] == "external").collect();
    assert!(
        externals.is_empty(),
        "changes from outside the mount were recorded: {externals:#?}\nprevious records of those paths: {:#?}",
        externals
            .iter()
            .filter_map(|e| all
                .iter()
                .rfind(|r| r["path"] == e["path"] && r["seq"].as_u64() < e["seq"].as_u64()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "e2e[mount]: lock {} creates / {} unlinks",
        creates.len(),
        unlinks.len()
    );
    check_locks_and_windows(sessions, tr, gateway_pid, &all);
}

/// Session locks and release windows after the turns (issue 10): `sessionfs locks`
/// lists no lock; every lock file the gateway created (any `*.lock`) has one
/// `lock-acquire` and one `lock-release`, both by the gateway's pid and naming it as
/// the holder; no `lock-reap` or `lock-steal`; `sessionfs explain` on the transcript
/// has a window per turn at least, and none tripped.
fn check_locks_and_windows(sessions: &Path, tr: &Path, gateway_pid: u32, all: &[Value]) {
    let listed = common::run_ok(
        Command::new(common::bin())
            .arg("locks")
            .arg(sessions)
            .arg("--json"),
    );
    assert!(
        listed.trim().is_empty(),
        "sessionfs locks lists locks after the turns:\n{listed}"
    );
    let bad: Vec<&Value> = all
        .iter()
        .filter(|r| r["op"] == "lock-reap" || r["op"] == "lock-steal")
        .collect();
    assert!(bad.is_empty(), "locks reaped or stolen: {bad:#?}");
    let gw = Value::from(gateway_pid);
    let lock_creates: Vec<&Value> = all
        .iter()
        .filter(|r| {
            r["op"] == "create"
                && r["result"] == "ok"
                && r["path"].as_str().is_some_and(|p| p.ends_with(".lock"))
        })
        .collect();
    let of_op = |op: &str| -> Vec<&Value> { all.iter().filter(|r| r["op"] == op).collect() };
    let (acquires, releases) = (of_op("lock-acquire"), of_op("lock-release"));
    let mut per_file: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in &lock_creates {
        let path = c["path"].as_str().unwrap();
        *per_file.entry(path).or_default() += 1;
        assert_eq!(c["pid"], gw, "lock file not created by the gateway: {c}");
        let mine = |r: &&&Value| r["lock"]["created_seq"] == c["seq"] && r["path"] == c["path"];
        let a: Vec<&&Value> = acquires.iter().filter(mine).collect();
        let r: Vec<&&Value> = releases.iter().filter(mine).collect();
        assert_eq!(a.len(), 1, "lock-acquire records of {c}: {a:#?}");
        assert_eq!(r.len(), 1, "lock-release records of {c}: {r:#?}");
        for x in [a[0], r[0]] {
            assert_eq!(x["pid"], gw, "lock record not by the gateway: {x}");
            assert_eq!(x["lock"]["holder"]["pid"], gw, "holder: {x}");
        }
        assert_eq!(r[0]["lock"]["holder_alive"], true, "{}", r[0]);
        assert!(
            a[0]["seq"].as_u64() < r[0]["seq"].as_u64(),
            "release before acquire: {} {}",
            a[0],
            r[0]
        );
    }
    assert_eq!(
        acquires.len(),
        lock_creates.len(),
        "lock-acquire records without a lock file create"
    );
    assert_eq!(
        releases.len(),
        lock_creates.len(),
        "lock-release records without a lock file create"
    );

    let out = common::run_ok(
        Command::new(common::bin())
            .arg("explain")
            .arg(tr)
            .arg("--json"),
    );
    let windows: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("explain --json ({e}): {l}")))
        .collect();
    let tripped: Vec<&Value> = windows.iter().filter(|w| w["tripped"] != false).collect();
    let attempts: std::collections::BTreeSet<String> =
        windows.iter().map(|w| w["attempt"].to_string()).collect();
    eprintln!(
        "e2e[mount]: locks: none listed; {} lock files created, each acquired and released by gateway pid {gateway_pid} ({per_file:?}), no reap or steal; explain: {} windows in {} attempts, {} tripped",
        lock_creates.len(),
        windows.len(),
        attempts.len(),
        tripped.len()
    );
    assert!(
        tripped.is_empty(),
        "explain says the fence tripped: {tripped:#?}"
    );
    assert!(
        attempts.len() >= TURNS,
        "explain found {} attempts for {TURNS} turns:\n{out}",
        attempts.len()
    );
    for w in &windows {
        assert_eq!(w["holder"]["pid"], gw, "window of another runner: {w}");
    }
}

/// Whether the e2e tests run: false (after saying so) when skipped; panics when the
/// install is missing and skipping is not allowed.
fn e2e_enabled() -> bool {
    let base = install_dir();
    if !base.join("openclaw/node_modules/.bin/openclaw").exists()
        || !base.join("node/bin/node").exists()
    {
        if may_skip() {
            eprintln!("e2e: skipped (SESSIONFS_SKIP_E2E=1); install with tests/e2e/setup.sh");
            return false;
        }
        panic!(
            "the OpenClaw gateway is not installed in {}: run `bash tests/e2e/setup.sh` \
             (or set SESSIONFS_SKIP_E2E=1 outside CI to skip)",
            base.display()
        );
    }
    if may_skip() {
        eprintln!("e2e: skipped (SESSIONFS_SKIP_E2E=1)");
        return false;
    }
    true
}

#[test]
fn real_gateway_plain_dir_and_mount() {
    if !e2e_enabled() {
        return;
    }
    let plain = run_scenario("plain", false);
    let mount = run_scenario("mount", true);
    eprintln!("e2e: plain {plain:?}");
    eprintln!("e2e: mount {mount:?}");
    assert_eq!(plain.roles, mount.roles);
    assert_eq!(plain.replies.len(), mount.replies.len());
    assert_eq!(plain.files, mount.files, "same session files on both");
    let med = |v: &[u128]| {
        let mut s = v.to_vec();
        s.sort();
        s[s.len() / 2]
    };
    eprintln!(
        "e2e: median turn {} ms plain, {} ms mount; read-only calls answered {} plain, {} mount",
        med(&plain.turn_ms),
        med(&mount.turn_ms),
        plain.ws_ok,
        mount.ws_ok
    );
}

/// How often the chmod loop re-applies the transcripts' modes.
const CHMOD_PERIOD: Duration = Duration::from_millis(10);

/// What a [`ChmodLoop`] did.
#[derive(Debug, Default)]
struct ChmodCounts {
    /// Passes over the directory.
    passes: u64,
    /// chmod calls that succeeded, in all and per file name.
    ok: u64,
    ok_by_name: std::collections::HashMap<String, u64>,
    /// chmod calls that failed (a file gone between the scan and the call).
    failed: u64,
}

/// A thread that, every [`CHMOD_PERIOD`] until stopped, chmods every `*.jsonl` in a
/// directory to the mode it already has (`mode & 0o7777` of a fresh stat): a chmod that
/// changes nothing, except (on ext4) the ctime that OpenClaw's fence compares. It keeps
/// scanning, so it finds the transcript the first turn creates. Stopped and joined on
/// drop too, so a panic leaves nothing running on the mount.
struct ChmodLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<ChmodCounts>>,
}

impl ChmodLoop {
    fn start(dir: &Path) -> ChmodLoop {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut c = ChmodCounts::default();
            while !flag.load(Ordering::Relaxed) {
                for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with('.') || !name.ends_with(".jsonl") {
                        continue;
                    }
                    let p = e.path();
                    let Ok(md) = fs::metadata(&p) else { continue };
                    let mode = md.permissions().mode() & 0o7777;
                    match fs::set_permissions(&p, fs::Permissions::from_mode(mode)) {
                        Ok(()) => {
                            c.ok += 1;
                            *c.ok_by_name.entry(name).or_default() += 1;
                        }
                        Err(_) => c.failed += 1,
                    }
                }
                c.passes += 1;
                std::thread::sleep(CHMOD_PERIOD);
            }
            c
        });
        ChmodLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the thread and return its counts.
    fn finish(mut self) -> ChmodCounts {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = self.thread.take().expect("chmod loop running");
        t.join().expect("chmod loop panicked")
    }
}

impl Drop for ChmodLoop {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// The journal's view of the chmod loop on the mount.
#[derive(Debug, Default)]
struct ChmodJournal {
    /// The transcript's chmod records with class `noop` / `metadata` / anything else.
    noop: usize,
    metadata: usize,
    other: usize,
    /// The transcript's chmod records that moved the fence or did not succeed.
    fence_moved: usize,
    not_ok: usize,
    /// chmod records made by this test's process (the loop), per path, and how many
    /// of them are not `noop`.
    ours: std::collections::HashMap<String, u64>,
    ours_not_noop: usize,
    /// chmod records made by other processes (the gateway), per "path class" (`.`:
    /// the sessions directory).
    others: std::collections::BTreeMap<String, u64>,
    /// `external` records (any file).
    externals: usize,
}

/// What one side of the chmod-loop test saw.
#[derive(Debug)]
struct ChmodSide {
    replied: usize,
    /// Why each turn that did not reply failed (the first two lines).
    failures: Vec<String>,
    turn_ms: Vec<u128>,
    /// Lines of the gateway log naming `EmbeddedAttemptSessionTakeoverError`, and
    /// `lane task error` lines.
    takeover_lines: usize,
    lane_errors: usize,
    chmods: ChmodCounts,
    /// Successful chmods of transcripts (`*.jsonl` but not `*.trajectory.jsonl`).
    transcript_chmods: u64,
    /// On the mount: the journal's view of the loop, and the transcript's message roles.
    journal: Option<ChmodJournal>,
    roles: Vec<String>,
}

/// Start the gateway (on the mount or not), run the turns with a [`ChmodLoop`] on
/// the sessions directory, and count replies, takeovers and (on the mount) the
/// journal's chmod records. Judges nothing: the caller compares the sides.
fn run_chmod_side(label: &str, on_mount: bool) -> ChmodSide {
    let mut gw = start_gateway(label, on_mount);
    let chmod = ChmodLoop::start(&gw.sessions);
    let mut replied = 0;
    let mut failures = Vec::new();
    let mut turn_ms = Vec::new();
    for i in 1..=TURNS {
        let turn = run_turn(&gw.env, i);
        turn_ms.push(turn.ms);
        match turn_reply(i, &turn) {
            Ok(_) => {
                replied += 1;
                eprintln!("e2e[{label}]: turn {i} replied in {} ms", turn.ms);
            }
            Err(why) => {
                eprintln!("e2e[{label}]: turn {i} failed in {} ms: {why}", turn.ms);
                let short: String = why
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(160)
                    .collect();
                failures.push(short);
            }
        }
    }
    let chmods = chmod.finish();
    gw.proc.stop(Duration::from_secs(20));
    let log = read_lossy(&gw.log);
    let takeover_lines = log
        .lines()
        .filter(|l| l.contains("EmbeddedAttemptSessionTakeoverError"))
        .count();
    let lane_errors = log
        .lines()
        .filter(|l| l.contains("lane task error"))
        .count();
    for l in log.lines().filter(|l| {
        l.contains("EmbeddedAttemptSessionTakeoverError") || l.contains("lane task error")
    }) {
        eprintln!(
            "e2e[{label}]: gateway: {}",
            l.chars().take(300).collect::<String>()
        );
    }

    let mut side = ChmodSide {
        replied,
        failures,
        turn_ms,
        takeover_lines,
        lane_errors,
        transcript_chmods: chmods
            .ok_by_name
            .iter()
            .filter(|(n, _)| !n.ends_with(".trajectory.jsonl"))
            .map(|(_, c)| c)
            .sum(),
        chmods,
        journal: None,
        roles: Vec::new(),
    };
    if let Some(m) = gw.mount.as_mut() {
        let tr = transcript(&gw.sessions);
        let name = tr.file_name().unwrap().to_string_lossy().to_string();
        side.roles = common::read_jsonl(&tr)
            .iter()
            .filter(|l| l["type"] == "message")
            .map(|l| l["message"]["role"].as_str().unwrap_or("?").to_string())
            .collect();
        let all = common::read_jsonl(&gw.sessions.join(".journal"));
        let mut j = ChmodJournal::default();
        for r in &all {
            if r["op"] == "external" {
                j.externals += 1;
            }
            if r["op"] != "chmod" {
                continue;
            }
            let path = r["path"].as_str().unwrap_or("?").to_string();
            let class = r["class"].as_str().unwrap_or("?");
            if r["pid"] == std::process::id() {
                *j.ours.entry(path.clone()).or_default() += 1;
                if class != "noop" {
                    j.ours_not_noop += 1;
                }
            } else {
                let shown = if path.is_empty() { "." } else { &path };
                *j.others.entry(format!("{shown} {class}")).or_default() += 1;
            }
            if path == name {
                if r["result"] != "ok" {
                    j.not_ok += 1;
                }
                if r["fence_moved"] != Value::Bool(false) {
                    j.fence_moved += 1;
                }
                match r["class"].as_str() {
                    Some("noop") => j.noop += 1,
                    Some("metadata") => j.metadata += 1,
                    _ => j.other += 1,
                }
            }
        }
        side.journal = Some(j);
        m.unmount();
        assert!(!common::is_mounted(&gw.sessions));
    }
    side
}

/// A loop that re-applies the transcript's own mode every 10 ms while 5 turns run:
/// on a plain directory each chmod moves the ctime, so the fence that 5.22 checks when
/// it takes its session lock back after the model call sees a change and the turn dies
/// with `EmbeddedAttemptSessionTakeoverError` (the control: it must break something).
/// On the mount sessionfs answers each chmod itself (class `noop`, backing untouched):
/// every turn replies and the log has no takeover.
#[test]
fn same_mode_chmod_loop_kills_turns_on_plain_but_not_on_the_mount() {
    if !e2e_enabled() {
        return;
    }
    let t = Instant::now();
    let plain = run_chmod_side("chmod-plain", false);
    let mount = run_chmod_side("chmod-mount", true);
    for (label, s) in [("plain", &plain), ("mount", &mount)] {
        eprintln!(
            "e2e-chmod[{label}]: {}/{TURNS} turns replied, {} takeover lines, {} chmods issued \
             ({} failed, {} of the transcript), noop records {}",
            s.replied,
            s.takeover_lines,
            s.chmods.ok + s.chmods.failed,
            s.chmods.failed,
            s.transcript_chmods,
            s.journal.as_ref().map_or("-".to_string(), |j| format!(
                "{} of the transcript, {} of the loop's {} in all",
                j.noop,
                j.ours.values().sum::<u64>() - j.ours_not_noop as u64,
                j.ours.values().sum::<u64>()
            )),
        );
    }
    for (label, s) in [("plain", &plain), ("mount", &mount)] {
        eprintln!(
            "e2e-chmod[{label}]: turn times {:?} ms, failures {:?}",
            s.turn_ms, s.failures
        );
    }
    if let Some(j) = &mount.journal {
        eprintln!(
            "e2e-chmod[mount]: chmod records by the gateway: {:?}",
            j.others
        );
    }
    eprintln!("e2e-chmod: both sides in {:?}", t.elapsed());

    // The control: the loop ran on the transcript and broke at least one turn.
    assert!(
        plain.transcript_chmods > 0,
        "the chmod loop never reached a transcript on the plain directory: {plain:?}"
    );
    assert!(
        plain.replied < TURNS || plain.takeover_lines > 0,
        "the control saw no takeover and no failed turn: the loop proves nothing: {plain:?}"
    );

    // The mount: every turn replied, no takeover, no lane error, a whole transcript.
    assert_eq!(mount.replied, TURNS, "turns failed on the mount: {mount:?}");
    assert_eq!(mount.takeover_lines, 0, "takeover on the mount: {mount:?}");
    assert_eq!(
        mount.lane_errors, 0,
        "lane task error on the mount: {mount:?}"
    );
    let want: Vec<String> = (0..TURNS)
        .flat_map(|_| ["user".to_string(), "assistant".to_string()])
        .collect();
    assert_eq!(mount.roles, want, "transcript message order on the mount");
    // The journal: each of the loop's chmods of the transcript is one `noop` record,
    // none forwarded (`metadata`), none moved the fence; nothing from outside.
    let j = mount.journal.as_ref().unwrap();
    assert!(
        mount.transcript_chmods > 0,
        "no chmod reached the transcript: {mount:?}"
    );
    assert_eq!(
        j.noop as u64, mount.transcript_chmods,
        "one noop record per chmod of the transcript: {mount:?}"
    );
    assert_eq!(
        j.metadata, 0,
        "a chmod of the transcript was forwarded: {mount:?}"
    );
    assert_eq!(j.other, 0, "chmod records of another class: {mount:?}");
    assert_eq!(
        j.ours, mount.chmods.ok_by_name,
        "one record per chmod of the loop, per file: {mount:?}"
    );
    assert_eq!(
        j.ours_not_noop, 0,
        "a chmod of the loop was forwarded: {mount:?}"
    );
    assert_eq!(j.fence_moved, 0, "a chmod moved the fence: {mount:?}");
    assert_eq!(j.not_ok, 0, "a chmod failed: {mount:?}");
    assert_eq!(j.externals, 0, "external records on the mount: {mount:?}");
}

// ---------------------------------------------------------------------------
// `sessionfs explain` against the real gateway's fence
// ---------------------------------------------------------------------------

/// Turns of the agreement test, each with one outside change (after a warm-up turn
/// that creates the transcript: pi writes a new file only at its first assistant
/// message, so turn 0 has nothing to inject into).
const AGREE_TURNS: usize = 15;
/// The deterministic absorbed append: this long after the turn's user entry was
/// written, i.e. about 1 s into the 3 s model call, while the gateway holds the lock.
const ABSORBED_APPEND_MS: u64 = 1000;
/// A burst: a chmod to the other mode every 10 ms for this long.
const BURST: Duration = Duration::from_secs(1);

/// ns since the Unix epoch, now.
fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// A journal `ts` (`2026-11-22T14:40:30.123456789Z`, RFC 3339 UTC) in ns since the
/// epoch.
fn ts_ns(ts: &str) -> Option<i128> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !ts.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = ts[19..ts.len() - 1].strip_prefix('.').unwrap_or("");
    let mut ns: i128 = 0;
    for c in frac.chars().chain(std::iter::repeat('0')).take(9) {
        ns = ns * 10 + c.to_digit(10)? as i128;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as i128 * 1_000_000_000 + ns)
}

/// xorshift64: the injection schedule. Seeded from the clock (or
/// `SESSIONFS_E2E_SEED`), printed, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What is done to the transcript during one turn, by whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InjectKind {
    /// Another process (python3) appends one custom entry without taking the lock.
    Append,
    /// This process chmods the transcript once, to the other mode (0600 ⇄ 0640).
    Chmod,
    /// This process chmods the transcript to the other mode every 10 ms for 1 s.
    Burst,
}

impl InjectKind {
    fn name(self) -> &'static str {
        match self {
            InjectKind::Append => "append",
            InjectKind::Chmod => "chmod",
            InjectKind::Burst => "burst",
        }
    }
}

/// When: `offset_ms` after the gateway wrote the turn's user entry (seen in the
/// journal), which is where its attempt takes, releases and re-takes the lock.
#[derive(Clone, Copy, Debug)]
struct InjectPlan {
    kind: InjectKind,
    offset_ms: u64,
    /// Tool calls the model makes first (0: an attempt of one model call).
    tools: usize,
}

/// What an injector did.
#[derive(Debug, Default)]
struct Injected {
    /// When the turn's user entry was written (its record's `ts`), ns since the epoch.
    anchor_ns: Option<i128>,
    /// When the first and last change were made, ns since the epoch.
    first_ns: Option<i128>,
    last_ns: Option<i128>,
    /// The process that made the changes (python3 for an append, else this process).
    pid: Option<u32>,
    /// chmods made (and failed), appends made.
    chmods: usize,
    chmod_errors: usize,
    appended: bool,
    /// The appended entry's id.
    entry_id: Option<String>,
    note: Option<String>,
}

/// New complete lines of a growing journal file (the mount's `.journal`, attr TTL 0
/// and direct I/O), from a byte offset.
struct JournalTail {
    file: fs::File,
    buf: Vec<u8>,
}

impl JournalTail {
    fn open(path: &Path, from: u64) -> JournalTail {
        use std::io::Seek;
        let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        file.seek(std::io::SeekFrom::Start(from)).unwrap();
        JournalTail {
            file,
            buf: Vec::new(),
        }
    }

    fn poll(&mut self) -> Vec<Value> {
        use std::io::Read;
        let mut chunk = Vec::new();
        let _ = self.file.read_to_end(&mut chunk);
        self.buf.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if let Ok(v) = serde_json::from_slice(&line[..line.len() - 1]) {
                out.push(v);
            }
        }
        out
    }
}

/// chmod `p` to the mode it does not have of 0600 and 0640.
fn toggle_mode(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(p)?.permissions().mode() & 0o7777;
    let to = if mode == 0o600 { 0o640 } else { 0o600 };
    fs::set_permissions(p, fs::Permissions::from_mode(to))
}

/// The injector of one turn (run on its own thread while the turn runs): waits for
/// the record of the turn's user entry in the mount's journal (from byte `from`), then
/// `plan.offset_ms` after that entry's `ts` makes its change. Gives up when
/// `turn_over` is set and no user entry came within 1 s after.
fn inject(
    journal: PathBuf,
    from: u64,
    tr: PathBuf,
    n: usize,
    plan: InjectPlan,
    turn_over: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Injected {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let name = tr.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Injected::default();
    // The appending process is started now, so only its write happens at the moment.
    let id = format!("inj{n}");
    let mut writer = (plan.kind == InjectKind::Append).then(|| {
        let line = format!(r#"{{"type":"custom","id":"{id}","customType":"injected"}}"#);
        let script = "import os, sys\n\
             if sys.stdin.readline().strip() == 'go':\n\
             \x20   fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n\
             \x20   os.write(fd, sys.argv[2].encode() + b'\\n')\n\
             \x20   os.close(fd)\n\
             \x20   print('appended', flush=True)\n";
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(script)
            .arg(&tr)
            .arg(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::spawn("appender", &mut c)
    });
    let mut tail = JournalTail::open(&journal, from);
    let mut over_since: Option<Instant> = None;
    let anchor = loop {
        let user = tail.poll().into_iter().find(|r| {
            r["path"] == name.as_str()
                && r["op"] == "write"
                && r["entries"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["role"] == "user"))
        });
        if let Some(r) = user {
            break ts_ns(r["ts"].as_str().unwrap_or("")).unwrap_or_else(now_ns);
        }
        if turn_over.load(Ordering::Relaxed) {
            let t = *over_since.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(1) {
                out.note = Some("no user entry written: nothing injected".into());
                return out;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    out.anchor_ns = Some(anchor);
    let at = anchor + plan.offset_ms as i128 * 1_000_000;
    let wait = at - now_ns();
    if wait > 0 {
        std::thread::sleep(Duration::from_nanos(wait as u64));
    } else {
        out.note = Some(format!("injected {} ms late", -wait / 1_000_000));
    }
    match plan.kind {
        InjectKind::Append => {
            let p = writer.as_mut().unwrap();
            out.pid = Some(p.pid());
            out.entry_id = Some(id);
            out.first_ns = Some(now_ns());
            let mut stdin = p.child.stdin.take().unwrap();
            stdin.write_all(b"go\n").unwrap();
            drop(stdin);
            let st = p.wait_for(Duration::from_secs(30));
            out.last_ns = Some(now_ns());
            let mut said = String::new();
            use std::io::Read;
            let _ = p.child.stdout.take().unwrap().read_to_string(&mut said);
            let mut err = String::new();
            let _ = p.child.stderr.take().unwrap().read_to_string(&mut err);
            out.appended = st.success() && said.contains("appended");
            if !out.appended {
                out.note = Some(format!("append failed ({st}): {said} {err}"));
            }
        }
        InjectKind::Chmod | InjectKind::Burst => {
            out.pid = Some(std::process::id());
            let t = Instant::now();
            loop {
                let at = now_ns();
                match toggle_mode(&tr) {
                    Ok(()) => out.chmods += 1,
                    Err(_) => out.chmod_errors += 1,
                }
                out.first_ns.get_or_insert(at);
                out.last_ns = Some(now_ns());
                if plan.kind == InjectKind::Chmod || t.elapsed() >= BURST {
                    break;
                }
                std::thread::sleep(CHMOD_PERIOD);
            }
        }
    }
    out
}

/// One turn of the agreement test, as it ended.
struct AgreeTurn {
    n: usize,
    plan: Option<InjectPlan>,
    /// The turn's span (ns since the epoch): from its start to the next turn's start.
    start_ns: i128,
    end_ns: i128,
    /// How long after the turn's start the (first) change was made.
    delay_ms: Option<i128>,
    ms: u128,
    replied: bool,
    why: Option<String>,
    /// The CLI's output names the takeover error / new takeover lines in the gateway
    /// log during the turn.
    cli_takeover: bool,
    log_takeovers: usize,
    injected: Injected,
}

impl AgreeTurn {
    fn gateway_takeover(&self) -> bool {
        self.cli_takeover || self.log_takeovers > 0
    }
}

fn takeover_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("EmbeddedAttemptSessionTakeoverError"))
        .count()
}

/// `sessionfs explain <args>` to its end; its stdout, panics on failure.
fn sessionfs_explain(args: &[&std::ffi::OsStr]) -> String {
    common::run_ok(Command::new(common::bin()).arg("explain").args(args))
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The change of window `w` with `seq`.
fn change_of(w: &Value, seq: &Value) -> Option<Value> {
    w["changes"]
        .as_array()?
        .iter()
        .find(|c| c["seq"] == *seq)
        .cloned()
}

fn short_ts(ts: &Value) -> String {
    let s = ts.as_str().unwrap_or("-");
    s.get(11..23).unwrap_or(s).to_string()
}

/// One window, one line.
fn window_line(w: &Value) -> String {
    format!(
        "attempt {} window {} holder {} released #{} {} reacquired #{} {} tripped {} outcome {} first_trip {} cleanup {} ({}) changes {}",
        w["attempt"],
        w["window"],
        w["holder"]["pid"],
        w["released"]["seq"],
        short_ts(&w["released"]["ts"]),
        w["reacquired"]["seq"],
        short_ts(&w["reacquired"]["ts"]),
        w["tripped"],
        w["outcome"],
        w["first_trip"],
        w["cleanup"],
        w["reason"].as_str().unwrap_or(""),
        w["changes"].as_array().map_or(0, Vec::len),
    )
}

/// One journal record, one line (for a disagreement).
fn record_line(r: &Value) -> String {
    format!(
        "#{} {} {:<12} pid {:<7} {:<8} class {:<8} fence_moved {:<5} lock {} {}",
        r["seq"],
        short_ts(&r["ts"]),
        r["op"].as_str().unwrap_or("?"),
        r["pid"],
        r["comm"].as_str().unwrap_or(""),
        r["class"].as_str().unwrap_or("-"),
        r["fence_moved"],
        r["lock_context"].as_str().unwrap_or("-"),
        r["path"].as_str().unwrap_or(""),
    )
}

/// ≥ 10 real turns on the mount, each with one outside change at a random moment: an
/// append by another process without the lock, a chmod to the other mode, or a 1 s
/// burst of such chmods; three of the turns make a tool call first (an attempt of two
/// model calls), their single change aimed at the tool call. Afterwards `sessionfs
/// explain --json` must say, for every turn, that a window tripped (and was not
/// swallowed at cleanup) exactly when the gateway reported a takeover for it; and
/// `explain --gateway-log` must match every takeover line of the gateway log to the
/// change that caused it. Turn 1 holds the issue's absorbed append: 1 s into the model
/// call, while the gateway holds the lock, another process appends an entry: the turn
/// replies, and explain lists the change (writer's pid, entry id, `held_by_other`,
/// `absorbed: true`) in a window that did not trip. `SESSIONFS_E2E_AGREE_POLL=1` runs
/// it under the Control-UI-style poller.
///
/// Its disagreements so far, each fixed with a unit test: the attempt's first hold taken
/// from the queued `session.started` write (now: the hold with the runner's user
/// message); the fence after `releaseForPrompt` taken at its second stat (now: the
/// first); a holder's stat journaled after a racing chmod it had not seen (now: under
/// the inode's order lock); a write handle's late RELEASE making the fence stat look
/// like an fstat (now: only read handles count); the guarded file's attributes dropped
/// after the lock's CREATE was answered (now: before); the kernel's permission-check
/// GETATTR before an open taken for the snapshot stat (now: left out), and then a hold
/// without a write judged as if it ended in `releaseForPrompt` (now: its last stat);
/// checks inside the model-call hold during a tool call (now: found, with the fence
/// read before each). A failed run keeps its journal, the gateway log and the session
/// files in `/tmp/sessionfs-agree-fail-<seed>/`.
#[test]
fn explain_agrees_with_the_gateway_on_every_turn() {
    if !e2e_enabled() {
        return;
    }
    let t_all = Instant::now();
    let seed = std::env::var("SESSIONFS_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (now_ns() as u64) ^ ((std::process::id() as u64) << 32))
        | 1;
    eprintln!("e2e-agree: seed {seed} (replay with SESSIONFS_E2E_SEED={seed})");
    let mut rng = Rng(seed);
    // Turn 1: the deterministic absorbed append; then 4 appends, 4 chmods and 4
    // bursts in all, shuffled.
    // Three of them with a tool call (an attempt of two model calls).
    let mut kinds: Vec<(InjectKind, usize)> = [InjectKind::Append; 3]
        .into_iter()
        .chain([InjectKind::Chmod; 4])
        .chain([InjectKind::Burst; 4])
        .map(|k| (k, 0))
        .chain([
            (InjectKind::Append, 1),
            (InjectKind::Chmod, 1),
            (InjectKind::Burst, 1),
        ])
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut plans = vec![InjectPlan {
        kind: InjectKind::Append,
        offset_ms: ABSORBED_APPEND_MS,
        tools: 0,
    }];
    for (k, tools) in kinds {
        // Measured: the attempt's gaps between its lock holds are ~10 ms right after
        // the user entry (releaseForPrompt), and 3 of 1-5 ms about 3.05 s after it,
        // at the end of the model call (reacquireAfterPrompt, a locked write, the
        // cleanup). A single change up to 3.6 s after the user entry mostly lands in
        // a hold (absorbed); a burst starts 2.0-3.1 s after it, so its 1 s of chmods
        // mostly spans the end of the model call, where a chmod every 10 ms often
        // lands in one of the short gaps.
        // A tool turn: the first model call's 3 s, then the tool call (measured
        // about 2.1 s: the assistant's tool call is written 3.05 s after the user
        // entry, and the check inside the hold before the tool result is written
        // 5.1 s after it), then the second model call's 3 s. A single change 3.1-5.1
        // s in lands in the tool call, mostly (the gateway trips at that check); a
        // burst starts 2.0-6.0 s in.
        let offset_ms = match (k, tools) {
            (InjectKind::Burst, 0) => 2000 + rng.below(1100),
            (_, 0) => rng.below(3600),
            (InjectKind::Burst, _) => 2000 + rng.below(4000),
            _ => 3100 + rng.below(2000),
        };
        plans.push(InjectPlan {
            kind: k,
            offset_ms,
            tools,
        });
    }
    assert_eq!(plans.len(), AGREE_TURNS);

    let mut gw = start_gateway("agree", true);
    let gateway_pid = gw.proc.pid();
    let journal = gw.sessions.join(".journal");
    // SESSIONFS_E2E_AGREE_POLL=1: a Control-UI-style poller (chat.history and
    // sessions.list every 50 ms) runs through the turns, so the gateway reads the
    // transcript while it holds the lock.
    let poll = std::env::var("SESSIONFS_E2E_AGREE_POLL").is_ok_and(|v| v == "1");
    let poll_stop = gw.env.dir.join("ws.stop");
    let mut poller = poll.then(|| {
        let base = install_dir();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut wc = gw.env.command(&base.join("node/bin/node"));
        wc.arg(manifest.join("tests/e2e/ws_client.mjs"))
            .arg(gw.env.port.to_string())
            .arg(&gw.env.token)
            .arg(&poll_stop)
            .arg(&gw.env.modules)
            .stdout(fs::File::create(gw.env.dir.join("ws.out")).unwrap())
            .stderr(Stdio::inherit());
        Proc::spawn("ws client", &mut wc)
    });

    // Turn 0 creates the transcript.
    let warm = run_turn(&gw.env, 0);
    turn_reply(0, &warm).unwrap_or_else(|m| panic!("warm-up turn: {m}"));
    let tr = transcript(&gw.sessions);
    eprintln!("e2e-agree: warm-up turn replied in {} ms", warm.ms);
    std::thread::sleep(Duration::from_millis(500));

    let mut turns: Vec<AgreeTurn> = Vec::new();
    for (k, plan) in plans.iter().enumerate() {
        let n = k + 1;
        let from = fs::metadata(&journal).unwrap().len();
        let log_before = takeover_lines(&read_lossy(&gw.log));
        let start_ns = now_ns();
        let turn_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let injector = {
            let (journal, tr, plan, over) = (journal.clone(), tr.clone(), *plan, turn_over.clone());
            std::thread::spawn(move || inject(journal, from, tr, n, plan, over))
        };
        let turn = run_turn_with_tools(&gw.env, n, plan.tools);
        turn_over.store(true, std::sync::atomic::Ordering::Relaxed);
        let injected = injector.join().expect("injector panicked");
        // Let the attempt's cleanup and the log catch up before the next turn.
        std::thread::sleep(Duration::from_millis(700));
        let reply = turn_reply(n, &turn);
        let log_after = takeover_lines(&read_lossy(&gw.log));
        let t = AgreeTurn {
            n,
            plan: Some(*plan),
            start_ns,
            end_ns: now_ns(),
            delay_ms: injected.first_ns.map(|f| (f - start_ns) / 1_000_000),
            ms: turn.ms,
            replied: reply.is_ok(),
            why: reply.err().map(|w| {
                w.lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(200)
                    .collect()
            }),
            cli_takeover: format!("{}{}", turn.stdout, turn.stderr)
                .contains("EmbeddedAttemptSessionTakeoverError"),
            log_takeovers: log_after.saturating_sub(log_before),
            injected,
        };
        eprintln!(
            "e2e-agree: turn {n} {}{} +{} ms: {} in {} ms, gateway takeover {} ({} log lines){}{}",
            plan.kind.name(),
            if plan.tools > 0 { "+tool" } else { "" },
            plan.offset_ms,
            if t.replied { "replied" } else { "failed" },
            t.ms,
            if t.gateway_takeover() { "yes" } else { "no" },
            t.log_takeovers,
            t.injected
                .note
                .as_ref()
                .map_or(String::new(), |s| format!(", {s}")),
            t.why.as_ref().map_or(String::new(), |s| format!(": {s}")),
        );
        turns.push(t);
    }
    if let Some(p) = poller.as_mut() {
        fs::write(&poll_stop, b"").unwrap();
        p.wait_for(Duration::from_secs(30));
        eprintln!(
            "e2e-agree: poller {}",
            read_lossy(&gw.env.dir.join("ws.out")).trim()
        );
    }
    gw.proc.stop(Duration::from_secs(20));
    let log = read_lossy(&gw.log);
    for l in log
        .lines()
        .filter(|l| l.contains("EmbeddedAttemptSessionTakeoverError"))
    {
        eprintln!(
            "e2e-agree: gateway: {}",
            l.chars().take(300).collect::<String>()
        );
    }

    // explain, while the mount is up (it reads the journal's virtual files).
    let windows = json_lines(&sessionfs_explain(&[tr.as_os_str(), "--json".as_ref()]));
    let log_path = gw.log.clone();
    let by_log = json_lines(&sessionfs_explain(&[
        "--gateway-log".as_ref(),
        log_path.as_os_str(),
        tr.as_os_str(),
        "--json".as_ref(),
    ]));
    let records = common::read_jsonl(&journal);
    let name = tr.file_name().unwrap().to_string_lossy().to_string();
    let lock = format!("{name}.lock");
    let m = gw.mount.as_mut().unwrap();
    m.unmount();
    assert!(!common::is_mounted(&gw.sessions));
    for w in &windows {
        assert_eq!(
            w["file"].as_str().map(|f| f.ends_with(&name)),
            Some(true),
            "{w}"
        );
    }

    // Windows to turns: by their release time within the turn's span.
    let in_turn = |t: &AgreeTurn, w: &Value| {
        ts_ns(w["released"]["ts"].as_str().unwrap_or(""))
            .is_some_and(|r| r >= t.start_ns && r < t.end_ns)
    };
    let mut agree = 0;
    let mut disagreements = Vec::new();
    let mut swallowed_turns = 0;
    eprintln!(
        "e2e-agree: turn kind    tools offset delay  replied gateway explain  windows first_trip"
    );
    for t in &turns {
        let ws: Vec<&Value> = windows.iter().filter(|w| in_turn(t, w)).collect();
        let tripped: Vec<&&Value> = ws.iter().filter(|w| w["tripped"] == true).collect();
        let takeover = tripped.iter().any(|w| w["outcome"] != "swallowed");
        let swallowed = tripped.iter().any(|w| w["outcome"] == "swallowed");
        if swallowed {
            swallowed_turns += 1;
        }
        let first = tripped
            .first()
            .map(|w| match change_of(w, &w["first_trip"]) {
                Some(c) => format!(
                    "#{} {} pid {}{}",
                    c["seq"],
                    c["op"].as_str().unwrap_or("?"),
                    c["pid"],
                    if c["pid"] == gateway_pid {
                        " (gateway)"
                    } else {
                        ""
                    }
                ),
                None => format!("#{} (not among the window's changes)", w["first_trip"]),
            })
            .unwrap_or_else(|| "-".into());
        let plan = t.plan.unwrap();
        eprintln!(
            "e2e-agree: {:>4} {:<7} {:>5} {:>6} {:>6} {:<7} {:<7} {:<8} {:>7} {first}",
            t.n,
            plan.kind.name(),
            plan.tools,
            plan.offset_ms,
            t.delay_ms.map_or("-".into(), |d| d.to_string()),
            if t.replied { "y" } else { "n" },
            if t.gateway_takeover() { "y" } else { "n" },
            if takeover {
                "y"
            } else if swallowed {
                "swallowed"
            } else {
                "n"
            },
            ws.len(),
        );
        if takeover == t.gateway_takeover() {
            agree += 1;
        } else {
            disagreements.push(t.n);
            eprintln!(
                "e2e-agree: DISAGREEMENT on turn {}: gateway takeover {} (cli {}, {} log lines), explain {}; injected {:?}",
                t.n,
                t.gateway_takeover(),
                t.cli_takeover,
                t.log_takeovers,
                takeover,
                t.injected
            );
            for w in &ws {
                eprintln!("e2e-agree:   window {}", window_line(w));
            }
            for r in records.iter().filter(|r| {
                (r["path"] == name.as_str() || r["path"] == lock.as_str())
                    && ts_ns(r["ts"].as_str().unwrap_or(""))
                        .is_some_and(|x| x >= t.start_ns && x < t.end_ns)
            }) {
                eprintln!("e2e-agree:   {}", record_line(r));
            }
        }
    }
    let replied = turns.iter().filter(|t| t.replied).count();
    let takeovers = turns.iter().filter(|t| t.gateway_takeover()).count();
    eprintln!(
        "e2e-agree: {agree}/{AGREE_TURNS} agree; {replied}/{AGREE_TURNS} replied, {takeovers} with a gateway takeover, {swallowed_turns} with a trip swallowed at cleanup; {} takeover lines in the log; --gateway-log: {} takeovers, {} matched to a change",
        takeover_lines(&log),
        by_log.len(),
        by_log.iter().filter(|o| o["matched"] == true).count()
    );
    for k in [InjectKind::Append, InjectKind::Chmod, InjectKind::Burst] {
        let of: Vec<&AgreeTurn> = turns
            .iter()
            .filter(|t| t.plan.map(|p| p.kind) == Some(k))
            .collect();
        eprintln!(
            "e2e-agree: {:<6}: {} turns, {} replied, {} takeovers, {} changes made",
            k.name(),
            of.len(),
            of.iter().filter(|t| t.replied).count(),
            of.iter().filter(|t| t.gateway_takeover()).count(),
            of.iter()
                .map(|t| t.injected.chmods + usize::from(t.injected.appended))
                .sum::<usize>()
        );
    }
    for t in &turns {
        for w in windows.iter().filter(|w| in_turn(t, w)) {
            eprintln!("e2e-agree: turn {:>2}: {}", t.n, window_line(w));
        }
    }
    for o in &by_log {
        eprintln!(
            "e2e-agree: --gateway-log: line {} {} lanes {} matched {} window {}.{} cause #{} {} pid {}",
            o["log_line"],
            o["time"].as_str().unwrap_or(""),
            o["lanes"],
            o["matched"],
            o["attempt"],
            o["window"]["window"],
            o["cause"]["seq"],
            o["cause"]["op"].as_str().unwrap_or("?"),
            o["cause"]["pid"],
        );
    }
    eprintln!("e2e-agree: {:?} in all", t_all.elapsed());

    // Every check below is made and reported, then the test fails if any failed.
    let mut failed: Vec<String> = Vec::new();
    let mut check = |ok: bool, why: String| {
        if !ok {
            eprintln!("e2e-agree: FAILED: {why}");
            failed.push(why);
        }
    };

    // Every injection happened (or the turn died before its user entry), and every
    // turn has its windows.
    for t in &turns {
        check(
            windows.iter().any(|w| in_turn(t, w)),
            format!("turn {}: explain has no window in it", t.n),
        );
        let i = &t.injected;
        check(
            i.chmod_errors == 0 && (i.appended || i.chmods > 0 || i.anchor_ns.is_none()),
            format!("turn {}: injection failed: {i:?}", t.n),
        );
    }
    // The agreement.
    check(
        disagreements.is_empty(),
        format!(
            "explain and the gateway disagree on turns {disagreements:?} ({agree}/{AGREE_TURNS} agree, seed {seed})"
        ),
    );

    // --gateway-log: every takeover of the log is matched to a tripped window of this
    // file and the change that tripped it, in a turn with a takeover.
    check(
        takeover_lines(&log) == 0 || !by_log.is_empty(),
        "--gateway-log found no takeover".into(),
    );
    for o in &by_log {
        let w = &o["window"];
        check(
            o["matched"] == true
                && w["tripped"] == true
                && !o["cause"].is_null()
                && o["cause"]["seq"] == w["first_trip"],
            format!("--gateway-log: takeover not matched to its window and change: {o}"),
        );
        if let Some(t) = turns.iter().find(|t| in_turn(t, w)) {
            check(
                t.gateway_takeover(),
                format!("--gateway-log matched turn {} without a takeover: {o}", t.n),
            );
        }
    }
    for t in turns.iter().filter(|t| t.gateway_takeover()) {
        check(
            by_log
                .iter()
                .any(|o| o["matched"] == true && in_turn(t, &o["window"])),
            format!(
                "turn {}: its takeover is not matched by explain --gateway-log",
                t.n
            ),
        );
    }

    // Swallowed trips: the reply went out.
    for t in &turns {
        let sw = windows
            .iter()
            .any(|w| in_turn(t, w) && w["tripped"] == true && w["outcome"] == "swallowed");
        check(
            !sw || t.replied,
            format!("turn {}: a trip swallowed at cleanup, yet no reply", t.n),
        );
    }

    // Turn 1: the append during the model call is absorbed: the turn replied, and
    // explain lists the change with the writer's pid, the entry id, `held_by_other`
    // and `absorbed: true`, in a window that did not trip.
    let t1 = &turns[0];
    check(
        t1.injected.appended && t1.replied && !t1.gateway_takeover(),
        format!(
            "turn 1 (absorbed append): appended {}, replied {} ({:?}), takeover {}",
            t1.injected.appended,
            t1.replied,
            t1.why,
            t1.gateway_takeover()
        ),
    );
    let found: Vec<(&Value, &Value)> = windows
        .iter()
        .flat_map(|w| {
            w["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["entries"]
                        .as_array()
                        .is_some_and(|es| es.iter().any(|e| e["id"] == "inj1"))
                })
                .map(move |c| (w, c))
        })
        .collect();
    check(
        found.len() == 1,
        format!(
            "turn 1: the appended entry inj1 is in {} windows' changes: {found:#?}",
            found.len()
        ),
    );
    if let Some((w, c)) = found.first() {
        eprintln!(
            "e2e-agree: turn 1 absorbed append: change #{} {} pid {} entry inj1 lock {} (holder {}) absorbed {}; window {}",
            c["seq"],
            c["op"],
            c["pid"],
            c["lock"],
            c["lock_holder"]["pid"],
            c["absorbed"],
            window_line(w)
        );
        let writer = t1.injected.pid.unwrap_or(0);
        check(
            c["pid"] == writer
                && c["class"] == "append"
                && c["lock"] == "held_by_other"
                && c["lock_holder"]["pid"] == gateway_pid
                && c["absorbed"] == true,
            format!(
                "turn 1: the append of inj1 by pid {writer}, held by the gateway (pid {gateway_pid}), absorbed: {c}"
            ),
        );
        check(
            w["tripped"] == false && w["holder"]["pid"] == gateway_pid,
            format!(
                "turn 1: the window of the absorbed append: {}",
                window_line(w)
            ),
        );
    }
    if !failed.is_empty() {
        // The evidence for a post-mortem: the journal, the gateway's log and the
        // session files (transcripts, trajectories), outside the scratch dir.
        let keep = std::env::temp_dir().join(format!("sessionfs-agree-fail-{seed}"));
        let _ = fs::create_dir_all(&keep);
        // The records read before the unmount (the mount is gone by now).
        let mut out = Vec::new();
        for r in &records {
            out.extend_from_slice(r.to_string().as_bytes());
            out.push(b'\n');
        }
        let _ = fs::write(keep.join("journal.jsonl"), out);
        let _ = fs::copy(&gw.log, keep.join("gateway.log"));
        for e in fs::read_dir(&gw.sessions).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".jsonl") {
                let _ = fs::copy(e.path(), keep.join(&name));
            }
        }
        eprintln!("e2e-agree: evidence kept in {}", keep.display());
    }
    assert!(
        failed.is_empty(),
        "{} checks failed (seed {seed}):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// `--supervise`: an upgrade and a kill -9 of the daemon, each mid-turn
// ---------------------------------------------------------------------------

/// Turns of the supervise test: turn 1 creates the transcript, the daemon is upgraded
/// during turn [`UPGRADE_TURN`]'s model call and killed (`kill -9`) during turn
/// [`KILL_TURN`]'s, and the last turn runs on the daemon the supervisor restarted.
const SUPERVISE_TURNS: usize = 4;
const UPGRADE_TURN: usize = 2;
const KILL_TURN: usize = 3;
/// When the daemon is upgraded or killed: this long after the turn's user entry was
/// written (seen in the journal), i.e. about 1 s into the 3 s model call.
const DISRUPT_AFTER_MS: u64 = 1000;
/// How often the probe lists the sessions directory.
const PROBE_PERIOD: Duration = Duration::from_millis(20);

/// A thread that lists the sessions directory every [`PROBE_PERIOD`] (opendir,
/// readdir, releasedir: requests the daemon answers every time, and that it does not
/// journal) and times each listing: how long a caller of the mount waits across an
/// upgrade or a restart. Stopped and joined on drop too, so a panic leaves nothing
/// running on the mount.
struct ListProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<ProbeSamples>>,
}

/// What a [`ListProbe`] saw: each listing's start (ns since the epoch) and duration,
/// and the listings that failed.
#[derive(Debug, Default)]
struct ProbeSamples {
    samples: Vec<(i128, Duration)>,
    errors: Vec<String>,
}

impl ProbeSamples {
    /// The longest listing that started in `[from_ns, to_ns)`, and when it started.
    fn longest_in(&self, from_ns: i128, to_ns: i128) -> (Duration, i128) {
        self.samples
            .iter()
            .filter(|(at, _)| *at >= from_ns && *at < to_ns)
            .map(|&(at, d)| (d, at))
            .max()
            .unwrap_or((Duration::ZERO, 0))
    }
}

impl ListProbe {
    fn start(dir: &Path) -> ListProbe {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut p = ProbeSamples::default();
            while !flag.load(Ordering::Relaxed) {
                let at = now_ns();
                let t = Instant::now();
                let r = fs::read_dir(&dir).and_then(|rd| {
                    rd.map(|e| e.map(|_| ()))
                        .collect::<std::io::Result<Vec<()>>>()
                });
                p.samples.push((at, t.elapsed()));
                if let Err(e) = r {
                    p.errors.push(format!("{:.3} s: {e}", at as f64 / 1e9));
                }
                std::thread::sleep(PROBE_PERIOD);
            }
            p
        });
        ListProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the thread and return what it saw.
    fn finish(mut self) -> ProbeSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = self.thread.take().expect("probe running");
        t.join().expect("probe panicked")
    }
}

impl Drop for ListProbe {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// The `ts` (ns since the epoch) of the journal record of the turn's user entry in
/// transcript `name`, read from the mount's `.journal` from byte `from`. `None` when
/// the turn ended (`over`) with no such record within 1 s, or after 120 s.
fn wait_user_entry(journal: &Path, from: u64, name: &str, over: impl Fn() -> bool) -> Option<i128> {
    let mut tail = JournalTail::open(journal, from);
    let t = Instant::now();
    let mut over_since: Option<Instant> = None;
    loop {
        let user = tail.poll().into_iter().find(|r| {
            r["path"] == name
                && r["op"] == "write"
                && r["entries"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["role"] == "user"))
        });
        if let Some(r) = user {
            return Some(ts_ns(r["ts"].as_str().unwrap_or("")).unwrap_or_else(now_ns));
        }
        if over() && over_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
        {
            return None;
        }
        if t.elapsed() > Duration::from_secs(120) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The daemon's pid from the pid file `pf` (read directly: no path on the mount).
fn pid_from(pf: &Path) -> Option<i32> {
    fs::read_to_string(pf).ok()?.trim().parse().ok()
}

/// The supervisors (`sessionfs sentinel … --fuse-fd …`) of the mount at `dir`.
fn supervisors_of(dir: &Path) -> Vec<i32> {
    let want = dir.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let c = fs::read(e.path().join("cmdline")).ok()?;
            let has = |n: &[u8]| c.windows(n.len()).any(|w| w == n);
            (has(b"sentinel\0") && has(b"--fuse-fd\0") && has(want)).then_some(pid)
        })
        .collect()
}

/// What was done to the daemon during one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disrupt {
    Upgrade,
    Kill,
}

/// How one upgrade or kill went.
#[derive(Debug)]
struct Disruption {
    what: Disrupt,
    /// When it began (ns since the epoch), and how long after the turn's user entry.
    at_ns: i128,
    after_entry_ms: i128,
    /// The daemon before and the one serving after.
    old: i32,
    new: i32,
    /// From the start to a new daemon in the pid file (kill), or to the end of the
    /// `sessionfs upgrade` command (upgrade), measured here.
    ms: u128,
    /// The upgrade command's line (`… upgraded, daemon A -> B in N ms`) and its N.
    line: String,
    reported_ms: Option<u64>,
    /// Whether the turn was still running once the new daemon served.
    mid_turn: bool,
}

/// Wait for turn `n`'s user entry, then `DISRUPT_AFTER_MS` after it upgrade or kill
/// the daemon and wait for the new one. `over`: whether the turn has ended.
fn disrupt(
    what: Disrupt,
    sessions: &Path,
    pid_file: &Path,
    from: u64,
    name: &str,
    over: &dyn Fn() -> bool,
) -> Result<Disruption, String> {
    let anchor = wait_user_entry(&sessions.join(".journal"), from, name, over)
        .ok_or("no user entry of the turn in the journal: nothing done")?;
    let wait = anchor + DISRUPT_AFTER_MS as i128 * 1_000_000 - now_ns();
    if wait > 0 {
        std::thread::sleep(Duration::from_nanos(wait as u64));
    }
    let old = pid_from(pid_file).ok_or("no daemon pid file")?;
    let at_ns = now_ns();
    let t = Instant::now();
    let (line, reported_ms) = match what {
        Disrupt::Upgrade => {
            let out = Command::new(common::bin())
                .arg("upgrade")
                .arg(sessions)
                .output()
                .map_err(|e| format!("sessionfs upgrade: {e}"))?;
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() {
                return Err(format!(
                    "sessionfs upgrade failed ({}): {line} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let reported = line
                .rsplit_once(" in ")
                .and_then(|(_, r)| r.strip_suffix(" ms"))
                .and_then(|n| n.trim().parse().ok());
            (line, reported)
        }
        Disrupt::Kill => {
            // SAFETY: kill(2) of the daemon this test mounted; no memory is involved.
            if unsafe { libc::kill(old, libc::SIGKILL) } != 0 {
                return Err(format!(
                    "kill -9 {old}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // Polled every 1 ms (the new daemon writes the pid file once it serves).
            let restarted = loop {
                if pid_from(pid_file)
                    .is_some_and(|p| p != old && Path::new(&format!("/proc/{p}")).exists())
                {
                    break true;
                }
                if t.elapsed() > Duration::from_secs(15) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if !restarted {
                return Err(format!("no new daemon 15 s after kill -9 of {old}"));
            }
            (String::new(), None)
        }
    };
    let ms = t.elapsed().as_millis();
    let new = pid_from(pid_file).ok_or("no daemon pid file after")?;
    if new == old {
        return Err(format!("still daemon {old} after the {what:?}: {line}"));
    }
    Ok(Disruption {
        what,
        at_ns,
        after_entry_ms: (at_ns - anchor) / 1_000_000,
        old,
        new,
        ms,
        line,
        reported_ms,
        mid_turn: !over(),
    })
}

/// Every record of the journal in `state`, from its segment files (read after the
/// unmount: every daemon's records, not only what the last one serves).
fn journal_segments(state: &Path) -> Vec<Value> {
    let mut segs: Vec<PathBuf> = fs::read_dir(state.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segs.sort();
    segs.iter().flat_map(|p| common::read_jsonl(p)).collect()
}

/// `--supervise` under the real gateway (issue: "the real gateway mid-turn across an
/// upgrade: 0 errors, 0 takeovers, the journal continuous"; for a crash: writer
/// errors, the longest stall, journal continuity). Sessions mounted with
/// `--supervise`; 4 turns; `sessionfs upgrade` 1 s into turn 2's model call and
/// `kill -9` of the daemon 1 s into turn 3's. Every turn replies, the gateway logs no
/// takeover and no I/O error, the mount is the same one (st_dev, one mount line, the
/// same supervisor), a directory listing every 20 ms never fails, the journal has no
/// `external` record, no seq handed out twice, no seq gap but at the kill, and
/// `unjournaled` records only after it; every transcript line is an entry of exactly
/// one record.
#[test]
fn supervised_mount_keeps_the_gateway_going_across_an_upgrade_and_a_kill_mid_turn() {
    use std::os::unix::fs::MetadataExt;
    if !e2e_enabled() {
        return;
    }
    let t_all = Instant::now();
    let mut gw = start_gateway_with("supervise", Some(&["--supervise"]));
    let sessions = gw.sessions.clone();
    let state = gw.mount.as_ref().unwrap().state.clone();
    let canon = fs::canonicalize(&sessions).unwrap();
    let pid_file = sessionfs::pid_file(&sessionfs::mount_id(&canon));
    let journal = sessions.join(".journal");
    let dev0 = fs::metadata(&sessions).unwrap().dev();
    let mut daemons = vec![pid_from(&pid_file).expect("daemon pid")];
    let sups0 = supervisors_of(&canon);
    assert_eq!(sups0.len(), 1, "one supervisor of {canon:?}: {sups0:?}");
    let probe = ListProbe::start(&sessions);

    let mut turn_ms = Vec::new();
    let mut replied = 0;
    let mut failures = Vec::new();
    let mut disruptions: Vec<Disruption> = Vec::new();
    let mut tr: Option<PathBuf> = None;
    for i in 1..=SUPERVISE_TURNS {
        let what = match i {
            UPGRADE_TURN => Some(Disrupt::Upgrade),
            KILL_TURN => Some(Disrupt::Kill),
            _ => None,
        };
        // The model call lasts 3 s where something happens during it, else 0.3 s.
        let delay = if what.is_some() { MODEL_DELAY_S } else { "0.3" };
        fs::write(gw.env.dir.join("delay"), delay).unwrap();
        let from = fs::metadata(&journal).unwrap().len();
        let name = tr
            .as_ref()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string());
        let env = &gw.env;
        let (turn, done) = std::thread::scope(|s| {
            let h = s.spawn(|| run_turn(env, i));
            let done = what.map(|w| {
                let name = name.as_deref().expect("the transcript exists after turn 1");
                disrupt(w, &sessions, &pid_file, from, name, &|| h.is_finished())
            });
            (h.join().expect("turn thread panicked"), done)
        });
        turn_ms.push(turn.ms);
        match turn_reply(i, &turn) {
            Ok(_) => {
                replied += 1;
                eprintln!("e2e-supervise: turn {i} replied in {} ms", turn.ms);
            }
            Err(why) => {
                eprintln!("e2e-supervise: turn {i} failed in {} ms: {why}", turn.ms);
                failures.push(why);
            }
        }
        match done {
            Some(Ok(d)) => {
                eprintln!(
                    "e2e-supervise: turn {i}: {:?} {} ms after the user entry: daemon {} -> {} in {} ms{}; turn still running after: {}",
                    d.what,
                    d.after_entry_ms,
                    d.old,
                    d.new,
                    d.ms,
                    if d.line.is_empty() {
                        String::new()
                    } else {
                        format!(" (\"{}\")", d.line)
                    },
                    d.mid_turn
                );
                daemons.push(d.new);
                disruptions.push(d);
            }
            Some(Err(why)) => {
                eprintln!("e2e-supervise: turn {i}: {what:?} FAILED: {why}");
                failures.push(format!("turn {i}: {what:?}: {why}"));
            }
            None => {}
        }
        if tr.is_none() {
            tr = Some(transcript(&sessions));
        }
    }
    let probed = probe.finish();
    gw.proc.stop(Duration::from_secs(20));
    let log = read_lossy(&gw.log);
    let takeovers = takeover_lines(&log);
    let bad_lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            [
                "EmbeddedAttemptSessionTakeoverError",
                "lane task error",
                "ENOTCONN",
                "Transport endpoint",
                "ECONNABORTED",
                "EIO:",
            ]
            .iter()
            .any(|b| l.contains(b))
        })
        .collect();
    for l in &bad_lines {
        eprintln!(
            "e2e-supervise: gateway: {}",
            l.chars().take(300).collect::<String>()
        );
    }

    // The mount is the one mounted at the start, still served, by the same supervisor.
    let dev1 = fs::metadata(&sessions).unwrap().dev();
    let mount_lines = common::mount_lines(&canon);
    let sups1 = supervisors_of(&canon);
    let tr = tr.expect("a transcript");
    let lines = common::read_jsonl(&tr);
    let roles: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| l["message"]["role"].as_str().unwrap_or("?").to_string())
        .collect();
    let daemon_log = fs::read_to_string(state.join("sessionfs.log")).unwrap_or_default();
    let sup_log: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains("supervisor") || l.contains("unjournaled"))
        .collect();
    let log_errors: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
        .collect();
    let last_daemon = pid_from(&pid_file);
    gw.mount.as_mut().unwrap().unmount();
    let unmounted = !common::is_mounted(&sessions);
    let sup_gone = common::wait_for(5, || supervisors_of(&canon).is_empty());
    let daemon_gone = last_daemon.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists());

    // The journal, every daemon's records.
    let recs = journal_segments(&state);
    let mut by_seq: Vec<&Value> = recs.iter().filter(|r| r["seq"].is_u64()).collect();
    by_seq.sort_by_key(|r| r["seq"].as_u64());
    let seq_dups = by_seq
        .windows(2)
        .filter(|w| w[0]["seq"] == w[1]["seq"])
        .count();
    let gaps: Vec<(&Value, &Value)> = by_seq
        .windows(2)
        .filter(|w| w[1]["seq"].as_u64().unwrap() > w[0]["seq"].as_u64().unwrap() + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    let externals: Vec<&Value> = recs.iter().filter(|r| r["op"] == "external").collect();
    let unjournaled: Vec<&Value> = recs.iter().filter(|r| r["op"] == "unjournaled").collect();
    for r in &unjournaled {
        eprintln!(
            "e2e-supervise: unjournaled #{} {} flags {} size {} -> {} entries {}",
            r["seq"],
            r["path"],
            r["flags"],
            r["size_before"],
            r["size_after"],
            r["entries"].as_array().map_or(0, Vec::len)
        );
    }
    let kill_ns = disruptions
        .iter()
        .find(|d| d.what == Disrupt::Kill)
        .map(|d| d.at_ns);
    let upgrade_ns = disruptions
        .iter()
        .find(|d| d.what == Disrupt::Upgrade)
        .map(|d| d.at_ns);
    let rec_ns = |r: &Value| ts_ns(r["ts"].as_str().unwrap_or("")).unwrap_or(0);
    // A gap is the kill's when the record before it was made before the kill and the
    // one after it after the kill. (After a crash the journal continues at its durable
    // seq reservation, up to 65,536 ahead: a gap there is by design. An upgrade ends
    // the daemon cleanly, and seq continues exactly.)
    let at_kill = |a: &Value, b: &Value| kill_ns.is_some_and(|k| rec_ns(a) < k && rec_ns(b) >= k);
    let other_gaps: Vec<String> = gaps
        .iter()
        .filter(|(a, b)| !at_kill(a, b))
        .map(|(a, b)| format!("{} -> {}", record_line(a), record_line(b)))
        .collect();
    let early_unjournaled: Vec<&&Value> = unjournaled
        .iter()
        .filter(|r| kill_ns.is_none_or(|k| rec_ns(r) < k))
        .collect();
    // Records just around the upgrade: consecutive seqs there (no gap at all there).
    let around_upgrade = upgrade_ns.map(|u| {
        by_seq
            .iter()
            .filter(|r| (rec_ns(r) - u).abs() < 2_000_000_000)
            .count()
    });
    // Every transcript line is an entry of exactly one record of the transcript.
    let name = tr.file_name().unwrap().to_string_lossy().to_string();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for r in recs.iter().filter(|r| r["path"] == name.as_str()) {
        for e in r["entries"].as_array().into_iter().flatten() {
            if let Some(id) = e["id"].as_str() {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let line_ids: Vec<String> = lines
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = line_ids
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    // Whether the gateway held the session lock (`<transcript>.lock` created and not
    // yet unlinked) at `at`: it holds it over the model call.
    let lock = format!("{name}.lock");
    let lock_held = |at: i128| {
        recs.iter()
            .filter(|r| {
                r["path"] == lock.as_str()
                    && r["result"] == "ok"
                    && (r["op"] == "create" || r["op"] == "unlink")
                    && rec_ns(r) < at
            })
            .max_by_key(|r| r["seq"].as_u64())
            .is_some_and(|r| r["op"] == "create")
    };

    // The figures.
    let up = disruptions.iter().find(|d| d.what == Disrupt::Upgrade);
    let kill = disruptions.iter().find(|d| d.what == Disrupt::Kill);
    // The longest listing that started from 1 s before the upgrade or kill to 200 ms
    // after the new daemon served (a listing takes ~1 ms when nothing happens).
    let stall = |d: &Disruption| {
        let end = d.at_ns + d.ms as i128 * 1_000_000 + 200_000_000;
        let (l, at) = probed.longest_in(d.at_ns - 1_000_000_000, end);
        format!(
            "{l:.0?} (a listing started {} ms after it)",
            (at - d.at_ns) / 1_000_000
        )
    };
    let longest = probed.longest_in(i128::MIN, i128::MAX).0;
    eprintln!(
        "e2e-supervise: turn times {turn_ms:?} ms; daemons {daemons:?}; supervisor {sups0:?}"
    );
    if let Some(u) = up {
        eprintln!(
            "e2e-supervise: upgrade: {} ms after turn {UPGRADE_TURN}'s user entry, command {} ms, reported {} ms, longest listing around it {}; session lock held: {}",
            u.after_entry_ms,
            u.ms,
            u.reported_ms.map_or("-".into(), |m| m.to_string()),
            stall(u),
            lock_held(u.at_ns)
        );
    }
    if let Some(k) = kill {
        eprintln!(
            "e2e-supervise: kill -9: {} ms after turn {KILL_TURN}'s user entry, new daemon in the pid file after {} ms, longest listing around it {}; session lock held: {}",
            k.after_entry_ms,
            k.ms,
            stall(k),
            lock_held(k.at_ns)
        );
    }
    for (a, b) in &gaps {
        eprintln!(
            "e2e-supervise: seq gap of {} ({}):\n  {}\n  {}",
            b["seq"].as_u64().unwrap() - a["seq"].as_u64().unwrap() - 1,
            if at_kill(a, b) {
                "at the kill"
            } else {
                "NOT at the kill"
            },
            record_line(a),
            record_line(b)
        );
    }
    for l in &sup_log {
        eprintln!("e2e-supervise: sessionfs.log: {l}");
    }
    eprintln!(
        "e2e-supervise: {}/{SUPERVISE_TURNS} turns replied, {takeovers} takeover lines, {} bad gateway log lines; probe: {} listings, {} errors, longest {longest:.0?}; journal: {} records, {} seq gaps ({} not at the kill), {seq_dups} seqs twice, {} external, {} unjournaled ({} before the kill), {} records within 2 s of the upgrade; transcript: {} lines, {} in no record, {} in two; st_dev {dev0} -> {dev1}; {:.1?} in all",
        replied,
        bad_lines.len(),
        probed.samples.len(),
        probed.errors.len(),
        recs.len(),
        gaps.len(),
        other_gaps.len(),
        externals.len(),
        unjournaled.len(),
        early_unjournaled.len(),
        around_upgrade.unwrap_or(0),
        lines.len(),
        missing.len(),
        twice.len(),
        t_all.elapsed()
    );

    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert_eq!(disruptions.len(), 2, "{disruptions:#?}");
    for d in &disruptions {
        assert!(
            d.mid_turn,
            "the turn had ended before the {:?} was over: {d:?}",
            d.what
        );
        assert!(
            lock_held(d.at_ns),
            "the gateway did not hold the session lock (model call) at the {:?}: {d:?}",
            d.what
        );
    }
    assert!(
        up.is_some_and(|u| u.reported_ms.is_some()),
        "no `upgraded, daemon A -> B in N ms` line: {up:?}"
    );
    assert_eq!(takeovers, 0, "takeovers in the gateway log");
    assert!(
        bad_lines.is_empty(),
        "errors in the gateway log: {bad_lines:#?}"
    );
    let want: Vec<String> = (0..SUPERVISE_TURNS)
        .flat_map(|_| ["user".to_string(), "assistant".to_string()])
        .collect();
    assert_eq!(roles, want, "transcript message order in {tr:?}");
    assert_eq!(dev0, dev1, "the sessions directory's st_dev changed");
    assert_eq!(
        mount_lines.len(),
        1,
        "mounts at {canon:?}: {mount_lines:#?}"
    );
    assert_eq!(sups1, sups0, "the supervisor changed");
    assert!(
        probed.errors.is_empty(),
        "listings of the sessions directory failed: {:?}",
        probed.errors
    );
    assert!(
        longest < Duration::from_secs(5),
        "a listing of the sessions directory took {longest:?}"
    );
    assert!(unmounted, "still mounted after the unmount");
    assert!(sup_gone, "the supervisor outlived the unmount");
    assert!(daemon_gone, "the last daemon outlived the unmount");
    assert!(log_errors.is_empty(), "sessionfs.log: {log_errors:#?}");
    assert!(externals.is_empty(), "external records: {externals:#?}");
    assert_eq!(seq_dups, 0, "a seq handed out twice");
    assert!(
        other_gaps.is_empty(),
        "seq gaps not at the kill (across the upgrade?):\n{}",
        other_gaps.join("\n")
    );
    assert!(
        early_unjournaled.is_empty(),
        "unjournaled records before the kill: {early_unjournaled:#?}"
    );
    assert!(
        missing.is_empty() && twice.is_empty(),
        "transcript lines in no journal record: {missing:?}; in more than one: {twice:?}"
    );
}
