//! Safe extraction of package archives (`.tar.gz`, `.tgz`, `.tar.zst`) into an empty staging
//! directory.
//!
//! An archive comes from the manager and is unpacked by an agent that usually runs as root, so
//! nothing in it is trusted. The whole archive is refused, naming the member and the reason, when
//! any member:
//! - has an absolute path or a `..` component, or would replace the staging root itself;
//! - is a symlink whose target is absolute or resolves outside the staging root (checked again
//!   after extraction, following chains of symlinks through the extracted tree);
//! - is a hardlink to something that is not a regular file already extracted inside the root;
//! - is a device, a fifo, a sparse file or any other type we do not know;
//! - would be written through a symlink or over a directory.
//!
//! Bombs are stopped by limits on the bytes of file content, the number of entries, and the
//! decompressed stream as a whole. The tar reader runs in raw mode so that GNU long names and pax
//! headers are read here with their own small size cap instead of being buffered whole.
//!
//! Nothing is written outside `dest`: parents are created one component at a time and checked to
//! be real directories, and files are opened with `O_NOFOLLOW | O_EXCL`. On error the caller
//! deletes `dest`; the deployed tree is never touched by extraction.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use op_proto::package::PackageKind;
use tar::EntryType;

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content.
    pub max_bytes: u64,
    /// Members of any kind.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 30,
            max_entries: 100_000,
        }
    }
}

/// Longest GNU long name, long link or pax header accepted.
const MAX_META: u64 = 64 << 10;
/// Symlinks followed while checking where one leads.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("member {member:?} refused: {reason}")]
    Refused { member: String, reason: String },
    #[error("the archive unpacks to more than {limit} bytes (a decompression bomb?)")]
    TooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the archive is damaged or not a {kind}: {message}")]
    Corrupt { kind: &'static str, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Names of the top-level entries, sorted.
    pub top_level: Vec<OsString>,
    pub files: u64,
    pub bytes: u64,
}

fn refused(member: &[u8], reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused {
        member: String::from_utf8_lossy(member).into_owned(),
        reason: reason.into(),
    }
}

/// Counts decompressed bytes and fails past a limit, so that headers and metadata cannot grow
/// without bound either.
struct Bounded<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            self.hit.set(true);
            return Err(io::Error::other("decompressed size limit reached"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The member path as components below the root; empty = the root itself.
fn member_components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    let raw = trim_nuls(raw);
    if raw.is_empty() {
        return Err("has an empty name".into());
    }
    if raw.contains(&0) {
        return Err("has a NUL byte in its name".into());
    }
    if raw.starts_with(b"/") {
        return Err("has an absolute path".into());
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("has a '..' component".into()),
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

fn trim_nuls(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &raw[..end]
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(c);
    }
    p
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `parts` under `root` as real directories, refusing to pass through anything else.
fn ensure_dirs(root: &Path, parts: &[OsString], member: &[u8]) -> Result<(), ArchiveError> {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(member, "would be written through a symlink"));
            }
            Ok(_) => {
                return Err(refused(
                    member,
                    "needs a directory where the archive put a file",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(io_err(&p))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err(&p))?;
            }
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(())
}

/// Makes room for a non-directory member at `path`: a later member of the same name wins, as in
/// tar, but a directory is never replaced by something else.
fn clear_slot(path: &Path, member: &[u8]) -> Result<(), ArchiveError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(refused(member, "would replace a directory")),
        Ok(_) => std::fs::remove_file(path).map_err(io_err(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// True when the symlink at `link` (components below `root`) leads outside `root`, following
/// every symlink on the way through the extracted tree.
fn escapes(root: &Path, link: &[OsString]) -> Result<bool, ArchiveError> {
    let mut stack: Vec<OsString> = link[..link.len().saturating_sub(1)].to_vec();
    let first = std::fs::read_link(join(root, link)).map_err(io_err(&join(root, link)))?;
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    if first.is_absolute() {
        return Ok(true);
    }
    pending.extend(
        first
            .as_os_str()
            .as_bytes()
            .split(|b| *b == b'/')
            .map(<[u8]>::to_vec),
    );
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Ok(true);
                }
                continue;
            }
            _ => {}
        }
        stack.push(OsStr::from_bytes(&c).to_os_string());
        let here = join(root, &stack);
        let Ok(meta) = std::fs::symlink_metadata(&here) else {
            // Nothing there (a dangling link): the rest resolves by name, still within bounds.
            continue;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_HOPS {
                return Ok(true);
            }
            let target = std::fs::read_link(&here).map_err(io_err(&here))?;
            if target.is_absolute() {
                return Ok(true);
            }
            stack.pop();
            for part in target.as_os_str().as_bytes().rsplit(|b| *b == b'/') {
                pending.push_front(part.to_vec());
            }
        }
    }
    Ok(false)
}

