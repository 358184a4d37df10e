//! Which lane of a process made a change.
//!
//! Lanes (`main`, `cron`, `subagent`, `nested:<key>`, `session:<key>`) exist only
//! inside the gateway's Node process (source: OpenClaw 2026.5.22), so nothing outside
//! reveals them. A record gets a lane from one of two places, and never otherwise:
//!
//! - **Declared**: a process sets the virtual xattr `user.sessionfs.lane` on a file to
//!   declare the lane of its following changes to that file; an empty value (or
//!   `removexattr`) clears it. It is never stored on the backing file. `getxattr`
//!   returns the caller's current declaration. Keyed by (pid, starttime, backing ino).
//! - **By rule**: `--lanes <FILE>`, a JSON file:
//!
//! ```json
//! {"rules": [
//!   {"lane": "cli",     "cgroup_contains": "openclaw-cli"},
//!   {"lane": "gateway", "comm": "openclaw-gatewa", "uid": 1000},
//!   {"lane": "repair",  "cmdline_prefix": "python3 -c"},
//!   {"lane": "node",    "exe": "/usr/bin/node"}
//! ]}
//! ```
//!
//!   Conditions: `comm` (exact), `exe` (exact path), `cmdline_prefix` (prefix of the
//!   recorded argv joined with spaces), `cgroup_contains` (substring of the cgroup v2
//!   path), `uid` (the request's fs uid). All conditions of a rule must match; the
//!   first matching rule wins. Unknown keys and rules without conditions are errors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;

use crate::identity::Caller;
use crate::sys::FileKey;

/// Name of the virtual extended attribute a process sets to declare its lane.
pub const LANE_XATTR: &str = "user.sessionfs.lane";
/// Longest lane name accepted, bytes.
pub const MAX_LANE_LEN: usize = 256;
/// Declarations kept before those of dead processes are purged.
const MAX_DECLARATIONS: usize = 65_536;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// One `--lanes` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Lane given to matching callers.
    pub lane: String,
    /// Exact `/proc/<pid>/comm`.
    #[serde(default)]
    pub comm: Option<String>,
    /// Exact `/proc/<pid>/exe` target.
    #[serde(default)]
    pub exe: Option<String>,
    /// Prefix of the recorded argv joined with single spaces.
    #[serde(default)]
    pub cmdline_prefix: Option<String>,
    /// Substring of the cgroup v2 path.
    #[serde(default)]
    pub cgroup_contains: Option<String>,
    /// The request's fs uid.
    #[serde(default)]
    pub uid: Option<u32>,
}

impl Rule {
    fn matches(&self, c: &Caller) -> bool {
        let p = c.process.as_deref();
        self.uid.is_none_or(|u| u == c.uid)
            && self
                .comm
                .as_ref()
                .is_none_or(|x| p.is_some_and(|p| &p.comm == x))
            && self
                .exe
                .as_ref()
                .is_none_or(|x| p.and_then(|p| p.exe.as_ref()) == Some(x))
            && self
                .cmdline_prefix
                .as_ref()
                .is_none_or(|x| p.is_some_and(|p| p.cmdline.join(" ").starts_with(x.as_str())))
            && self.cgroup_contains.as_ref().is_none_or(|x| {
                p.and_then(|p| p.cgroup.as_ref())
                    .is_some_and(|g| g.contains(x.as_str()))
            })
    }

    fn has_condition(&self) -> bool {
        self.comm.is_some()
            || self.exe.is_some()
            || self.cmdline_prefix.is_some()
            || self.cgroup_contains.is_some()
            || self.uid.is_some()
    }
}

/// Rules from a `--lanes <FILE>` JSON file.
#[derive(Debug, Default)]
pub struct LaneRules {
    rules: Vec<(Rule, Arc<str>)>,
}

impl LaneRules {
    /// No rules.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Load rules; the error is one line naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("lanes file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("lanes file {}: {e}", path.display()))
    }

    /// Parse the JSON text of a rules file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: RulesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for (i, r) in f.rules.into_iter().enumerate() {
            if r.lane.is_empty() || r.lane.len() > MAX_LANE_LEN {
                return Err(format!(
                    "rule {}: lane must be 1..={MAX_LANE_LEN} bytes",
                    i + 1
                ));
            }
            if !r.has_condition() {
                return Err(format!(
                    "rule {} (lane {:?}) has no condition: give comm, exe, cmdline_prefix, cgroup_contains or uid",
                    i + 1,
                    r.lane
                ));
            }
            let lane: Arc<str> = Arc::from(r.lane.as_str());
            rules.push((r, lane));
        }
        Ok(Self { rules })
    }

    /// First matching rule's lane.
    pub fn lane_for(&self, caller: &Caller) -> Option<Arc<str>> {
        self.rules
            .iter()
            .find(|(r, _)| r.matches(caller))
            .map(|(_, l)| l.clone())
    }
}

/// Declared lanes, keyed by (pid, starttime, backing (dev, ino)).
#[derive(Debug, Default)]
pub struct LaneDeclarations {
    map: RwLock<HashMap<(u32, u64, FileKey), Arc<str>>>,
}

