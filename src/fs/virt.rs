//! Virtual files: `<mount>/.journal` (whole mount), `<dir>/<name>.journal` (one file's
//! journal), `<dir>/<name>.salvage` (its removed transcript lines), `<mount>/.locks`
//! (the current session locks; reachable by lookup, not listed) and `<dir>/<name>.lane`
//! (write a lane name to declare it for the writing process; the file's own rw bits).
//!
//! They are read-only, mode 0400, owned by the watched file's owner (the journal holds
//! process details); the whole-mount views belong to the daemon's user and the
//! `--journal-group`, served with attr TTL 0 and direct I/O so that `tail -f` sees them
//! grow. `.journal` is listed in the root; per-file ones are reachable by lookup only.
//! A real backing file of the same name always wins.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};
use parking_lot::{Mutex, RwLock};

use super::SessionFs;
use super::handle::DirEntry;
use super::inode::{Inode, ROOT_ID, VIRTUAL_BASE};
use crate::journal::View;
use crate::journal::record::FileRef;
use crate::sys;

/// Name of the whole-mount journal in the mount root.
pub const MOUNT_JOURNAL: &str = ".journal";
/// Name of the lock list in the mount root (`sessionfs locks` reads it).
pub const LOCKS_FILE: &str = ".locks";
/// Name of the daemon's status in the mount root (`sessionfs status` reads it).
pub const STATUS_FILE: &str = ".status";
/// Suffix of a file's lane control file: writing a lane name to `<file>.lane`
/// declares it for the writing process, as `setfattr -n user.sessionfs.lane` does
/// (for runners without xattr calls: Node's `fs`); reading it gives the declaration.
pub const LANE_SUFFIX: &str = ".lane";
/// Suffix of per-file journals.
pub const JOURNAL_SUFFIX: &str = ".journal";
/// Suffix of per-file salvage stores.
pub const SALVAGE_SUFFIX: &str = ".salvage";

/// What a virtual node shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VirtualKind {
    /// The whole mount's journal.
    All,
    /// The journal of one file (its lineage: see [`crate::journal`]).
    Journal(FileRef),
    /// The salvage store of one file.
    Salvage(FileRef),
    /// The current session locks, one JSON object per line.
    Locks,
    /// The daemon's status: one JSON object.
    Status,
    /// The lane control file of entry `name` in directory node `parent`.
    Lane {
        /// Node id of the directory.
        parent: u64,
        /// The watched file's name.
        name: std::ffi::OsString,
    },
}

#[derive(Debug)]
struct VNode {
    kind: VirtualKind,
    uid: u32,
    gid: u32,
}

/// Virtual node ids ↔ kinds. Nodes live as long as the mount (a handful per file).
#[derive(Debug)]
pub struct VirtualFiles {
    nodes: RwLock<HashMap<u64, VNode>>,
    ids: RwLock<HashMap<VirtualKind, u64>>,
    next: AtomicU64,
    /// Paths of backing files already reported as shadowing a virtual file.
    warned: Mutex<HashSet<String>>,
    /// The last rendering of each generated file (`.status`, `.locks`), made by a read
    /// at offset 0: reads further on serve it, so a reader's pieces are one rendering
    /// (the counters move between reads).
    rendered: Mutex<HashMap<u64, std::sync::Arc<Vec<u8>>>>,
}

impl VirtualFiles {
    /// Empty table.
    pub fn new() -> Self {
        Self {
            nodes: RwLock::new(HashMap::new()),
            ids: RwLock::new(HashMap::new()),
            next: AtomicU64::new(VIRTUAL_BASE + 1),
            warned: Mutex::new(HashSet::new()),
            rendered: Mutex::new(HashMap::new()),
        }
    }

    fn id(&self, kind: VirtualKind, uid: u32, gid: u32) -> u64 {
        if let Some(id) = self.ids.read().get(&kind) {
            if let Some(n) = self.nodes.write().get_mut(id) {
                n.uid = uid;
                n.gid = gid;
            }
            return *id;
        }
        let mut ids = self.ids.write();
        let id = *ids
            .entry(kind.clone())
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        self.nodes.write().insert(id, VNode { kind, uid, gid });
        id
    }

    /// First time this path shadows a virtual file? (Warn once per path.)
    fn first_warning(&self, path: &str) -> bool {
        let mut w = self.warned.lock();
        w.len() < 4096 && w.insert(path.to_string())
    }
}