/// True when `target` (a path relative to the link's directory `parent`) stays within the root
/// by name alone; the full check with real resolution runs after extraction.
fn stays_inside_by_name(parent: &[OsString], target: &[u8]) -> bool {
    let mut depth = parent.len() as i64;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn read_meta(entry: &mut impl Read, size: u64, member: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    if size > MAX_META {
        return Err(refused(
            member,
            format!(
                "carries {size} bytes of names or pax headers; at most {MAX_META} are accepted"
            ),
        ));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| ArchiveError::Corrupt {
            kind: "tar archive",
            message: e.to_string(),
        })?;
    Ok(buf)
}

/// Unpacks `reader` (the compressed archive) into `dest`, an empty directory.
pub fn extract(
    reader: impl Read,
    kind: PackageKind,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ArchiveError> {
    let (label, decoder): (&'static str, Box<dyn Read + '_>) = match kind {
        PackageKind::TarGz => (
            "gzip-compressed tar archive",
            Box::new(flate2::read::MultiGzDecoder::new(reader)),
        ),
        PackageKind::TarZst => {
            let d =
                zstd::stream::read::Decoder::new(reader).map_err(|e| ArchiveError::Corrupt {
                    kind: "zstd-compressed tar archive",
                    message: e.to_string(),
                })?;
            ("zstd-compressed tar archive", Box::new(d))
        }
        PackageKind::File => {
            return Err(ArchiveError::Corrupt {
                kind: "tar archive",
                message: "a plain file is not unpacked".into(),
            });
        }
    };
    let hit = Rc::new(Cell::new(false));
    // Content plus, per entry, a header and a little metadata: anything beyond is not a tar.
    let stream_limit = limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_add(2).saturating_mul(2048));
    let bounded = Bounded {
        inner: decoder,
        left: stream_limit,
        hit: hit.clone(),
    };
    let result = unpack(bounded, label, dest, limits);
    if hit.get() {
        return Err(ArchiveError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    result
}

fn unpack(
    reader: impl Read,
    label: &'static str,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ArchiveError> {
    let corrupt = |e: io::Error| ArchiveError::Corrupt {
        kind: label,
        message: e.to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    // Raw entries: GNU long names and pax headers are read here, under MAX_META.
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    let mut count: u64 = 0;
    let mut bytes: u64 = 0;
    let mut files: u64 = 0;
    let mut top: BTreeSet<OsString> = BTreeSet::new();
    let mut symlinks: Vec<Vec<OsString>> = Vec::new();
    // Directory modes are applied at the end, so a read-only directory can still be filled.
    let mut dir_modes: BTreeMap<Vec<OsString>, u32> = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let header_path = entry.path_bytes().into_owned();
        let size = header.entry_size().map_err(corrupt)?;
        match kind {
            EntryType::GNULongName => {
                long_name = Some(read_meta(&mut entry, size, &header_path)?);
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(read_meta(&mut entry, size, &header_path)?);
                continue;
            }
            EntryType::XHeader => {
                pax = Some(read_meta(&mut entry, size, &header_path)?);
                continue;
            }
            EntryType::XGlobalHeader => {
                // Global defaults (comments, times): nothing we use.
                read_meta(&mut entry, size, &header_path)?;
                continue;
            }
            _ => {}
        }
        // The member's real name and link target, from the metadata that preceded it.
        let mut path_bytes = long_name.take().unwrap_or(header_path);
        let mut link_bytes = long_link
            .take()
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        if let Some(ext) = pax.take() {
            for e in tar::PaxExtensions::new(&ext) {
                let e = e.map_err(corrupt)?;
                match e.key_bytes() {
                    b"path" => path_bytes = e.value_bytes().to_vec(),
                    b"linkpath" => link_bytes = Some(e.value_bytes().to_vec()),
                    // A pax size overrides the header's; we read by the header, so refuse
                    // rather than misread (it only appears for files beyond 8 GiB).
                    b"size" => {
                        return Err(refused(
                            &path_bytes,
                            "has a pax size (files beyond 8 GiB are not accepted)",
                        ));
                    }
                    _ => {}
                }
            }
        }
        let member = trim_nuls(&path_bytes).to_vec();
        let parts = member_components(&member).map_err(|r| refused(&member, r))?;
        if let Some(first) = parts.first() {
            top.insert(first.clone());
        }
        let path = join(dest, &parts);
        let parent = &parts[..parts.len().saturating_sub(1)];
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => {
                ensure_dirs(dest, &parts, &member)?;
                if !parts.is_empty() {
                    dir_modes.insert(parts.clone(), mode | 0o700);
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                if parts.is_empty() {
                    return Err(refused(&member, "would overwrite the staging root"));
                }
                bytes = bytes.saturating_add(size);
                if bytes > limits.max_bytes {
                    return Err(ArchiveError::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
                ensure_dirs(dest, parent, &member)?;
                clear_slot(&path, &member)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(corrupt)?;
                if copied != size {
                    return Err(ArchiveError::Corrupt {
                        kind: label,
                        message: format!(
                            "member {:?} ends after {copied} of {size} bytes",
                            String::from_utf8_lossy(&member)
                        ),
                    });
                }
                if let Ok(mtime) = header.mtime() {
                    let _ = file.set_modified(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime),
                    );
                }
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io_err(&path))?;
                files += 1;
            }
            EntryType::Symlink => {
                if parts.is_empty() {
                    return Err(refused(&member, "would overwrite the staging root"));
                }
                let target = link_bytes.unwrap_or_default();
                let target = trim_nuls(&target);
                if target.is_empty() || target.contains(&0) {
                    return Err(refused(
                        &member,
                        "is a symlink with an empty or invalid target",
                    ));
                }
                if target.starts_with(b"/") {
                    return Err(refused(
                        &member,
                        format!(
                            "is a symlink to the absolute path {:?}",
                            String::from_utf8_lossy(target)
                        ),
                    ));
                }
                if !stays_inside_by_name(parent, target) {
                    return Err(refused(
                        &member,
                        format!(
                            "is a symlink to {:?}, outside the package",
                            String::from_utf8_lossy(target)
                        ),
                    ));
                }
                ensure_dirs(dest, parent, &member)?;
                clear_slot(&path, &member)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                    .map_err(io_err(&path))?;
                symlinks.push(parts.clone());
            }
            EntryType::Link => {
                if parts.is_empty() {
                    return Err(refused(&member, "would overwrite the staging root"));
                }
                let target = link_bytes.unwrap_or_default();
                let target_parts = member_components(&target)
                    .map_err(|r| refused(&member, format!("is a hardlink whose target {r}")))?;
                // The target must be a regular file extracted before, reached through real
                // directories only.
                let mut walk = dest.to_path_buf();
                for (i, c) in target_parts.iter().enumerate() {
                    walk.push(c);
                    let meta = std::fs::symlink_metadata(&walk).map_err(|_| {
                        refused(
                            &member,
                            format!(
                                "is a hardlink to {:?}, which is not in the package",
                                String::from_utf8_lossy(&target)
                            ),
                        )
                    })?;
                    let last = i + 1 == target_parts.len();
                    if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
                        return Err(refused(
                            &member,
                            format!(
                                "is a hardlink to {:?}, which is not a regular file of the package",
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                }
                if target_parts.is_empty() {
                    return Err(refused(&member, "is a hardlink to the staging root"));
                }
                ensure_dirs(dest, parent, &member)?;
                if target_parts == parts {
                    continue;
                }
                clear_slot(&path, &member)?;
                std::fs::hard_link(&walk, &path).map_err(io_err(&path))?;
                files += 1;
            }
            EntryType::Char | EntryType::Block => {
                return Err(refused(&member, "is a device node"));
            }
            EntryType::Fifo => return Err(refused(&member, "is a fifo")),
            EntryType::GNUSparse => return Err(refused(&member, "is a sparse file")),
            other => {
                return Err(refused(
                    &member,
                    format!(
                        "has an unsupported member type {:?}",
                        other.as_byte() as char
                    ),
                ));
            }
        }
    }
    if long_name.is_some() || long_link.is_some() || pax.is_some() {
        return Err(ArchiveError::Corrupt {
            kind: label,
            message: "the archive ends with a header that describes no member".into(),
        });
    }
    // By name every link stayed inside; now follow the links that point at links.
    for link in &symlinks {
        if std::fs::symlink_metadata(join(dest, link)).is_ok_and(|m| m.file_type().is_symlink())
            && escapes(dest, link)?
        {
            let name: Vec<u8> = link
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect::<Vec<_>>()
                .join(&b'/');
            return Err(refused(
                &name,
                "is a symlink that resolves outside the package",
            ));
        }
    }
    for (parts, mode) in dir_modes.iter().rev() {
        let p = join(dest, parts);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(io_err(&p))?;
    }
    Ok(Unpacked {
        top_level: top.into_iter().collect(),
        files,
        bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar member written byte for byte, so tests can say what a hostile tool would.
    pub(crate) struct Raw<'a> {
        pub name: &'a [u8],
        pub kind: EntryType,
        pub data: &'a [u8],
        pub link: &'a [u8],
        pub mode: u32,
    }

    pub(crate) fn raw(name: &'static str, kind: EntryType) -> Raw<'static> {
        Raw {
            name: name.as_bytes(),
            kind,
            data: b"",
            link: b"",
            mode: if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            },
        }
    }

    pub(crate) fn tar_of(members: &[Raw<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..m.name.len()].copy_from_slice(m.name);
                gnu.linkname[..m.link.len()].copy_from_slice(m.link);
            }
            h.set_entry_type(m.kind);
            h.set_size(m.data.len() as u64);
            h.set_mode(m.mode);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, m.data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub(crate) fn gz(tar: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(tar).unwrap();
        e.finish().unwrap()
    }

    /// Extracts into `parent/stage`; asserts nothing else appeared in `parent`.
    fn unpack_into(
        archive: &[u8],
        kind: PackageKind,
        limits: &Limits,
    ) -> (tempfile::TempDir, Result<Unpacked, ArchiveError>) {
        let parent = tempfile::tempdir().unwrap();
        let stage = parent.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(parent.path().join("sentinel"), "untouched").unwrap();
        let r = extract(archive, kind, &stage, limits);
        let mut names: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["sentinel", "stage"],
            "nothing is written beside the staging dir"
        );
        assert_eq!(
            std::fs::read_to_string(parent.path().join("sentinel")).unwrap(),
            "untouched"
        );
        (parent, r)
    }

    fn refusal(members: &[Raw<'_>]) -> String {
        let (_dir, r) = unpack_into(
            &gz(&tar_of(members)),
            PackageKind::TarGz,
            &Limits::default(),
        );
        match r {
            Err(e) => e.to_string(),
            Ok(u) => panic!("accepted: {u:?}"),
        }
    }

    #[test]
    fn a_normal_archive_unpacks_with_modes_links_and_long_names() {
        let long = format!("proj/{}/deep.txt", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: EntryType, data: &[u8], link: Option<&str>, mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("proj/", EntryType::Directory, b"", None, 0o755);
        add(
            "proj/run.sh",
            EntryType::Regular,
            b"#!/bin/sh\necho hi\n",
            None,
            0o755,
        );
        add(
            "proj/lib/util.py",
            EntryType::Regular,
            b"X = 1\n",
            None,
            0o644,
        );
        add(
            "proj/current",
            EntryType::Symlink,
            b"",
            Some("lib/util.py"),
            0o777,
        );
        add(
            "proj/same.py",
            EntryType::Link,
            b"",
            Some("proj/lib/util.py"),
            0o644,
        );
        add(&long, EntryType::Regular, b"deep", None, 0o600);
        let tar = b.into_inner().unwrap();
        let (dir, r) = unpack_into(&gz(&tar), PackageKind::TarGz, &Limits::default());
        let u = r.unwrap();
        assert_eq!(u.top_level, [OsString::from("proj")]);
        assert_eq!((u.files, u.bytes), (4, 18 + 6 + 4));
        let root = dir.path().join("stage/proj");
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("run.sh"), mode("lib/util.py")), (0o755, 0o644));
        assert_eq!(
            std::fs::read_to_string(root.join("current")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("same.py")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stage").join(&long)).unwrap(),
            "deep"
        );
        // And the same content as .tar.zst.
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let (_dir, r) = unpack_into(&zst, PackageKind::TarZst, &Limits::default());
        assert_eq!(r.unwrap().files, 4);
    }

    #[test]
    fn absolute_paths_and_dotdot_are_refused() {
        let mut m = raw("/etc/evil", EntryType::Regular);
        m.data = b"x";
        assert!(refusal(&[m]).contains("absolute path"));
        let mut m = raw("ok/../../evil", EntryType::Regular);
        m.data = b"x";
        assert!(refusal(&[m]).contains("'..'"));
        let mut m = raw("../evil", EntryType::Directory);
        m.data = b"";
        assert!(refusal(&[m]).contains("'..'"));
    }

    #[test]
    fn a_symlink_out_and_a_file_through_it_are_refused() {
        let mut link = raw("etc", EntryType::Symlink);
        link.link = b"/etc";
        let mut file = raw("etc/passwd", EntryType::Regular);
        file.data = b"root::0:0::/:/bin/sh\n";
        let msg = refusal(&[link, file]);
        assert!(msg.contains("absolute path \"/etc\""), "{msg}");
        let mut link = raw("a/up", EntryType::Symlink);
        link.link = b"../../outside";
        assert!(refusal(&[link]).contains("outside the package"));
        // Inside the package by name, but written through: refused too.
        let dir = raw("real/", EntryType::Directory);
        let mut link = raw("alias", EntryType::Symlink);
        link.link = b"real";
        let mut file = raw("alias/x", EntryType::Regular);
        file.data = b"x";
        assert!(refusal(&[dir, link, file]).contains("through a symlink"));
    }

    #[test]
    fn symlink_chains_that_resolve_outside_are_refused() {
        // `d -> .` is harmless alone; `e -> d/..` looks like the root by name but resolves to
        // the parent of the root.
        let mut d = raw("d", EntryType::Symlink);
        d.link = b".";
        let mut e = raw("e", EntryType::Symlink);
        e.link = b"d/..";
        let msg = refusal(&[d, e]);
        assert!(msg.contains("resolves outside"), "{msg}");
        let mut a = raw("a", EntryType::Symlink);
        a.link = b"b";
        let mut b = raw("b", EntryType::Symlink);
        b.link = b"a";
        assert!(
            refusal(&[a, b]).contains("resolves outside"),
            "a loop is refused"
        );
    }

    #[test]
    fn hardlinks_must_name_a_file_of_the_package() {
        let mut h = raw("passwd", EntryType::Link);
        h.link = b"/etc/passwd";
        assert!(refusal(&[h]).contains("absolute path"));
        let mut h = raw("passwd", EntryType::Link);
        h.link = b"../../etc/passwd";
        assert!(refusal(&[h]).contains("'..'"));
        let mut h = raw("x", EntryType::Link);
        h.link = b"missing";
        assert!(refusal(&[h]).contains("not in the package"));
        let mut s = raw("s", EntryType::Symlink);
        s.link = b"t";
        let mut t = raw("t", EntryType::Regular);
        t.data = b"t";
        let mut h = raw("h", EntryType::Link);
        h.link = b"s";
        assert!(refusal(&[t, s, h]).contains("not a regular file"));
    }

    #[test]
    fn devices_fifos_and_the_root_itself_are_refused() {
        assert!(refusal(&[raw("null", EntryType::Char)]).contains("device node"));
        assert!(refusal(&[raw("sda", EntryType::Block)]).contains("device node"));
        assert!(refusal(&[raw("pipe", EntryType::Fifo)]).contains("fifo"));
        let mut root = raw("./", EntryType::Regular);
        root.data = b"x";
        assert!(refusal(&[root]).contains("staging root"));
        let mut file = raw("f", EntryType::Regular);
        file.data = b"x";
        let d = raw("d/", EntryType::Directory);
        let mut over = raw("d", EntryType::Regular);
        over.data = b"x";
        assert!(refusal(&[file, d, over]).contains("replace a directory"));
    }

    #[test]
    fn bombs_are_stopped_by_the_limits() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 50,
        };
        // One member declaring more than the limit.
        let big = vec![0u8; (1 << 20) + 1];
        let mut m = raw("big", EntryType::Regular);
        m.data = &big;
        let (_d, r) = unpack_into(&gz(&tar_of(&[m])), PackageKind::TarGz, &limits);
        assert!(matches!(r, Err(ArchiveError::TooLarge { .. })), "{r:?}");
        // Many small members adding up.
        let chunk = vec![0u8; 100_000];
        let many: Vec<Raw<'_>> = (0..11)
            .map(|i| Raw {
                name: Box::leak(format!("f{i}").into_bytes().into_boxed_slice()),
                kind: EntryType::Regular,
                data: &chunk,
                link: b"",
                mode: 0o644,
            })
            .collect();
        let (_d, r) = unpack_into(&gz(&tar_of(&many)), PackageKind::TarGz, &limits);
        assert!(matches!(r, Err(ArchiveError::TooLarge { .. })), "{r:?}");
        // Too many entries.
        let dirs: Vec<Raw<'_>> = (0..51)
            .map(|i| Raw {
                name: Box::leak(format!("d{i}/").into_bytes().into_boxed_slice()),
                kind: EntryType::Directory,
                data: b"",
                link: b"",
                mode: 0o755,
            })
            .collect();
        let (_d, r) = unpack_into(&gz(&tar_of(&dirs)), PackageKind::TarGz, &limits);
        assert!(
            matches!(r, Err(ArchiveError::TooManyEntries { limit: 50 })),
            "{r:?}"
        );
        // A long-name header far beyond any real name.
        let name = vec![b'n'; 100_000];
        let mut m = raw("././@LongLink", EntryType::GNULongName);
        m.data = &name;
        let msg = refusal(&[m]);
        assert!(msg.contains("names or pax headers"), "{msg}");
        // Garbage that is not gzip at all.
        let (_d, r) = unpack_into(b"not an archive", PackageKind::TarGz, &limits);
        assert!(matches!(r, Err(ArchiveError::Corrupt { .. })), "{r:?}");
    }

    #[test]
    fn names_and_links_by_name() {
        assert_eq!(
            member_components(b"./a//b/").unwrap(),
            [OsString::from("a"), OsString::from("b")]
        );
        assert!(member_components(b"./").unwrap().is_empty());
        assert!(member_components(b"a/../b").is_err());
        assert!(member_components(b"/a").is_err());
        assert!(member_components(b"a\0b").is_err());
        let parent = [OsString::from("x"), OsString::from("y")];
        assert!(stays_inside_by_name(&parent, b"../z"));
        assert!(stays_inside_by_name(&parent, b"../../z"));
        assert!(!stays_inside_by_name(&parent, b"../../../z"));
        assert!(!stays_inside_by_name(&[], b".."));
    }
}
