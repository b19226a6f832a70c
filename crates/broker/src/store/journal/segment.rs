//! Segment files: naming, creation (preallocated, header written, durable
//! in the directory), positional reads and writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{HEADER_LEN, SegmentHeader};

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

/// Makes a directory's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a segment: reserves `size` bytes (so later appends need no
/// allocation and each sync flushes only data), writes the header, and makes
/// file and directory entry durable.
pub(crate) fn create(dir: &Path, header: &SegmentHeader, size: u64) -> io::Result<File> {
    let p = path(dir, header.id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)?;
    let made = (|| {
        if size > HEADER_LEN as u64 {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
        }
        file.write_all_at(&header.encode(), 0)?;
        file.sync_all()?;
        sync_dir(dir)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(file)
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

/// Flushes a segment's data (and the size, if it changed) to disk.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    rustix::fs::fdatasync(file).map_err(io::Error::from)
}