/// `name` without its virtual-file suffix, and whether that suffix is `.salvage`
/// (else `.journal`); `None` for other names.
fn base_of(name: &[u8]) -> Option<(&[u8], bool)> {
    [(JOURNAL_SUFFIX, false), (SALVAGE_SUFFIX, true)]
        .iter()
        .find_map(|(suf, salvage)| {
            (name.len() > suf.len() && name.ends_with(suf.as_bytes()))
                .then(|| (&name[..name.len() - suf.len()], *salvage))
        })
}

impl Default for VirtualFiles {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionFs {
    /// A backing file `name` in `parent` was found: if it takes the name of a virtual
    /// file (`.journal` in the root, `<file>.journal`/`<file>.salvage` beside an
    /// existing `<file>`), the backing file wins and we warn once per path.
    pub(super) fn warn_if_shadowing(&self, parent: &Inode, name: &OsStr) {
        if self.journal.is_none() {
            return;
        }
        let n = name.as_bytes();
        let shadows = (parent.id == ROOT_ID && n == MOUNT_JOURNAL.as_bytes())
            || base_of(n).is_some_and(|(b, _)| {
                sys::cname(OsStr::from_bytes(b))
                    .ok()
                    .is_some_and(|c| parent.fd().and_then(|d| sys::fstatat(d, &c)).is_ok())
            });
        if shadows {
            let path = self.child_path(parent, name);
            if self.virt.first_warning(&path) {
                tracing::warn!(path = %path, "a backing file shadows a sessionfs virtual file; the backing file is served");
            }
        }
    }

    fn vattr(&self, id: u64, size: u64, uid: u32, gid: u32) -> FileAttr {
        self.vattr_mode(id, size, uid, gid, 0o400)
    }

    fn vattr_mode(&self, id: u64, size: u64, uid: u32, gid: u32, perm: u16) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(id),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::RegularFile,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of a virtual node: current size, TTL 0 at the call site.
    pub(super) fn virtual_attr(&self, id: u64) -> Option<FileAttr> {
        // Records of requests that already returned count in the size.
        self.replied.wait();
        let nodes = self.virt.nodes.read();
        let n = nodes.get(&id)?;
        let perm = if self.cfg.journal_group.is_some() {
            0o440
        } else {
            0o400
        };
        if n.kind == VirtualKind::Locks {
            let size = self.locks.list_jsonl().len() as u64;
            return Some(self.vattr_mode(id, size, n.uid, n.gid, perm));
        }
        if n.kind == VirtualKind::Status {
            let size = self.status_json().len() as u64;
            return Some(self.vattr_mode(id, size, n.uid, n.gid, perm));
        }
        if let VirtualKind::Lane { parent, name } = &n.kind {
            // Owner and permission bits of the watched file (who may write it may
            // declare a lane on it), without execute. Size 0: what a read shows
            // depends on the reader (direct I/O reads it anyway).
            let st = self
                .inodes
                .get(*parent)
                .and_then(|p| sys::fstatat(p.fd().ok()?, &sys::cname(name).ok()?).ok())?;
            let perm = (st.st_mode & 0o666) as u16;
            return Some(self.vattr_mode(id, 0, st.st_uid, st.st_gid, perm));
        }
        let j = self.journal.as_ref()?;
        let size = match &n.kind {
            VirtualKind::All => j.view_len(View::All),
            VirtualKind::Journal(f) => j.view_len(View::File(*f)),
            VirtualKind::Salvage(f) => j.salvage_len(*f),
            VirtualKind::Locks | VirtualKind::Status | VirtualKind::Lane { .. } => 0,
        };
        if n.kind == VirtualKind::All {
            return Some(self.vattr_mode(id, size, n.uid, n.gid, perm));
        }
        Some(self.vattr(id, size, n.uid, n.gid))
    }

