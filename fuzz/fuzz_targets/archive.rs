//! Any bytes as a package archive: extraction never panics, never writes outside the staging
//! directory, and never leaves a symlink there that resolves outside it.
//!
//! The first byte picks how the rest is fed: as a tar stored in gzip without compression (so the
//! fuzzer works on tar structure directly), as gzip bytes, or as zstd bytes.
#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use op_agent::deploy::archive::{Limits, extract};
use op_proto::package::PackageKind;

/// `parent/stage` is the staging dir; `parent` must only ever contain `stage`.
fn parent() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("op-fuzz-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    })
}

fn check_links(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            if let Ok(real) = std::fs::canonicalize(&path) {
                assert!(
                    real.starts_with(root),
                    "{} resolves to {} outside the staging dir",
                    path.display(),
                    real.display()
                );
            }
        } else if meta.is_dir() {
            check_links(root, &path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parent = parent();
    let stage = parent.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir(&stage).unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let (bytes, kind) = match mode % 3 {
        0 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
            e.write_all(rest).unwrap();
            (e.finish().unwrap(), PackageKind::TarGz)
        }
        1 => (rest.to_vec(), PackageKind::TarGz),
        _ => (rest.to_vec(), PackageKind::TarZst),
    };
    let result = extract(&bytes[..], kind, &stage, &limits);
    let names: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["stage"], "something was written beside the staging dir");
    if result.is_ok() {
        let root = std::fs::canonicalize(&stage).unwrap();
        check_links(&root, &root);
    }
});
