//! Virtual files: `<mount>/.journal` (whole mount), `<dir>/<name>.journal` (one file's
//! journal), `<dir>/<name>.salvage` (its removed transcript lines) and `<mount>/.locks`
//! (the current session locks; reachable by lookup, not listed).
//!
//! They are read-only, mode 0400, owned by the watched file's owner (the journal holds
//! process details), served with attr TTL 0 and direct I/O so that `tail -f` sees them
//! grow. `.journal` is listed in the root; per-file ones are reachable by lookup only.
//! A real backing file of the same name always wins.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};
use parking_lot::{Mutex, RwLock};

use super::SessionFs;
use super::handle::DirEntry;
use super::inode::{Inode, ROOT_ID, VIRTUAL_BASE};
use crate::journal::View;
use crate::sys;

/// Name of the whole-mount journal in the mount root.
pub const MOUNT_JOURNAL: &str = ".journal";
/// Name of the lock list in the mount root (`sessionfs locks` reads it).
pub const LOCKS_FILE: &str = ".locks";
/// Suffix of per-file journals.
pub const JOURNAL_SUFFIX: &str = ".journal";
/// Suffix of per-file salvage stores.
pub const SALVAGE_SUFFIX: &str = ".salvage";

/// What a virtual node shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VirtualKind {
    /// The whole mount's journal.
    All,
    /// The journal of one path (relative to the mount).
    Journal(String),
    /// The salvage store of one path.
    Salvage(String),
    /// The current session locks, one JSON object per line.
    Locks,
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
}

impl VirtualFiles {
    /// Empty table.
    pub fn new() -> Self {
        Self {
            nodes: RwLock::new(HashMap::new()),
            ids: RwLock::new(HashMap::new()),
            next: AtomicU64::new(VIRTUAL_BASE + 1),
            warned: Mutex::new(HashSet::new()),
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
                    .is_some_and(|c| sys::fstatat(parent.fd(), &c).is_ok())
            });
        if shadows {
            let path = self.child_path(parent, name);
            if self.virt.first_warning(&path) {
                tracing::warn!(path = %path, "a backing file shadows a sessionfs virtual file; the backing file is served");
            }
        }
    }

    fn vattr(&self, id: u64, size: u64, uid: u32, gid: u32) -> FileAttr {
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
            perm: 0o400,
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
        if n.kind == VirtualKind::Locks {
            let size = self.locks.list_jsonl().len() as u64;
            return Some(self.vattr(id, size, n.uid, n.gid));
        }
        let j = self.journal.as_ref()?;
        let size = match &n.kind {
            VirtualKind::All => j.view_len(View::All),
            VirtualKind::Journal(p) => j.view_len(View::Path(p)),
            VirtualKind::Salvage(p) => j.salvage_len(p),
            VirtualKind::Locks => 0,
        };
        Some(self.vattr(id, size, n.uid, n.gid))
    }

    /// Bytes of a virtual node.
    pub(super) fn virtual_read(&self, id: u64, offset: u64, size: usize) -> Option<Vec<u8>> {
        self.replied.wait();
        let kind = self.virt.nodes.read().get(&id)?.kind.clone();
        if kind == VirtualKind::Locks {
            let all = self.locks.list_jsonl();
            let from = (offset as usize).min(all.len());
            return Some(all[from..(from + size).min(all.len())].to_vec());
        }
        let j = self.journal.as_ref()?;
        Some(match &kind {
            VirtualKind::All => j.read(View::All, offset, size),
            VirtualKind::Journal(p) => j.read(View::Path(p), offset, size),
            VirtualKind::Salvage(p) => j.read_salvage(p, offset, size),
            VirtualKind::Locks => Vec::new(),
        })
    }

    /// Lookup of a name the backing does not have: is it a virtual file?
    pub(super) fn virtual_lookup(&self, parent: &Inode, name: &OsStr) -> Option<FileAttr> {
        let n = name.as_bytes();
        let root_st = sys::fstat(self.inodes.root().fd()).ok()?;
        if parent.id == ROOT_ID && n == LOCKS_FILE.as_bytes() {
            let id = self
                .virt
                .id(VirtualKind::Locks, root_st.st_uid, root_st.st_gid);
            return self.virtual_attr(id);
        }
        let j = self.journal.as_ref()?;
        if parent.id == ROOT_ID && n == MOUNT_JOURNAL.as_bytes() {
            let id = self
                .virt
                .id(VirtualKind::All, root_st.st_uid, root_st.st_gid);
            return self.virtual_attr(id);
        }
        let (base, salvage) = base_of(n)?;
        let base = OsStr::from_bytes(base);
        let path = self.child_path(parent, base);
        // Owner: the watched file's, else the mount root's.
        let owner = sys::cname(base)
            .ok()
            .and_then(|c| sys::fstatat(parent.fd(), &c).ok())
            .map(|st| (st.st_uid, st.st_gid));
        let known = owner.is_some()
            || if salvage {
                j.salvage_len(&path) > 0
            } else {
                j.latest_seq(&path).is_some()
            };
        if !known {
            return None;
        }
        let (uid, gid) = owner.unwrap_or((root_st.st_uid, root_st.st_gid));
        let kind = if salvage {
            VirtualKind::Salvage(path)
        } else {
            VirtualKind::Journal(path)
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
        if sys::fstatat(dir.fd(), &c).is_ok() {
            return Vec::new(); // a real `.journal` is already listed
        }
        let Ok(st) = sys::fstat(dir.fd.as_fd()) else {
            return Vec::new();
        };
        let id = self.virt.id(VirtualKind::All, st.st_uid, st.st_gid);
        vec![DirEntry {
            ino: id,
            kind: libc::S_IFREG,
            name: MOUNT_JOURNAL.into(),
            virtual_id: id,
        }]
    }
}
