//! A machine whose power can be cut: the database's disk and the log's, each keeping only what was
//! synced when the power goes (what SIGKILL cannot show: a killed process's writes survive in the
//! kernel). Shared by the power-cut and write-ahead log tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flightdeck::store::{Backend, LogFile, LogStorage, LogStore};

/// The power: cut after a number of storage operations (writes and syncs, of the database and of
/// the log together), or now; from then on nothing is written or synced.
#[derive(Debug, Default)]
struct PowerState {
    ops_left: Option<usize>,
    dead: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Power(Arc<Mutex<PowerState>>);

impl Power {
    /// One storage operation: refused once the power is cut.
    pub fn spend(&self) -> std::io::Result<()> {
        let mut p = self.0.lock().unwrap();
        if let Some(left) = p.ops_left {
            if left == 0 {
                p.dead = true;
            } else {
                p.ops_left = Some(left - 1);
            }
        }
        if p.dead { Err(lost_power()) } else { Ok(()) }
    }

    pub fn cut_after(&self, ops: usize) {
        self.0.lock().unwrap().ops_left = Some(ops);
    }

    pub fn cut_now(&self) {
        self.0.lock().unwrap().dead = true;
    }

    pub fn dead(&self) -> bool {
        self.0.lock().unwrap().dead
    }
}

/// A file's bytes: what the process wrote (its page cache) and what reached the platter (the
/// last sync).
#[derive(Clone, Debug, Default)]
pub struct Platter {
    pub written: Vec<u8>,
    pub synced: Vec<u8>,
}

impl Platter {
    fn holding(image: Vec<u8>) -> Platter {
        Platter {
            written: image.clone(),
            synced: image,
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if self.written.len() < end {
            self.written.resize(end, 0);
        }
        self.written[offset as usize..end].copy_from_slice(data);
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        let Some(bytes) = self.written.get(start..start + out.len()) else {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        };
        out.copy_from_slice(bytes);
        Ok(())
    }
}

/// The database's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub platter: Arc<Mutex<Platter>>,
    pub power: Power,
    /// Errors the next syncs answer, first first (a sync that fails writes nothing).
    pub sync_faults: Arc<Mutex<Vec<std::io::ErrorKind>>>,
}

impl Disk {
    /// A disk holding `image`, as after a restart.
    pub fn holding(image: Vec<u8>, power: &Power) -> Disk {
        Disk {
            platter: Arc::new(Mutex::new(Platter::holding(image))),
            power: power.clone(),
            sync_faults: Arc::default(),
        }
    }

    /// What survives the cut.
    pub fn synced(&self) -> Vec<u8> {
        self.platter.lock().unwrap().synced.clone()
    }

    pub fn backend(&self) -> Backend {
        let disk = self.clone();
        Backend(Arc::new(move || Box::new(disk.clone())))
    }
}

pub fn lost_power() -> std::io::Error {
    std::io::Error::other("the power is cut")
}

impl redb::StorageBackend for Disk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.platter.lock().unwrap().written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.platter.lock().unwrap().read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if self.power.dead() {
            return Err(lost_power());
        }
        self.platter.lock().unwrap().written.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        sync(&self.platter, &self.power, &self.sync_faults)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.power.spend()?;
        self.platter.lock().unwrap().write(offset, data);
        Ok(())
    }
}

/// The log's disk: its segments by name. Creating one is durable when it returns (the server
/// writes its zeros and syncs it and its directory before using it).
#[derive(Clone, Debug, Default)]
pub struct LogDisk {
    pub files: Arc<Mutex<BTreeMap<String, Arc<Mutex<Platter>>>>>,
    pub power: Power,
    /// Errors the next syncs of any segment answer, first first.
    pub sync_faults: Arc<Mutex<Vec<std::io::ErrorKind>>>,
}

/// A sync: the written bytes become what survives a cut, unless the power is cut or a fault
/// was queued for it.
fn sync(
    platter: &Mutex<Platter>,
    power: &Power,
    faults: &Mutex<Vec<std::io::ErrorKind>>,
) -> std::io::Result<()> {
    power.spend()?;
    {
        let mut faults = faults.lock().unwrap();
        if !faults.is_empty() {
            return Err(std::io::Error::from(faults.remove(0)));
        }
    }
    let mut p = platter.lock().unwrap();
    p.synced = p.written.clone();
    Ok(())
}

impl LogDisk {
    /// The segments as the cut left them: what was synced.
    pub fn after_cut(&self, power: &Power) -> LogDisk {
        self.image(power, |p| p.synced.clone())
    }

    /// The segments as a crash of the process left them: everything written (the kernel has it).
    pub fn after_crash(&self, power: &Power) -> LogDisk {
        self.image(power, |p| p.written.clone())
    }

    fn image(&self, power: &Power, bytes: impl Fn(&Platter) -> Vec<u8>) -> LogDisk {
        let files = self.files.lock().unwrap();
        LogDisk {
            files: Arc::new(Mutex::new(
                files
                    .iter()
                    .map(|(name, p)| {
                        let image = bytes(&p.lock().unwrap());
                        (name.clone(), Arc::new(Mutex::new(Platter::holding(image))))
                    })
                    .collect(),
            )),
            power: power.clone(),
            sync_faults: Arc::default(),
        }
    }

