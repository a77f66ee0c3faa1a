//! Which versions of a model exist on disk, and which of them a version
//! policy wants served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The model file looked for in a version directory (or, in the KServe
/// layout, directly in the base path).
pub const ONNX_FILE: &str = "model.onnx";

/// TensorFlow Serving's `ServableVersionPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions (0 is treated as 1).
    Latest(u32),
    /// Every version on disk.
    All,
    /// Exactly these versions, when present.
    Specific(BTreeSet<i64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions of `on_disk` this policy wants served.
    pub fn aspired(&self, on_disk: &BTreeSet<i64>) -> BTreeSet<i64> {
        match self {
            VersionPolicy::Latest(n) => on_disk.iter().rev().take((*n).max(1) as usize).copied().collect(),
            VersionPolicy::All => on_disk.clone(),
            VersionPolicy::Specific(wanted) => on_disk.intersection(wanted).copied().collect(),
        }
    }
}

/// Where a version's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSource {
    /// The version directory (the base path itself in the KServe layout).
    pub dir: PathBuf,
    /// True when the base path holds the model file directly and this is the
    /// implied version 1.
    pub single_file: bool,
}

/// Lists the versions under `base_path`: every child directory whose name
/// is a non-negative integer (`0007` is 7; other names are ignored), or,
/// when there is none and the base path holds a model file itself, that
/// file as version 1.
///
/// # Errors
/// When the base path cannot be read.
pub fn scan(base_path: &Path) -> std::io::Result<BTreeMap<i64, VersionSource>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(base_path)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|s| s.parse::<i64>().ok()).filter(|v| *v >= 0) else {
            continue;
        };
        // Follow symlinks: a version may be a link to a directory.
        if entry.path().is_dir() {
            out.insert(version, VersionSource { dir: entry.path(), single_file: false });
        }
    }
    let model_file = [ONNX_FILE, crate::savedmodel::meta::SAVED_MODEL_PB, crate::savedmodel::meta::SAVED_MODEL_PBTXT]
        .iter()
        .any(|f| base_path.join(f).is_file());
    if out.is_empty() && model_file {
        out.insert(1, VersionSource { dir: base_path.to_path_buf(), single_file: true });
    }
    Ok(out)
}

/// A cheap fingerprint of a version directory's files (names, sizes and
/// modification times), so a version that failed to load is retried once
/// its files change, and not before.
pub fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let meta = entry.metadata().ok();
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            ));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn policies_pick_versions() {
        let disk = set(&[1, 2, 5, 9]);
        assert_eq!(VersionPolicy::Latest(1).aspired(&disk), set(&[9]));
        assert_eq!(VersionPolicy::Latest(0).aspired(&disk), set(&[9]));
        assert_eq!(VersionPolicy::Latest(2).aspired(&disk), set(&[5, 9]));
        assert_eq!(VersionPolicy::All.aspired(&disk), disk);
        assert_eq!(VersionPolicy::Specific(set(&[2, 3])).aspired(&disk), set(&[2]));
        assert_eq!(VersionPolicy::Latest(1).aspired(&set(&[])), set(&[]));
    }

    #[test]
    fn versions_are_numeric_children_or_a_single_model_file() {
        let dir = std::env::temp_dir().join(format!("ferroserve-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["1", "0007", "tmp-3", "-2", "12abc"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("9"), b"a file, not a version").unwrap();
        assert_eq!(scan(&dir).unwrap().into_keys().collect::<Vec<_>>(), vec![1, 7]);

        let flat = dir.join("kserve");
        std::fs::create_dir_all(&flat).unwrap();
        assert!(scan(&flat).unwrap().is_empty());
        std::fs::write(flat.join(ONNX_FILE), b"x").unwrap();
        let found = scan(&flat).unwrap();
        assert_eq!(found[&1], VersionSource { dir: flat.clone(), single_file: true });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
