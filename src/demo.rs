//! `sessionfs demo`: unpack a real OpenClaw 2026.5.22 sessions directory (embedded in
//! the binary), mount sessionfs over it, run the write pattern of one gateway turn
//! through the mount, show the directory and the turn's journal, then unmount and
//! clean up.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::journal::cli::{JournalArgs, run_journal};
use crate::mount::{MountSpec, mount, umount};

/// `println!` that never panics: with stdout closed early (`sessionfs demo | head`)
/// the demo still unmounts and cleans up instead of dying on EPIPE.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Session id of the embedded fixture.
pub const SESSION_ID: &str = "345c3d87-d783-4ad6-829e-3331739a026b";

/// The embedded sessions directory: (file name, bytes), written by the real
/// OpenClaw 2026.5.22 gateway (16 turns; paths rewritten to /home/operator).
pub const FIXTURE: &[(&str, &[u8])] = &[
    (
        "345c3d87-d783-4ad6-829e-3331739a026b.jsonl",
        include_bytes!(
            "../fixtures/openclaw-2026.5.22-sessions/345c3d87-d783-4ad6-829e-3331739a026b.jsonl"
        ),
    ),
    (
        "345c3d87-d783-4ad6-829e-3331739a026b.trajectory-path.json",
        include_bytes!(
            "../fixtures/openclaw-2026.5.22-sessions/345c3d87-d783-4ad6-829e-3331739a026b.trajectory-path.json"
        ),
    ),
    (
        "345c3d87-d783-4ad6-829e-3331739a026b.trajectory.jsonl",
        include_bytes!(
            "../fixtures/openclaw-2026.5.22-sessions/345c3d87-d783-4ad6-829e-3331739a026b.trajectory.jsonl"
        ),
    ),
    (
        "sessions.json",
        include_bytes!("../fixtures/openclaw-2026.5.22-sessions/sessions.json"),
    ),
];

/// Unpack the fixture into `dir` (which must exist).
///
/// Errors: the I/O error of the first file that could not be written.
pub fn unpack(dir: &Path) -> std::io::Result<()> {
    for (name, bytes) in FIXTURE {
        let p = dir.join(name);
        fs::write(&p, bytes)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Field 22 of /proc/self/stat, as OpenClaw writes it into its lock payload.
fn starttime() -> u64 {
    let s = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    s.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

struct Lock {
    file: fs::File,
    path: std::path::PathBuf,
}

/// The 2026.5.22 session write lock: O_CREAT|O_EXCL ("wx"), pretty JSON payload, fd
/// kept open for the whole hold.
fn take_lock(transcript: &Path) -> Result<Lock, String> {
    let path = transcript.with_extension("jsonl.lock");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| format!("lock {}: {e}", path.display()))?;
    let payload = serde_json::json!({
        "pid": std::process::id(),
        "createdAt": crate::clock::now_rfc3339(),
        "maxHoldMs": 300_000,
        "starttime": starttime(),
    });
    let text = serde_json::to_string_pretty(&payload).map_err(|e| e.to_string())? + "\n";
    file.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Lock { file, path })
}

/// Release = close, re-read, unlink if unchanged.
fn release_lock(lock: Lock) -> Result<(), String> {
    drop(lock.file);
    let mut s = String::new();
    fs::File::open(&lock.path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| e.to_string())?;
    fs::remove_file(&lock.path).map_err(|e| e.to_string())
}

/// appendFileSync: open O_APPEND, one write, close.
fn append_line(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let line = serde_json::to_string(value).map_err(|e| e.to_string())? + "\n";
    f.write_all(line.as_bytes()).map_err(|e| e.to_string())
}

fn last_id(path: &Path) -> Option<String> {
    let data = fs::read(path).ok()?;
    let last = data.split(|b| *b == b'\n').rfind(|l| !l.is_empty())?;
    let v: serde_json::Value = serde_json::from_slice(last).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

/// Run the demo end to end. Errors are one line for the user.
pub fn run() -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("sessionfs-demo-{}", std::process::id()));
    let sessions = tmp.join("agents/main/sessions");
    fs::create_dir_all(&sessions).map_err(|e| format!("{}: {e}", sessions.display()))?;
    let state = tmp.join("state");
    let result = (|| {
        unpack(&sessions).map_err(|e| format!("unpacking the sample: {e}"))?;
        say!(
            "1. unpacked a real OpenClaw 2026.5.22 sessions directory (16 turns) into\n   {}",
            sessions.display()
        );
        mount(MountSpec {
            mountpoint: sessions.clone(),
            source: None,
            foreground: false,
            allow_other: false,
            read_only: false,
            debug: false,
            threads: 2,
            state_dir: Some(state.clone()),
            lanes: None,
            no_journal: false,
            journal_max_bytes: 256 << 20,
            journal_max_age: Duration::from_secs(30 * 86_400),
            salvage_max_bytes: 1 << 30,
            salvage_file_max_bytes: None,
            journal_max_pending: crate::journal::DEFAULT_MAX_PENDING,
            ttl: Duration::from_secs(10),
            readdirplus: false,
            max_inodes: None,
            file_handles: true,
            strict_stat: false,
            reap: true,
            journal_group: None,
            fail_closed: false,
            supervise: false,
        })?;
        say!(
            "2. mounted sessionfs over it (overlay: same path, journal in {})",
            state.display()
        );
        let mounted = Mounted(Some(&sessions));
        let turn = run_turn(&sessions);
        let shown = turn.and_then(|_| show(&sessions));
        let un = mounted.unmount();
        let seen = shown?;
        un?;
        let under = listing(&sessions)?;
        if under != seen {
            return Err(format!(
                "after unmounting, the directory differs from what the mount showed: {under:?} vs {seen:?}"
            ));
        }
        say!(
            "6. unmounted; the directory underneath holds exactly what the mount showed ({} files, same sizes and inodes)",
            under.len()
        );
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    if result.is_ok() {
        say!("7. cleaned up {}", tmp.display());
    }
    result
}

/// Unmounts on drop, so that a panic between mount and unmount leaves no mount.
struct Mounted<'a>(Option<&'a Path>);

impl Mounted<'_> {
    fn unmount(mut self) -> Result<(), String> {
        self.0.take().map_or(Ok(()), umount)
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = umount(p);
        }
    }
}

