//! Segment files: naming, creation (preallocated when the disk allows,
//! header and opening records written, durable in the directory before the
//! file appears under its name), positional reads and writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{STAMP_AT, Stamp};

/// `<dir>/<id as 20 digits>.seg`: names sort in id order.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Segment ids present in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(".seg")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Removes segments whose creation a crash interrupted (`*.tmp`: never
/// given a segment's name, so nothing in them was ever confirmed).
pub(crate) fn remove_unfinished(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".tmp"))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Makes a directory's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an error means the file system (or the user's quota) is full.
pub(crate) fn no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The smallest preallocation tried before giving up on one: below this
/// the segment is written without (each append then allocates).
const MIN_PREALLOCATION: u64 = 64 * 1024;

/// A newly created segment.
pub(crate) struct Created {
    pub(crate) file: File,
    /// Bytes reserved on disk for it (the file's length): `size` if the
    /// disk had room, less (down to no preallocation at all) if not.
    pub(crate) allocated: u64,
}

/// Creates segment `id`: reserves up to `size` bytes (so later appends need
/// no allocation and each sync flushes only data), writes `opening` (the
/// header and the segment's first records) at the start, and makes it
/// durable, all under a temporary name (`tag` makes it unique to this
/// broker). Only then does the file get its segment name, so a crash never
/// leaves a segment without its header and manifest. Fails if segment `id`
/// exists (another broker created it).
///
/// On a full disk the preallocation is halved until it fits, down to
/// [`MIN_PREALLOCATION`], and then left out: a segment that can still be
/// created keeps the broker writing (acknowledgements free space), and one
/// without preallocation only costs allocation as it grows.
pub(crate) fn create(
    dir: &Path,
    id: u64,
    tag: &str,
    opening: &[u8],
    size: u64,
) -> io::Result<Created> {
    let tmp = dir.join(format!("{id:020}.{tag}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let target = path(dir, id);
    let mut linked = false;
    let made = (|| {
        let allocated = preallocate(&file, size, opening.len() as u64)?;
        file.write_all_at(opening, 0)?;
        file.sync_all()?;
        // A hard link never replaces an existing file: two brokers (a
        // stale master and its successor) cannot both create one id.
        match std::fs::hard_link(&tmp, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) if !target.exists() => std::fs::rename(&tmp, &target)?,
            Err(e) => return Err(e),
        }
        linked = true;
        let _ = std::fs::remove_file(&tmp);
        sync_dir(dir)?;
        Ok(allocated)
    })();
    match made {
        Ok(allocated) => Ok(Created { file, allocated }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if linked {
                let _ = std::fs::remove_file(&target);
            }
            Err(e)
        }
    }
}

/// Reserves up to `size` bytes for `file`, less if the disk is short;
/// returns the file's length afterwards (at least `min`).
fn preallocate(file: &File, size: u64, min: u64) -> io::Result<u64> {
    let mut want = size;
    while want > min {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, want) {
            Ok(()) => return Ok(want),
            Err(e) => {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::Unsupported {
                    break;
                }
                if !no_space(&e) {
                    return Err(e);
                }
                // Give back whatever the failed attempt took.
                file.set_len(0)?;
                want /= 2;
                if want < MIN_PREALLOCATION {
                    break;
                }
            }
        }
    }
    Ok(min)
}

/// Extends a segment's reservation from `from` to `size` bytes (zeros,
/// like a fresh preallocation); the file's length afterwards: `size`, or
/// `from` again if the disk is still short (what a failed attempt took is
/// given back, so everything below the length stays allocated).
pub(crate) fn grow(file: &File, from: u64, size: u64) -> io::Result<u64> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(size),
        Err(e) => {
            let e = io::Error::from(e);
            if no_space(&e) || e.kind() == io::ErrorKind::Unsupported {
                file.set_len(from)?;
                Ok(from)
            } else {
                Err(e)
            }
        }
    }
}

/// Bytes available to this process on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Writes a segment's progress stamp (version 2 headers only). Not synced:
/// it reaches the disk with the segment's next sync.
pub(crate) fn write_stamp(file: &File, stamp: &Stamp) -> io::Result<()> {
    file.write_all_at(&stamp.encode(), STAMP_AT as u64)
}

/// Opens an existing segment for reading and writing.
pub(crate) fn open(dir: &Path, id: u64) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path(dir, id))
}

/// Reads `len` bytes at `off`.
pub(crate) fn read_at(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// Reads up to `len` bytes at `off` (fewer if the file ends first).
pub(crate) fn read_upto(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], off + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Flushes a segment's data (and the size, if it changed) to disk.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    rustix::fs::fdatasync(file).map_err(io::Error::from)
}
