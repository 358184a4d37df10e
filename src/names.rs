//! The journal's lossless spelling of bytes that may not be UTF-8: file names, paths,
//! symlink targets, xattr names and process names (`comm`, `exe`, `cmdline`).
//!
//! Linux names are bytes; JSON strings are Unicode. A lossy conversion would give
//! `r\xff.jsonl` and `r\u{FFFD}.jsonl` the same spelling, so one could read as the
//! other. The spelling here is a bijection:
//! - valid UTF-8 is kept as is, except the backslash, which is doubled (`\\`);
//! - every byte that is not part of valid UTF-8 is written `\xHH` (two lowercase hex
//!   digits).
//!
//! So a name without backslashes and in UTF-8 (every name OpenClaw writes) reads the
//! same in the journal as on disk, and the bytes can be read back exactly (the tests
//! decode every spelling).

/// The lossless spelling of `bytes` (see the module doc). Allocation-free check first:
/// the common case (UTF-8, no backslash) is one copy.
pub fn encode(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.contains('\\')
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes a spelling made by [`encode`] stands for (a journal `path` back to the
/// name on disk). A backslash not followed by `\\` or `xHH` is kept as a byte.
pub fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x')
                && let Some(h) = b.get(i + 2..i + 4)
                && let Ok(v) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("-"), 16)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// [`encode`] of an `OsStr` (a file name or path).
pub fn encode_os(s: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    encode(s.as_bytes())
}

/// A `/proc` text file (`stat`, `status`, `comm`, `cgroup`) read as bytes and spelled
/// with [`encode`]: a process name (`comm`, set with `PR_SET_NAME`) may be any bytes,
/// and `read_to_string` would fail on the whole file. `None` when it cannot be read
/// (the process is gone).
pub fn read_proc(path: impl AsRef<std::path::Path>) -> Option<String> {
    std::fs::read(path).ok().map(|b| encode(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_are_kept() {
        assert_eq!(encode(b"agents/main/t.jsonl"), "agents/main/t.jsonl");
        assert_eq!(encode("r\u{FFFD}.jsonl".as_bytes()), "r\u{FFFD}.jsonl");
    }

    #[test]
    fn invalid_bytes_and_backslashes_are_escaped() {
        assert_eq!(encode(b"r\xff.jsonl"), "r\\xff.jsonl");
        assert_eq!(encode(b"a\\b"), "a\\\\b");
        // A name that spells an escape literally does not collide with the byte.
        assert_ne!(encode(b"r\\xff.jsonl"), encode(b"r\xff.jsonl"));
        assert_ne!(encode(b"r\xff.jsonl"), encode("r\u{FFFD}.jsonl".as_bytes()));
    }

    #[test]
    fn round_trip() {
        let cases: [&[u8]; 7] = [
            b"",
            b"plain",
            b"r\xff.jsonl",
            b"\\x41",
            b"\xc3",
            b"mixed \xe2\x82 \xe2\x82\xac \\ \xff\xfe",
            "caf\u{e9}".as_bytes(),
        ];
        for c in cases {
            assert_eq!(decode(&encode(c)), c, "{c:?}");
        }
        // Every single byte, and pairs across the ASCII/non-ASCII boundary.
        for a in 0..=255u8 {
            for b in [0u8, b'\\', b'x', 0x80, 0xc3, 0xff] {
                let v = [a, b];
                assert_eq!(decode(&encode(&v)), v);
            }
        }
    }
}
