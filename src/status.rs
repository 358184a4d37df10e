//! `sessionfs status [MOUNTPOINT] [--json]`: each live mount's `.status` virtual file
//! (see `SessionFs::status_json`), as a table or as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Run `sessionfs status`. Err is one line: no sessionfs mount, or a `.status` that
/// cannot be read (permission: it belongs to root and the `--journal-group`).
pub fn run_status(mountpoint: Option<&Path>, json: bool) -> Result<(), String> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => vec![m.to_path_buf()],
        None => crate::mount::sessionfs_mounts(),
    };
    if mounts.is_empty() {
        return Err("no sessionfs mount is live".into());
    }
    let mut rows = Vec::new();
    for m in &mounts {
        let p = m.join(crate::fs::STATUS_FILE);
        let data = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(
                    "{} is not a sessionfs mount (no {})",
                    m.display(),
                    crate::fs::STATUS_FILE
                )
            }
            _ => format!("{}: {e}", p.display()),
        })?;
        let mut v: Value = serde_json::from_slice(&data)
            .map_err(|e| format!("{}: not a status object: {e}", p.display()))?;
        v["mountpoint"] = crate::names::encode_os(m.as_os_str()).into();
        rows.push(v);
    }
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    if json {
        for r in &rows {
            text.push_str(&format!("{r}\n"));
        }
    } else {
        text.push_str(&format!(
            "{:<40} {:>8} {:>9} {:>10} {:>8} {:>12} {:>10} {:>8} {:>7} {:>14} {:>7}\n",
            "MOUNTPOINT",
            "PID",
            "UPTIME",
            "REQUESTS",
            "REQ/S",
            "JOURNAL SEQ",
            "JOURNAL",
            "SALVAGE",
            "INODES",
            "LOCKS/REAP/STL",
            "ERRORS"
        ));
        let mib = |v: &Value| {
            v.as_u64().map_or("-".to_string(), |b| {
                format!("{:.1}M", b as f64 / (1 << 20) as f64)
            })
        };
        for r in &rows {
            let j = &r["journal"];
            text.push_str(&format!(
                "{:<40} {:>8} {:>8.0}s {:>10} {:>8} {:>12} {:>10} {:>8} {:>7} {:>14} {:>7}\n",
                crate::journal::cli::escape_controls(r["mountpoint"].as_str().unwrap_or("?")),
                r["pid"],
                r["uptime_s"].as_f64().unwrap_or(0.0),
                r["requests_total"],
                r["requests_per_s_recent"]
                    .as_f64()
                    .unwrap_or(r["requests_per_s"].as_f64().unwrap_or(0.0))
                    .round(),
                j["next_seq"]
                    .as_u64()
                    .map_or("-".into(), |s| s.saturating_sub(1).to_string()),
                mib(&j["bytes"]),
                mib(&j["salvage_bytes"]),
                r["inodes"],
                format!(
                    "{}/{}/{}",
                    r["locks"]["held"], r["locks"]["reaped"], r["locks"]["stolen"]
                ),
                r["errors"],
            ));
            if let Some(e) = r["last_error"].as_object() {
                text.push_str(&format!(
                    "  last error {} {}: {}\n",
                    e.get("ts").and_then(Value::as_str).unwrap_or("?"),
                    e.get("target").and_then(Value::as_str).unwrap_or("?"),
                    crate::journal::cli::escape_controls(
                        e.get("what").and_then(Value::as_str).unwrap_or("?")
                    ),
                ));
            }
        }
    }
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}
