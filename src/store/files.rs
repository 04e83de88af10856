//! The data directory's files as the file system sees them: private
//! permissions (directories 0700, files 0600), a lock file opened without
//! following symlinks, and the directory fsyncs that make a new store's
//! *names* durable — LMDB syncs its files' contents, never the directory
//! that lists them, so a power cut soon after a store was created could
//! lose `data.mdb` itself and bring the node back empty (handing out ID 1
//! again).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::warn;

/// Mode of the directories ticketd creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files ticketd (and LMDB, on its behalf) creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700; returns the
/// directories it created, outermost first (for [`sync_created`]).
///
/// # Errors
/// The first creation that failed.
pub fn create_private_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    missing.reverse();
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    if let Ok(meta) = fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
        && missing.is_empty()
    {
        warn!(
            "data directory {} is readable by others (mode {:o}); chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(missing)
}

/// fsyncs each created directory and the one that holds it, so that the
/// new names survive a power cut.
///
/// # Errors
/// The first fsync that failed.
pub fn sync_created(created: &[PathBuf]) -> io::Result<()> {
    let mut synced: Vec<PathBuf> = Vec::new();
    for dir in created {
        for path in [dir.parent().map(Path::to_path_buf), Some(dir.clone())]
            .into_iter()
            .flatten()
        {
            let path = if path.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                path
            };
            if !synced.contains(&path) {
                sync_dir(&path)?;
                synced.push(path);
            }
        }
    }
    Ok(())
}

/// fsyncs a directory: its entries (names of files created, renamed or
/// removed in it) reach the disk.
///
/// # Errors
/// Opening or syncing failed.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens (creating 0600) `path` for writing, refusing a symlink there.
///
/// # Errors
/// The open failed (`ELOOP` for a symlink).
pub fn open_private_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ticketd-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_directories_are_private_and_listed_outermost_first() {
        let root = temp("create");
        let dir = root.join("a").join("b");
        let created = create_private_dirs(&dir).unwrap();
        assert_eq!(created, vec![root.clone(), root.join("a"), dir.clone()]);
        for path in &created {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, DIR_MODE, "{}", path.display());
        }
        assert!(create_private_dirs(&dir).unwrap().is_empty(), "nothing new");
        sync_created(&created).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_lock_file_is_private_and_never_a_symlink() {
        let root = temp("lock");
        create_private_dirs(&root).unwrap();
        let path = root.join("ticketd.lock");
        drop(open_private_no_follow(&path).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        let target = root.join("elsewhere");
        let link = root.join("link.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_private_no_follow(&link).is_err());
        assert!(!target.exists(), "the symlink's target was created");
        assert!(free_bytes(&root).is_some_and(|b| b > 0));
        fs::remove_dir_all(&root).unwrap();
    }
}
