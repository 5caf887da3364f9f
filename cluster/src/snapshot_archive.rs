//! One-file snapshot archives: a checkpoint directory packed as
//! `"THKSNAP\0" | version u32 | count u32 | (name_len u16, name, size u64, bytes)* | xxh3-64`,
//! streamed in both directions so that a snapshot is never held whole in memory.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 8] = b"THKSNAP\0";
/// Archive format version; checked when unpacking.
pub const ARCHIVE_VERSION: u32 = 1;
/// Files one archive may hold (a checkpoint has a few per SST level).
const FILES_MAX: u32 = 100_000;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

struct Hashing<W> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Packs every regular file of `dir` into `out` and fsyncs it.
pub fn pack(dir: &Path, out: &Path) -> io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
        .collect::<io::Result<_>>()?;
    names.sort();
    let file = File::create(out)?;
    let mut w = Hashing {
        inner: BufWriter::new(file),
        hash: Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&ARCHIVE_VERSION.to_le_bytes())?;
    w.write_all(&(names.len() as u32).to_le_bytes())?;
    for name in &names {
        let path = dir.join(name);
        let size = std::fs::metadata(&path)?.len();
        w.write_all(&(name.len() as u16).to_le_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&size.to_le_bytes())?;
        let copied = io::copy(&mut File::open(&path)?.take(size), &mut w)?;
        if copied != size {
            return Err(bad(format!("{name} changed while packing")));
        }
    }
    let digest = w.hash.digest();
    let mut inner = w.inner.into_inner().map_err(|e| e.into_error())?;
    inner.write_all(&digest.to_le_bytes())?;
    inner.sync_all()
}

/// Unpacks `archive` into the new directory `dir`, verifying names and the checksum, and
/// fsyncs every file.
pub fn unpack(archive: &Path, dir: &Path) -> io::Result<()> {
    let total = std::fs::metadata(archive)?.len();
    if total < 24 {
        return Err(bad("snapshot archive is truncated"));
    }
    let file = File::open(archive)?;
    let mut r = BufReader::new(file).take(total - 8);
    let mut hash = Xxh3::new();
    let read_exact = |r: &mut dyn Read, buf: &mut [u8], hash: &mut Xxh3| -> io::Result<()> {
        r.read_exact(buf)?;
        hash.update(buf);
        Ok(())
    };
    let mut head = [0u8; 16];
    read_exact(&mut r, &mut head, &mut hash)?;
    if &head[..8] != MAGIC {
        return Err(bad("not a Thicket snapshot archive"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    if version != ARCHIVE_VERSION {
        return Err(bad(format!(
            "snapshot archive version {version}, this build reads {ARCHIVE_VERSION}"
        )));
    }
    let count = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
    if count > FILES_MAX {
        return Err(bad(format!("snapshot archive claims {count} files")));
    }
    std::fs::create_dir_all(dir)?;
    for _ in 0..count {
        let mut len = [0u8; 2];
        read_exact(&mut r, &mut len, &mut hash)?;
        let mut name = vec![0u8; u16::from_le_bytes(len) as usize];
        read_exact(&mut r, &mut name, &mut hash)?;
        let name = String::from_utf8(name).map_err(|_| bad("file name is not UTF-8"))?;
        if name.is_empty()
            || name.contains('/')
            || name.contains('\\')
            || name == "."
            || name == ".."
        {
            return Err(bad(format!(
                "unsafe file name `{name}` in snapshot archive"
            )));
        }
        let mut size = [0u8; 8];
        read_exact(&mut r, &mut size, &mut hash)?;
        let size = u64::from_le_bytes(size);
        if size > total {
            return Err(bad(format!(
                "`{name}` claims {size} bytes, more than the archive"
            )));
        }
        let mut out = Hashing {
            inner: BufWriter::new(File::create(dir.join(&name))?),
            hash,
        };
        let copied = io::copy(&mut (&mut r).take(size), &mut out)?;
        if copied != size {
            return Err(bad("snapshot archive is truncated"));
        }
        hash = out.hash;
        let f = out.inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes in snapshot archive"));
    }
    // The trailer may already sit in the reader's buffer: read it through the reader.
    let mut reader = r.into_inner();
    let mut digest = [0u8; 8];
    reader.read_exact(&mut digest)?;
    if u64::from_le_bytes(digest) != hash.digest() {
        return Err(bad("snapshot archive checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.sst"), vec![7u8; 100_000]).unwrap();
        std::fs::write(src.path().join("MANIFEST"), b"m").unwrap();
        let work = tempfile::tempdir().unwrap();
        let arch = work.path().join("s.thk");
        pack(src.path(), &arch).unwrap();
        let out = work.path().join("out");
        unpack(&arch, &out).unwrap();
        assert_eq!(
            std::fs::read(out.join("a.sst")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(std::fs::read(out.join("MANIFEST")).unwrap(), b"m");
        // Flip one byte in the middle: refused.
        let mut bytes = std::fs::read(&arch).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&arch, &bytes).unwrap();
        let err = unpack(&arch, &work.path().join("out2")).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&arch, b"garbage that is long enough").unwrap();
        assert!(unpack(&arch, &work.path().join("out3")).is_err());
    }
}