fn run_turn(sessions: &Path) -> Result<(), String> {
    let t = sessions.join(format!("{SESSION_ID}.jsonl"));
    let traj = sessions.join(format!("{SESSION_ID}.trajectory.jsonl"));
    say!("3. one gateway turn through the mount (OpenClaw 2026.5.22 write pattern):");
    let lock = take_lock(&t)?;
    say!("   - created {SESSION_ID}.jsonl.lock with O_CREAT|O_EXCL, JSON payload, fd held open");
    let parent = last_id(&t);
    let user_id = format!("{:08x}", (now_ms() & 0xffff_ffff) as u32);
    append_line(
        &t,
        &serde_json::json!({"type":"message","id":user_id,"parentId":parent,
            "timestamp":crate::clock::now_rfc3339(),
            "message":{"role":"user","content":[{"type":"text","text":"hello from sessionfs demo"}]}}),
    )?;
    say!("   - appended the user entry {user_id} (open O_APPEND, write, close)");
    release_lock(lock)?;
    say!("   - released the lock (close, re-read, unlink) for the model call");
    let lock = take_lock(&t)?;
    say!("   - re-took the lock");
    let asst_id = format!("{:08x}", ((now_ms() + 1) & 0xffff_ffff) as u32);
    append_line(
        &t,
        &serde_json::json!({"type":"message","id":asst_id,"parentId":user_id,
            "timestamp":crate::clock::now_rfc3339(),
            "message":{"role":"assistant","content":[{"type":"text","text":"hi!"}],
                "provider":"mock","model":"mock-model","stopReason":"stop"}}),
    )?;
    append_line(
        &t,
        &serde_json::json!({"type":"custom","customType":"openclaw:turn-end","id":format!("{:08x}", ((now_ms() + 2) & 0xffff_ffff) as u32),"parentId":asst_id}),
    )?;
    say!("   - appended the assistant entry {asst_id} and a custom entry");
    release_lock(lock)?;
    say!("   - released the lock");
    let store = sessions.join("sessions.json");
    let tmp = sessions.join(format!(".fs-safe-replace.{}.demo.tmp", std::process::id()));
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&store).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        for s in o.values_mut() {
            if let Some(m) = s.as_object_mut() {
                m.insert("updatedAt".into(), serde_json::json!(now_ms() as u64));
            }
        }
    }
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    fs::rename(&tmp, &store).map_err(|e| e.to_string())?;
    fs::set_permissions(&store, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    say!(
        "   - replaced sessions.json via {} + rename + chmod 0600",
        tmp.file_name().unwrap().to_string_lossy()
    );
    append_line(
        &traj,
        &serde_json::json!({"type":"trajectory","turn":"demo","ts":crate::clock::now_rfc3339()}),
    )?;
    say!("   - appended the trajectory file");
    Ok(())
}

/// (name, mode, size, inode) of every entry but the virtual `.journal`, sorted.
fn listing(dir: &Path) -> Result<Vec<(String, u32, u64, u64)>, String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let n = e.map_err(|e| e.to_string())?.file_name();
        if n == ".journal" {
            continue;
        }
        let md = fs::symlink_metadata(dir.join(&n)).map_err(|e| e.to_string())?;
        out.push((
            n.to_string_lossy().into_owned(),
            md.mode() & 0o7777,
            md.size(),
            md.ino(),
        ));
    }
    out.sort();
    Ok(out)
}

fn show(sessions: &Path) -> Result<Vec<(String, u32, u64, u64)>, String> {
    say!("4. the directory through the mount (and the virtual .journal):");
    let seen = listing(sessions)?;
    for (n, mode, size, ino) in &seen {
        say!("   {mode:o} {size:>9} ino {ino:>9}  {n}");
    }
    // The state dir is new, so the whole mount's journal is exactly this turn.
    say!("5. the journal of the turn (sessionfs journal <mountpoint>):");
    let _ = std::io::stdout().flush();
    run_journal(&JournalArgs {
        target: sessions.to_path_buf(),
        since: None,
        follow: false,
        json: false,
        pid: None,
        lane: None,
        op: Vec::new(),
    })?;
    Ok(seen)
}
