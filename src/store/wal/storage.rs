//! Where the log's segments live: files in the data directory's `wal/`, or a storage layer a test
//! gives (one that forgets every write not yet synced when its "power" is cut).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The segments of a log.
pub trait LogStorage: Send + Sync + std::fmt::Debug {
    /// The names of the segments present, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates a segment of `len` zero bytes, durable (its bytes and its name) before it returns,
    /// so that a later sync of its data writes data only.
    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn LogFile>>;
    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;
    fn remove(&self, name: &str) -> io::Result<()>;
}

/// One segment.
pub trait LogFile: Send + Sync + std::fmt::Debug {
    /// Its length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads `out.len()` bytes at `offset` (the caller stays within `size`).
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// A test's storage for the log, kept across reopens like `Backend`.
#[derive(Clone, Debug)]
pub struct LogStore(pub Arc<dyn LogStorage>);

/// Segments as files of a directory.
#[derive(Debug)]
pub(crate) struct Files {
    pub dir: PathBuf,
}

/// Bytes of zeros written and synced at a time when a segment is made.
const ZERO_PIECE: usize = 256 * 1024;

/// The suffix of a segment's file name.
const SUFFIX: &str = ".wal";

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

impl LogStorage for Files {
    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(SUFFIX) {
                names.push(stem.to_string());
            } else if name.ends_with(".new") {
                // A segment whose making a crash interrupted: never used.
                let _ = std::fs::remove_file(self.dir.join(name));
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn LogFile>> {
        crate::store::private_dir(&self.dir)?;
        let staging = self.dir.join(format!("{name}.new"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)?;
        crate::store::shared::private_file(&staging)?;
        // Zeros written, not a hole or an unwritten extent: the blocks exist and are marked
        // written, so syncing a record into them changes no file metadata. Synced a piece at a
        // time, so that the disk never holds more than a piece of them ahead of a sync of the
        // log's current segment (which waits behind what the device has queued).
        let zeros = vec![0u8; ZERO_PIECE];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            file.sync_data()?;
            at += n as u64;
        }
        file.sync_all()?;
        std::fs::rename(&staging, self.path(name))?;
        self.sync_dir()?;
        Ok(Arc::new(Segment(file)))
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name))?;
        Ok(Arc::new(Segment(file)))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))?;
        self.sync_dir()
    }
}

#[derive(Debug)]
struct Segment(std::fs::File);

impl LogFile for Segment {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