    /// The `.status` file: one JSON object and a newline: `pid`, `uptime_s`, `source`,
    /// FUSE `requests` by op (`requests_total`, `requests_per_s` since start),
    /// `errors` and `last_error`, `journal` {`next_seq`, `bytes`, `salvage_bytes`}
    /// (null without a journal), `inodes` (table size), `locks` {`held`, `reaped`,
    /// `stolen`}, `restart` (`"supervisor"`, `"fd-store"` or null: what restarts a
    /// crashed daemon on the live mount, and takes `sessionfs upgrade`).
    pub(super) fn status_json(&self) -> Vec<u8> {
        let mut v = self.stats.json();
        let o = v.as_object_mut().expect("an object");
        o.insert("pid".into(), std::process::id().into());
        o.insert(
            "uptime_s".into(),
            ((self.stats.uptime_s() * 10.0).round() / 10.0).into(),
        );
        let source = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            self.inodes
                .root()
                .fd()
                .map_or(-1, |f| std::os::fd::AsRawFd::as_raw_fd(&f))
        ))
        .ok()
        .map(|p| crate::names::encode_os(p.as_os_str()));
        o.insert("source".into(), source.into());
        o.insert(
            "journal".into(),
            self.journal.as_ref().map_or(serde_json::Value::Null, |j| {
                serde_json::json!({
                    "next_seq": j.next_seq(),
                    "bytes": j.view_len(View::All),
                    "salvage_bytes": j.salvage_total(),
                })
            }),
        );
        o.insert("inodes".into(), self.inodes.len().into());
        o.insert("restart".into(), self.cfg.restart.into());
        let (held, reaped, stolen) = self.locks.counts();
        o.insert(
            "locks".into(),
            serde_json::json!({"held": held, "reaped": reaped, "stolen": stolen}),
        );
        let mut out = serde_json::to_vec(&v).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Owner of the whole-mount views (`.journal`, `.locks`): the daemon's user (root,
    /// usually) and the group named with `--journal-group` (then mode 0440), never the
    /// mount root's owner, who may not read other users' files.
    fn mount_view_owner(&self) -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            self.cfg
                .journal_group
                .unwrap_or_else(|| nix::unistd::getegid().as_raw()),
        )
    }

    /// Is virtual node `id` a lane control file (the only writable virtual file)?
    pub(super) fn is_lane_file(&self, id: u64) -> bool {
        matches!(
            self.virt.nodes.read().get(&id).map(|n| &n.kind),
            Some(VirtualKind::Lane { .. })
        )
    }

    /// The watched file of lane control file `id`: its key, by a fresh lookup.
    fn lane_target(&self, id: u64) -> Option<crate::sys::FileKey> {
        let (parent, name) = match &self.virt.nodes.read().get(&id)?.kind {
            VirtualKind::Lane { parent, name } => (*parent, name.clone()),
            _ => return None,
        };
        let p = self.inodes.get(parent)?;
        let st = sys::fstatat(p.fd().ok()?, &sys::cname(&name).ok()?).ok()?;
        Some(crate::sys::FileKey::of(&st))
    }

    /// A write of `data` at `offset` to lane control file `id` by `ctx`: declares the
    /// lane (the bytes up to the first newline, trimmed; empty clears it; a write past
    /// offset 0 continues the declaration) for the caller's process on the watched
    /// file. Errors: ENOENT when the watched file is gone, EINVAL when the name is not
    /// UTF-8, longer than 256 bytes or holds a control character.
    pub(super) fn write_lane(
        &self,
        ctx: &super::Ctx,
        id: u64,
        offset: u64,
        data: &[u8],
    ) -> crate::sys::SysResult<usize> {
        /// Longest lane name, bytes.
        const MAX_LANE: usize = 256;
        let key = self.lane_target(id).ok_or(nix::errno::Errno::ENOENT)?;
        let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let text = std::str::from_utf8(line).map_err(|_| nix::errno::Errno::EINVAL)?;
        let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
        // A later write of the same declaration (`write("cron")`, `write("\n")`)
        // continues it; only a write at offset 0 starts a new one.
        let lane = if offset > 0 {
            if text.trim().is_empty() {
                return Ok(data.len());
            }
            let now = self.lanes.get(&caller, key).unwrap_or_default();
            format!("{now}{text}")
        } else {
            text.to_string()
        };
        let lane = lane.trim();
        if lane.len() > MAX_LANE || lane.chars().any(char::is_control) {
            return Err(nix::errno::Errno::EINVAL);
        }
        self.lanes
            .declare(&caller, key, Some(lane).filter(|l| !l.is_empty()));
        Ok(data.len())
    }

    /// A read of lane control file `id` by `ctx`: the caller's declared lane and a
    /// newline, or nothing.
    pub(super) fn read_lane(&self, ctx: &super::Ctx, id: u64, offset: u64, size: usize) -> Vec<u8> {
        let Some(key) = self.lane_target(id) else {
            return Vec::new();
        };
        let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
        let all = self
            .lanes
            .get(&caller, key)
            .map(|l| format!("{l}\n").into_bytes())
            .unwrap_or_default();
        let from = (offset as usize).min(all.len());
        all[from..(from + size).min(all.len())].to_vec()
    }

    /// Bytes of a virtual node.
    pub(super) fn virtual_read(&self, id: u64, offset: u64, size: usize) -> Option<Vec<u8>> {
        self.replied.wait();
        let kind = self.virt.nodes.read().get(&id)?.kind.clone();
        if matches!(kind, VirtualKind::Locks | VirtualKind::Status) {
            let cached = (offset > 0)
                .then(|| self.virt.rendered.lock().get(&id).cloned())
                .flatten();
            let all = match cached {
                Some(a) => a,
                None => {
                    let a = std::sync::Arc::new(if kind == VirtualKind::Locks {
                        self.locks.list_jsonl()
                    } else {
                        self.status_json()
                    });
                    self.virt.rendered.lock().insert(id, a.clone());
                    a
                }
            };
            let from = (offset as usize).min(all.len());
            return Some(all[from..(from + size).min(all.len())].to_vec());
        }
        let j = self.journal.as_ref()?;
        Some(match &kind {
            VirtualKind::All => j.read(View::All, offset, size),
            VirtualKind::Journal(f) => j.read(View::File(*f), offset, size),
            VirtualKind::Salvage(f) => j.read_salvage(*f, offset, size),
            VirtualKind::Locks | VirtualKind::Status | VirtualKind::Lane { .. } => Vec::new(),
        })
    }

    /// Lookup of a name the backing does not have: is it a virtual file?
    pub(super) fn virtual_lookup(&self, parent: &Inode, name: &OsStr) -> Option<FileAttr> {
        let n = name.as_bytes();
        if parent.id == ROOT_ID && (n == LOCKS_FILE.as_bytes() || n == STATUS_FILE.as_bytes()) {
            let (uid, gid) = self.mount_view_owner();
            let kind = if n == LOCKS_FILE.as_bytes() {
                VirtualKind::Locks
            } else {
                VirtualKind::Status
            };
            let id = self.virt.id(kind, uid, gid);
            return self.virtual_attr(id);
        }
        if n.len() > LANE_SUFFIX.len() && n.ends_with(LANE_SUFFIX.as_bytes()) {
            let base = OsStr::from_bytes(&n[..n.len() - LANE_SUFFIX.len()]);
            let st = sys::cname(base)
                .ok()
                .and_then(|c| sys::fstatat(parent.fd().ok()?, &c).ok())
                .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)?;
            let kind = VirtualKind::Lane {
                parent: parent.id,
                name: base.to_os_string(),
            };
            let id = self.virt.id(kind, st.st_uid, st.st_gid);
            return self.virtual_attr(id);
        }
        let j = self.journal.as_ref()?;
        if parent.id == ROOT_ID && n == MOUNT_JOURNAL.as_bytes() {
            let (uid, gid) = self.mount_view_owner();
            let id = self.virt.id(VirtualKind::All, uid, gid);
            return self.virtual_attr(id);
        }
        let (base, salvage) = base_of(n)?;
        let base = OsStr::from_bytes(base);
        // The file at that name now, else the last file the journal saw there (gone
        // since): its view, owned by that file's owner. Never another file's view
        // under a reused name.
        let here = sys::cname(base).ok().and_then(|c| {
            let pfd = parent.fd().ok()?;
            let (ino, birth_ns, uid) = sys::identity_at(std::os::fd::AsFd::as_fd(&pfd), &c).ok()?;
            let gid = sys::fstatat(std::os::fd::AsFd::as_fd(&pfd), &c)
                .ok()?
                .st_gid;
            Some((FileRef { ino, birth_ns, uid }, gid))
        });
        let (file, gid) = match here {
            Some(h) => h,
            None => {
                let f = j.last_file_at(&self.child_path(parent, base))?;
                let known = if salvage {
                    j.salvage_len(f) > 0
                } else {
                    j.latest_seq(f).is_some()
                };
                if !known {
                    return None;
                }
                // Mode 0400: the group gets nothing.
                (f, 0)
            }
        };
        let uid = file.uid;
        let kind = if salvage {
            VirtualKind::Salvage(file)
        } else {
            VirtualKind::Journal(file)
        };
        let id = self.virt.id(kind, uid, gid);
        self.virtual_attr(id)
    }

    /// Virtual entries listed by readdir in `dir`: `.journal` in the root only.
    pub(super) fn virt_dir_extra(&self, dir: &Inode) -> Vec<DirEntry> {
        if dir.id != ROOT_ID || self.journal.is_none() {
            return Vec::new();
        }
        let c = sys::cname(OsStr::new(MOUNT_JOURNAL)).expect("static name");
        if dir.fd().and_then(|d| sys::fstatat(d, &c)).is_ok() {
            return Vec::new(); // a real `.journal` is already listed
        }
        let (uid, gid) = self.mount_view_owner();
        let id = self.virt.id(VirtualKind::All, uid, gid);
        vec![DirEntry {
            ino: id,
            kind: libc::S_IFREG,
            name: MOUNT_JOURNAL.into(),
            virtual_id: id,
        }]
    }
}