    /// A segment's bytes as they would survive a cut now.
    pub fn synced(&self, name: &str) -> Vec<u8> {
        self.files.lock().unwrap()[name]
            .lock()
            .unwrap()
            .synced
            .clone()
    }

    /// Replaces a segment's bytes (what survived, as a test wants it).
    pub fn replace(&self, name: &str, image: Vec<u8>) {
        self.files.lock().unwrap().insert(
            name.to_string(),
            Arc::new(Mutex::new(Platter::holding(image))),
        );
    }

    /// Whether every segment's written bytes are synced.
    pub fn all_synced(&self) -> bool {
        self.files.lock().unwrap().values().all(|p| {
            let p = p.lock().unwrap();
            p.written == p.synced
        })
    }

    pub fn store(&self) -> LogStore {
        LogStore(Arc::new(self.clone()))
    }
}

#[derive(Debug)]
struct LogSegment {
    platter: Arc<Mutex<Platter>>,
    power: Power,
    sync_faults: Arc<Mutex<Vec<std::io::ErrorKind>>>,
}

impl LogStorage for LogDisk {
    fn list(&self) -> std::io::Result<Vec<String>> {
        Ok(self.files.lock().unwrap().keys().cloned().collect())
    }

    fn create(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn LogFile>> {
        self.power.spend()?;
        let platter = Arc::new(Mutex::new(Platter::holding(vec![0; len as usize])));
        self.files
            .lock()
            .unwrap()
            .insert(name.to_string(), platter.clone());
        Ok(Arc::new(LogSegment {
            platter,
            power: self.power.clone(),
            sync_faults: self.sync_faults.clone(),
        }))
    }

    fn open(&self, name: &str) -> std::io::Result<Arc<dyn LogFile>> {
        let platter = self.files.lock().unwrap().get(name).cloned();
        let platter = platter.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(Arc::new(LogSegment {
            platter,
            power: self.power.clone(),
            sync_faults: self.sync_faults.clone(),
        }))
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.power.spend()?;
        self.files.lock().unwrap().remove(name);
        Ok(())
    }
}

impl LogFile for LogSegment {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.platter.lock().unwrap().written.len() as u64)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.platter.lock().unwrap().read(offset, out)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.power.spend()?;
        self.platter.lock().unwrap().write(offset, data);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        sync(&self.platter, &self.power, &self.sync_faults)
    }
}

/// Where a segment's records end: its header (64 bytes), then records of a 16-byte head whose
/// first 4 bytes are the payload's length, up to the first zero length (ARCHITECTURE.md).
pub fn records_end(bytes: &[u8]) -> usize {
    let mut pos = 64;
    while let Some(len) = bytes.get(pos..pos + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 || pos + 16 + len > bytes.len() {
            break;
        }
        pos += 16 + len;
    }
    pos.min(bytes.len())
}

/// A machine: the database's disk and the log's, on one power supply.
pub struct Machine {
    pub power: Power,
    pub disk: Disk,
    pub log: LogDisk,
}

impl Machine {
    pub fn new() -> Machine {
        let power = Power::default();
        Machine {
            disk: Disk::holding(Vec::new(), &power),
            log: LogDisk {
                power: power.clone(),
                ..LogDisk::default()
            },
            power,
        }
    }

    /// A durable store on this machine, in 64 KiB segments, that checkpoints only when the log's
    /// size or age forces it (callers set the bounds); `dir` is only the data directory the store
    /// makes (the database and the log are not in it).
    pub fn store_config(&self, dir: &std::path::Path) -> flightdeck::store::StoreConfig {
        let mut config = flightdeck::store::StoreConfig::new(dir);
        config.durability = flightdeck::store::Durability::Immediate;
        config.page_cache_bytes = 4 * 1024 * 1024;
        config.backend = Some(self.disk.backend());
        config.log_storage = Some(self.log.store());
        config.segment_bytes = 64 * 1024;
        config.checkpoint_idle = std::time::Duration::from_secs(3600);
        config.checkpoint_spread = std::time::Duration::ZERO;
        config
    }

    /// The machine after its power came back: what was synced, on a new supply.
    pub fn restarted(&self) -> Machine {
        let power = Power::default();
        Machine {
            disk: Disk::holding(self.disk.synced(), &power),
            log: self.log.after_cut(&power),
            power,
        }
    }

    /// The machine after the process crashed (the power stayed on): everything written is
    /// there, to the kernel's page cache.
    pub fn after_process_crash(&self) -> Machine {
        let power = Power::default();
        let written = self.disk.platter.lock().unwrap().written.clone();
        Machine {
            disk: Disk::holding(written, &power),
            log: self.log.after_crash(&power),
            power,
        }
    }

    /// Writes what survived a cut now as a data directory of real files: the database and the
    /// log's segments (each with its trailing zeros trimmed when `trim`).
    pub fn write_out(&self, dir: &std::path::Path, trim: bool) {
        std::fs::create_dir_all(dir.join("wal")).unwrap();
        std::fs::write(dir.join("flightdeck.redb"), self.disk.synced()).unwrap();
        let names: Vec<String> = self.log.files.lock().unwrap().keys().cloned().collect();
        for name in &names {
            let mut bytes = self.log.synced(name);
            if trim {
                bytes.truncate(records_end(&bytes));
            }
            std::fs::write(dir.join("wal").join(format!("{name}.wal")), bytes).unwrap();
        }
    }
}
