//! Container logs on disk: one JSON object per line (`{"log","stream","time"}`, Docker's
//! json-file format), rotated by size, read back with tail, since and follow. A line is
//! [`LogLine`], the API's type, written as it is served.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pier_api::containers::LogLine;

/// Appends lines, rotating `container.log` to `container.log.1` ... past a size.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogWriter {
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files,
        })
    }

    pub fn write(&mut self, stream: &str, text: &[u8]) -> io::Result<()> {
        let line = LogLine {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: stream.to_string(),
            time: pier_api::time::format_rfc3339_nanos(SystemTime::now()),
        };
        let mut bytes = serde_json::to_vec(&line).expect("serializable");
        bytes.push(b'\n');
        if self.max_bytes > 0 && self.size + bytes.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 0 {
            self.file.set_len(0)?;
        } else {
            for i in (1..self.max_files).rev() {
                let _ = fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Every line on disk, oldest first (rotated files included).
pub fn read_all(path: &Path) -> Vec<LogLine> {
    let mut out = read_rotated(path);
    if let Ok(file) = File::open(path) {
        out.extend(parse(BufReader::new(file)));
    }
    out
}

/// The lines of the rotated files only (`container.log.N`), oldest first.
pub fn read_rotated(path: &Path) -> Vec<LogLine> {
    let mut files: Vec<PathBuf> = (1..100)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    let mut out = Vec::new();
    for f in files {
        if let Ok(file) = File::open(&f) {
            out.extend(parse(BufReader::new(file)));
        }
    }
    out
}

/// Parses lines; a torn last line (a crash mid-write) is skipped.
pub fn parse(r: impl BufRead) -> Vec<LogLine> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rotates_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, 300, 2).unwrap();
        for i in 0..20 {
            w.write(
                if i % 2 == 0 { "stdout" } else { "stderr" },
                format!("line {i}\n").as_bytes(),
            )
            .unwrap();
        }
        assert!(p.exists() && rotated(&p, 1).exists() && rotated(&p, 2).exists());
        assert!(
            !rotated(&p, 3).exists(),
            "only max_files rotated files are kept"
        );
        let lines = read_all(&p);
        assert!(lines.len() < 20, "old lines were rotated away");
        assert_eq!(lines.last().unwrap().log, "line 19\n");
        assert_eq!(lines.last().unwrap().stream, "stderr");
        let n: Vec<usize> = lines
            .iter()
            .map(|l| l.log[5..].trim().parse().unwrap())
            .collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "in order: {n:?}");
        // A torn line is skipped, not fatal.
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"log\":\"x")
            .unwrap();
        assert_eq!(read_all(&p).len(), lines.len());
    }

    /// The file holds Docker's json-file lines byte for byte (these fields, in this order,
    /// nothing more), and reads back lines an earlier Pier wrote.
    #[test]
    fn on_disk_lines_are_docker_json_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, 0, 0).unwrap();
        w.write("stderr", b"a \"quoted\"\tline\n").unwrap();
        let time = read_all(&p)[0].time.clone();
        assert!(time.len() == 30 && time.ends_with('Z'), "{time}");
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!(r#"{{"log":"a \"quoted\"\tline\n","stream":"stderr","time":"{time}"}}"#) + "\n"
        );
        let old = br#"{"log":"x\n","stream":"stdout","time":"2026-11-27T13:22:00.000000001Z"}
"#;
        assert_eq!(
            parse(&old[..]),
            [LogLine {
                log: "x\n".into(),
                stream: "stdout".into(),
                time: "2026-11-27T13:22:00.000000001Z".into(),
            }]
        );
    }
}