impl LaneDeclarations {
    /// Empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare (Some) or clear (None) the lane of `caller`'s process for `file`.
    /// A caller whose process is unknown (already gone) declares nothing.
    pub fn declare(&self, caller: &Caller, file: FileKey, lane: Option<&str>) {
        let Some(p) = &caller.process else { return };
        let key = (p.pid, p.starttime, file);
        let mut map = self.map.write();
        match lane {
            Some(l) => {
                if map.len() >= MAX_DECLARATIONS {
                    map.retain(|(pid, _, _), _| Path::new(&format!("/proc/{pid}")).exists());
                }
                map.insert(key, Arc::from(l));
            }
            None => {
                map.remove(&key);
            }
        }
    }

    /// A rename put file `moved` where file `replaced` was: declarations made on the
    /// replaced file follow the path to the moved one (OpenClaw replaces
    /// `sessions.json` through a temp file and a rename; a lane declared on it must
    /// cover its later changes). A process's own declaration on `moved` wins.
    pub fn inherit(&self, replaced: FileKey, moved: FileKey) {
        if replaced == moved || self.map.read().is_empty() {
            return;
        }
        let mut map = self.map.write();
        let from: Vec<_> = map
            .iter()
            .filter(|((_, _, f), _)| *f == replaced)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for ((pid, start, _), lane) in from {
            map.remove(&(pid, start, replaced));
            map.entry((pid, start, moved)).or_insert(lane);
        }
    }

    /// The caller process's current declaration for `file`.
    pub fn get(&self, caller: &Caller, file: FileKey) -> Option<Arc<str>> {
        let p = caller.process.as_ref()?;
        let map = self.map.read();
        if map.is_empty() {
            return None;
        }
        map.get(&(p.pid, p.starttime, file)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ProcessInfo;

    /// A file key on device 0.
    fn k(ino: u64) -> FileKey {
        FileKey { dev: 0, ino }
    }

    #[test]
    fn declarations_follow_a_rename_over() {
        let d = LaneDeclarations::new();
        let a = caller("node", "/", 1000);
        d.declare(&a, k(7), Some("cron"));
        // The moved file (ino 9) replaces ino 7: the lane follows the path.
        d.inherit(k(7), k(9));
        assert_eq!(d.get(&a, k(9)).as_deref(), Some("cron"));
        assert_eq!(d.get(&a, k(7)), None);
        // A declaration of its own on the moved file wins over the replaced one's.
        d.declare(&a, k(11), Some("main"));
        d.declare(&a, k(12), Some("subagent"));
        d.inherit(k(11), k(12));
        assert_eq!(d.get(&a, k(12)).as_deref(), Some("subagent"));
    }

    fn caller(comm: &str, cgroup: &str, uid: u32) -> Caller {
        Caller {
            tid: 10,
            uid,
            gid: uid,
            process: Some(Arc::new(ProcessInfo {
                pid: 10,
                comm: comm.into(),
                exe: Some("/usr/bin/node".into()),
                cmdline: vec!["openclaw".into(), "gateway".into(), "run".into()],
                cgroup: Some(cgroup.into()),
                starttime: 99,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn first_matching_rule_wins_and_all_conditions_count() {
        let r = LaneRules::parse(
            r#"{"rules":[
                {"lane":"cli","cgroup_contains":"openclaw-cli"},
                {"lane":"gw","comm":"node","uid":1000},
                {"lane":"any-gateway","cmdline_prefix":"openclaw gateway"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.lane_for(&caller("node", "/docker/openclaw-cli-1", 1000))
                .as_deref(),
            Some("cli")
        );
        assert_eq!(
            r.lane_for(&caller("node", "/system.slice/gw", 1000))
                .as_deref(),
            Some("gw")
        );
        assert_eq!(
            r.lane_for(&caller("node", "/x", 0)).as_deref(),
            Some("any-gateway")
        );
        let none = LaneRules::parse(r#"{"rules":[{"lane":"x","exe":"/bin/other"}]}"#).unwrap();
        assert_eq!(
            none.lane_for(&caller("node", "/x", 0)),
            None,
            "never invent a lane"
        );
    }

    #[test]
    fn bad_rules_are_one_line_errors() {
        assert!(
            LaneRules::parse(r#"{"rules":[{"lane":"x"}]}"#)
                .unwrap_err()
                .contains("no condition")
        );
        assert!(
            LaneRules::parse(r#"{"rules":[{"lane":"x","comm":"a","colour":1}]}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(LaneRules::parse("{").is_err());
        let e = LaneRules::load(Path::new("/nonexistent/lanes.json")).unwrap_err();
        assert!(e.starts_with("lanes file /nonexistent/lanes.json:") && !e.contains('\n'));
    }

    #[test]
    fn declarations_are_per_process_and_file() {
        let d = LaneDeclarations::new();
        let c = caller("node", "/", 0);
        d.declare(&c, k(5), Some("cron"));
        assert_eq!(d.get(&c, k(5)).as_deref(), Some("cron"));
        assert_eq!(d.get(&c, k(6)), None);
        let mut other = caller("node", "/", 0);
        Arc::make_mut(other.process.as_mut().unwrap()).starttime = 100; // pid reused
        assert_eq!(d.get(&other, k(5)), None);
        d.declare(&c, k(5), None);
        assert_eq!(d.get(&c, k(5)), None);
    }
}
