//! Reading a container's json-file log straight from disk, across rotations.
//!
//! Docker's json-file driver writes `<LogPath>`; when it reaches `max-size` it
//! closes it, renames `<LogPath>.N-1` → `.N` … `<LogPath>` → `<LogPath>.1` (the
//! oldest, `.max-file-1`, is deleted) and creates a new `<LogPath>`, all under
//! the lock its writes take. So once `<LogPath>` names another inode, the file
//! we hold is complete: read it to its end, then go to the next newer one (the
//! name just below the one ours now has). Compression (`compress=true`) would
//! turn rotated files into gzip; csagent never sets it, and a `.gz` name is
//! never opened here.
//!
//! A [`FilePos`] names a file by inode plus a hash of its first line, so an
//! inode reused by a newer file is not mistaken for the one checkpointed.
//!
//! A reader that falls behind (the upload is back-pressured) would lose every
//! file Docker deletes before the reader gets to it. So the tail opens newer
//! files as soon as it sees them and holds them open, up to `hold` of them: a
//! file held open stays readable after Docker deletes it (its disk space is
//! freed when the tail closes it). Files beyond that bound that go before they
//! are read are lost, and counted ([`Lost`]).
//! Reads go through a large buffer (page-cache reads of regular files; they do
//! not block for long).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::checkpoint::FilePos;

/// Bytes read per call.
const READ_SIZE: usize = 256 * 1024;
/// Bytes of a file's start hashed to recognise it (its first line, or this much).
const HEAD_BYTES: usize = 4096;
/// Rotated names looked at (`max-file` is at most 100 in csagent's config).
const MAX_ROTATED: usize = 128;

/// FNV-1a 64 of the start of a file (up to and including its first newline,
/// at most [`HEAD_BYTES`]); never 0, which means "unknown".
pub fn head_hash(start: &[u8]) -> u64 {
    let end = memchr::memchr(b'\n', start).map_or(start.len(), |i| i + 1);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &start[..end.min(HEAD_BYTES)] {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The head hash of an open file, if its first line (or [`HEAD_BYTES`]) is there.
fn file_head(file: &File) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; HEAD_BYTES];
    let mut n = 0;
    while n < buf.len() {
        let k = file.read_at(&mut buf[n..], n as u64)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let have = &buf[..n];
    Ok((memchr::memchr(b'\n', have).is_some() || n == HEAD_BYTES).then(|| head_hash(have)))
}

fn rotated(base: &Path, k: usize) -> PathBuf {
    if k == 0 {
        return base.to_path_buf();
    }
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A log file recognised while this does not hold it open: its inode, and its
/// birth time. Docker deletes the oldest rotated file and creates the new
/// `<LogPath>` in one rotation, and ext4 hands the freed inode straight to the
/// new file, so an inode alone would take the new file for one seen before and
/// skip every file between them, uncounted. Where the filesystem has no birth
/// time (no statx btime) only the inode is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    inode: u64,
    born: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            inode: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

fn id_of(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId::of(&m))
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read2 {
    /// New bytes are in the buffer.
    Data,
    /// At the end of the current log file: wait for Docker to write more.
    Idle,
    /// At the end of a rotated file whose successor is not there yet (between
    /// Docker's rename and create): try again in a moment.
    Rotating,
}

/// Where the tail starts, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At the checkpointed file and offset.
    Resumed,
    /// From the oldest file's start (nothing checkpointed in the file yet).
    Oldest,
    /// The checkpointed file is gone (rotated away or the log was truncated):
    /// from the oldest file that is left; what was between is lost.
    Lost(String),
}

/// A json-file log being read, line by line, across rotations.
#[derive(Debug)]
pub struct Tail {
    base: PathBuf,
    file: File,
    inode: u64,
    born: Option<std::time::SystemTime>,
    head: u64,
    /// File offset of `buf[start]`.
    offset: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Files newer than `file`, oldest first, as Docker wrote them.
    ahead: VecDeque<Ahead>,
    /// Most files of `ahead` held open at once.
    hold: usize,
    lost: Lost,
}

/// A log file newer than the one being read.
#[derive(Debug)]
struct Ahead {
    id: FileId,
    /// Its size when last seen: what is lost if it goes before it is read.
    size: u64,
    /// Held open: readable even after Docker deletes it.
    file: Option<File>,
}

/// What went before it was read: rotated away by Docker while the reader was
/// behind by more than its hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Files seen and deleted before they were read, and their sizes when seen.
    pub files: u64,
    pub bytes: u64,
    /// Times the newest file known was found gone: Docker rotated through all
    /// of its names between two looks (or a checkpointed file went while the
    /// agent was down), and files in between may have gone unseen.
    pub gaps: u64,
}

/// A file found under one of the log's names.
struct Named {
    file: File,
    /// Held open for the whole scan: within one scan an inode names one file.
    id: FileId,
    size: u64,
}

/// The files under the log's names, oldest first. Docker renames from the
/// oldest name down (`.N-1` → `.N` … `<LogPath>` → `.1`) while this looks from
/// the newest up, so a file that exists throughout is seen (perhaps twice,
/// under two names: kept once); only a file created meanwhile can be missed,
/// and the next look finds it. A rename leaves at most one name empty at a
/// time, so the look stops after two empty names in a row.
fn scan(base: &Path) -> io::Result<Vec<Named>> {
    let mut out: Vec<Named> = Vec::new();
    let mut empty = 0;
    for k in 0..MAX_ROTATED {
        let file = match File::open(rotated(base, k)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                empty += 1;
                if empty == 2 {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        empty = 0;
        let meta = file.metadata()?;
        if out.iter().any(|n| n.id.inode == meta.ino()) {
            continue;
        }
        out.push(Named {
            id: FileId::of(&meta),
            size: meta.len(),
            file,
        });
    }
    out.reverse();
    Ok(out)
}

/// One complete line from the buffer, with where it starts and ends.
#[derive(Debug)]
pub struct RawLine<'a> {
    pub bytes: &'a [u8],
    /// Position before this line.
    pub before: FilePos,
    /// Position after it (and its newline).
    pub after: FilePos,
}

impl Tail {
    /// Opens the log at `resume` (None: at the start of the oldest file),
    /// holding up to `hold` newer files open ahead of the one it reads.
    pub fn open(base: &Path, resume: Option<FilePos>, hold: usize) -> io::Result<(Tail, Start)> {
        let names = scan(base)?;
        let found = match resume {
            None => None,
            Some(pos) => Self::find(&names, pos)?,
        };
        let start = match (resume, &found) {
            (None, _) => Start::Oldest,
            (Some(_), Some(_)) => Start::Resumed,
            (Some(pos), None) => Start::Lost(format!(
                "inode {} (offset {}) is no longer among {}*",
                pos.inode,
                pos.offset,
                base.display()
            )),
        };
        let (at, offset) = found.unwrap_or_default();
        let mut names = names.into_iter().skip(at);
        let Some(first) = names.next() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no log file at {}", base.display()),
            ));
        };
        let mut t = Tail {
            base: base.to_path_buf(),
            head: file_head(&first.file)?.unwrap_or(0),
            file: first.file,
            inode: first.id.inode,
            born: first.id.born,
            offset,
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            ahead: VecDeque::new(),
            hold,
            lost: Lost::default(),
        };
        t.file.seek(SeekFrom::Start(offset))?;
        for n in names {
            t.push_ahead(n);
        }
        if matches!(start, Start::Lost(_)) {
            t.lost.gaps += 1;
        }
        Ok((t, start))
    }

    /// Where in `names` (oldest first) the file checkpointed at `pos` is, and
    /// its offset.
    fn find(names: &[Named], pos: FilePos) -> io::Result<Option<(usize, u64)>> {
        let Some(at) = names.iter().position(|n| n.id.inode == pos.inode) else {
            return Ok(None);
        };
        let head = file_head(&names[at].file)?.unwrap_or(0);
        if pos.head != 0 && head != pos.head {
            return Ok(None); // the inode was reused by a newer file
        }
        if names[at].size < pos.offset {
            return Ok(None); // truncated (max-file 1 truncates in place)
        }
        Ok(Some((at, pos.offset)))
    }

    /// The file being read (held open, so its inode cannot be reused).
    fn id(&self) -> FileId {
        FileId {
            inode: self.inode,
            born: self.born,
        }
    }

    /// The newest file known: the last one ahead, else the one being read.
    fn newest(&self) -> FileId {
        self.ahead.back().map_or(self.id(), |a| a.id)
    }

    /// Files held open ahead of the one being read.
    pub fn held(&self) -> usize {
        self.ahead.iter().filter(|a| a.file.is_some()).count()
    }

    /// What went before it was read, so far.
    pub fn lost(&self) -> Lost {
        self.lost
    }

    fn push_ahead(&mut self, n: Named) {
        let file = (self.held() < self.hold).then_some(n.file);
        self.ahead.push_back(Ahead {
            id: n.id,
            size: n.size,
            file,
        });
    }

    /// Looks for files Docker wrote since the last look and holds them (up to
    /// the bound); one `stat` when nothing rotated. Call it often while the
    /// reader is behind: a file rotated through all of Docker's names before
    /// this sees it is lost unseen.
    pub fn look_ahead(&mut self) -> io::Result<()> {
        if id_of(&self.base) == Some(self.newest()) {
            return Ok(());
        }
        self.refresh(self.hold)
    }

    /// Matches the files under the log's names with what is known ahead: new
    /// ones are appended, known ones held while fewer than `hold` are, known
    /// ones that went before they were held are lost.
    fn refresh(&mut self, hold: usize) -> io::Result<()> {
        let newest = self.newest();
        let mut looks = 0;
        let (names, newest_at) = loop {
            let names = scan(&self.base)?;
            let at = names.iter().position(|n| n.id == newest);
            looks += 1;
            if at.is_some() || names.is_empty() || looks == 3 {
                break (names, at);
            }
            // A scan preempted for a whole rotation between two names sees both
            // vacated and stops short of the newest file known: look again
            // before taking it for gone (defensive: not seen in the tests).
            tracing::debug!(looks, path = %self.base.display(), "newest log file known not found; looking again");
        };
        if newest_at.is_none() && !names.is_empty() {
            // The newest file known went: Docker rotated through all its names
            // since the last look, and files between may have gone unseen.
            self.lost.gaps += 1;
        }
        let mut known: std::collections::HashMap<FileId, Named> = Default::default();
        let mut new = Vec::new();
        for (i, n) in names.into_iter().enumerate() {
            if n.id == self.id() {
                continue;
            }
            if self.ahead.iter().any(|a| a.id == n.id) {
                known.insert(n.id, n);
            } else if newest_at.is_none_or(|at| i > at) {
                new.push(n);
            }
            // else: older than the file being read (not wanted).
        }
        let mut held = self.held();
        let mut hold_one = |file: File| {
            (held < hold).then(|| {
                held += 1;
                file
            })
        };
        let mut kept = VecDeque::with_capacity(self.ahead.len() + new.len());
        for a in self.ahead.drain(..) {
            if a.file.is_some() {
                kept.push_back(a);
                continue;
            }
            match known.remove(&a.id) {
                Some(n) => kept.push_back(Ahead {
                    id: n.id,
                    size: n.size,
                    file: hold_one(n.file),
                }),
                None => {
                    self.lost.files += 1;
                    self.lost.bytes += a.size;
                }
            }
        }
        for n in new {
            kept.push_back(Ahead {
                id: n.id,
                size: n.size,
                file: hold_one(n.file),
            });
        }
        self.ahead = kept;
        Ok(())
    }

    /// Whether the log has more than has been read: the file grew, or it is
    /// no longer the current one. Errors count as "more" (the read will say).
    pub fn grew(&self) -> bool {
        let read_to = self.offset + (self.end - self.start) as u64;
        match self.file.metadata() {
            Ok(m) if m.len() > read_to => true,
            Ok(_) => inode_of(&self.base) != Some(self.inode),
            Err(_) => true,
        }
    }

    /// The position after the last line handed out.
    pub fn position(&self) -> FilePos {
        FilePos {
            inode: self.inode,
            offset: self.offset,
            head: self.head,
        }
    }

    /// The next complete line in the buffer, if any.
    pub fn next_line(&mut self) -> Option<RawLine<'_>> {
        let s = self.start;
        let nl = memchr::memchr(b'\n', &self.buf[s..self.end])?;
        let before_offset = self.offset;
        self.start = s + nl + 1;
        self.offset += nl as u64 + 1;
        if self.head == 0 && before_offset == 0 {
            // The first line of this file: now it can be recognised.
            self.head = head_hash(&self.buf[s..self.end]);
        }
        let before = FilePos {
            inode: self.inode,
            offset: before_offset,
            head: self.head,
        };
        let after = self.position();
        Some(RawLine {
            bytes: &self.buf[s..s + nl],
            before,
            after,
        })
    }

    /// Reads more of the log into the buffer, moving to the next file when
    /// this one is complete.
    pub fn read(&mut self) -> io::Result<Read2> {
        self.look_ahead()?;
        // Keep an unfinished line; make room behind it.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A line longer than the buffer (escaped 16 KiB pieces fit easily;
            // a broken file might not): grow.
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        let n = self.file.read(&mut self.buf[self.end..])?;
        if n > 0 {
            self.end += n;
            return Ok(Read2::Data);
        }
        // At the end of this file. Still the current one?
        if inode_of(&self.base) == Some(self.inode) {
            if self.file.metadata()?.len() < self.offset + self.end as u64 {
                // Truncated in place (max-file 1): start again at its start.
                tracing::warn!(path = %self.base.display(), "container log truncated; reading it from its start");
                self.file.seek(SeekFrom::Start(0))?;
                self.offset = 0;
                self.start = 0;
                self.end = 0;
                self.head = 0;
                return Ok(Read2::Data);
            }
            return Ok(Read2::Idle);
        }
        // Rotated (or being rotated): whatever was written before the rename
        // is in our file; read it first.
        let n = self.file.read(&mut self.buf[self.end..])?;
        if n > 0 {
            self.end += n;
            return Ok(Read2::Data);
        }
        if self.end > self.start {
            // Our file ends without a newline: Docker writes whole lines, so
            // this is a torn write (dockerd killed mid-line); drop it.
            tracing::warn!(path = %self.base.display(), bytes = self.end - self.start, "rotated container log ends inside a line; dropping the torn line");
        }
        // The next file: the oldest one ahead, held open now if it is not yet
        // (room for one more than is held: with no hold, this is the only file
        // opened ahead).
        self.refresh(self.hold.max(self.held() + 1))?;
        match self.ahead.pop_front() {
            Some(Ahead {
                id,
                file: Some(file),
                ..
            }) => {
                self.file = file;
                self.inode = id.inode;
                self.born = id.born;
                self.head = 0;
                self.offset = 0;
                self.start = 0;
                self.end = 0;
                Ok(Read2::Data)
            }
            // refresh() holds the oldest ahead (or drops it as lost); should
            // it not have, the next look does.
            Some(a @ Ahead { file: None, .. }) => {
                self.ahead.push_front(a);
                Ok(Read2::Rotating)
            }
            None => Ok(Read2::Rotating),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Docker's rotation: `.N-1` → `.N` … `base` → `.1`, a new `base`.
    fn rotate(base: &Path, max_files: usize) {
        let _ = std::fs::remove_file(rotated(base, max_files - 1));
        for k in (1..max_files - 1).rev() {
            let _ = std::fs::rename(rotated(base, k), rotated(base, k + 1));
        }
        std::fs::rename(base, rotated(base, 1)).unwrap();
        File::create(base).unwrap();
    }

    fn append(base: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(base).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Every line available now, and the position after the last.
    fn drain(t: &mut Tail) -> (Vec<String>, FilePos) {
        let mut out = Vec::new();
        loop {
            while let Some(l) = t.next_line() {
                out.push(String::from_utf8(l.bytes.to_vec()).unwrap());
            }
            match t.read().unwrap() {
                Read2::Data => {}
                Read2::Idle | Read2::Rotating => return (out, t.position()),
            }
        }
    }

    #[test]
    fn follows_rotations_and_resumes_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        File::create(&base).unwrap();
        let (mut t, start) = Tail::open(&base, None, 4).unwrap();
        assert_eq!(start, Start::Oldest);
        append(&base, "a1\na2\n");
        let (got, _) = drain(&mut t);
        assert_eq!(got, ["a1", "a2"]);
        // Written, then rotated twice before the reader looks again.
        append(&base, "a3\n");
        rotate(&base, 5);
        append(&base, "b1\n");
        rotate(&base, 5);
        append(&base, "c1\nc2");
        let (got, pos) = drain(&mut t);
        assert_eq!(got, ["a3", "b1", "c1"], "the unfinished c2 waits");
        append(&base, "\n");
        let (got, pos2) = drain(&mut t);
        assert_eq!(got, ["c2"]);
        assert!(pos2.offset > pos.offset);
        // Resume from a checkpoint in a rotated file.
        let a_pos = {
            let (mut t, _) = Tail::open(&base, None, 4).unwrap();
            t.read().unwrap();
            t.next_line().unwrap().after // after a1, in the oldest file
        };
        let (mut t, start) = Tail::open(&base, Some(a_pos), 4).unwrap();
        assert_eq!(start, Start::Resumed);
        assert_eq!(drain(&mut t).0, ["a2", "a3", "b1", "c1", "c2"]);
        // Rotated away (max-file 3 keeps two rotated files): lost, from the oldest.
        rotate(&base, 3);
        rotate(&base, 3);
        let (mut t, start) = Tail::open(&base, Some(a_pos), 4).unwrap();
        assert!(matches!(start, Start::Lost(_)), "{start:?}");
        assert_eq!(drain(&mut t).0, ["c1", "c2"]);
    }

    #[test]
    fn a_reused_inode_is_not_taken_for_the_checkpointed_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        std::fs::write(&base, "first\nsecond\n").unwrap();
        let (mut t, _) = Tail::open(&base, None, 4).unwrap();
        t.read().unwrap();
        let pos = t.next_line().unwrap().after;
        assert_ne!(pos.head, 0);
        // Same inode, other content (as if deleted and the inode reused).
        std::fs::write(&base, "other\nlines\n").unwrap();
        let (mut t, start) = Tail::open(&base, Some(pos), 4).unwrap();
        assert!(matches!(start, Start::Lost(_)), "{start:?}");
        assert_eq!(drain(&mut t).0, ["other", "lines"]);
    }

    #[test]
    fn the_reader_loses_nothing_to_rotations_while_it_reads() {
        // A writer rotating every 50 lines (max-file 4) and a reader polling
        // between writes: every line exactly once, in order.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        File::create(&base).unwrap();
        let (mut t, _) = Tail::open(&base, None, 4).unwrap();
        let mut got = Vec::new();
        for i in 0..2000 {
            append(&base, &format!("line{i}\n"));
            if i % 50 == 49 {
                rotate(&base, 4);
            }
            if i % 37 == 0 {
                got.extend(drain(&mut t).0);
            }
        }
        got.extend(drain(&mut t).0);
        let want: Vec<String> = (0..2000).map(|i| format!("line{i}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn truncation_in_place_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        std::fs::write(&base, "one\ntwo\n").unwrap();
        let (mut t, _) = Tail::open(&base, None, 4).unwrap();
        assert_eq!(drain(&mut t).0, ["one", "two"]);
        // max-file 1: Docker truncates the file in place.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&base)
            .unwrap();
        append(&base, "3\n");
        assert_eq!(drain(&mut t).0, ["3"]);
    }

    /// A writer rotating with max-file 3 (`rotate(base, 3)`), one line per
    /// file, the reader looking ahead after each rotation but reading nothing
    /// (its upload is back-pressured): the lines it can still read, and what
    /// it counted lost.
    fn behind_by(rotations: usize, hold: usize) -> (Vec<String>, Lost, usize) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        std::fs::write(&base, "f0\n").unwrap();
        let (mut t, _) = Tail::open(&base, None, hold).unwrap();
        for i in 1..=rotations {
            rotate(&base, 3);
            append(&base, &format!("f{i}\n"));
            t.look_ahead().unwrap();
        }
        let held = t.held();
        let (got, _) = drain(&mut t);
        (got, t.lost(), held)
    }

    #[test]
    fn a_reader_behind_by_up_to_its_hold_loses_nothing() {
        // Docker keeps 3 names; held open, 4 more files survive their deletion.
        let (got, lost, held) = behind_by(6, 4);
        assert_eq!(got, ["f0", "f1", "f2", "f3", "f4", "f5", "f6"]);
        assert_eq!(lost, Lost::default());
        assert_eq!(held, 4);
    }

    #[test]
    fn beyond_the_hold_files_that_go_unread_are_counted_lost() {
        // Hold 1: f1 is held; f2 and f3 are deleted by Docker unread.
        let (got, lost, held) = behind_by(6, 1);
        assert_eq!(got, ["f0", "f1", "f4", "f5", "f6"]);
        assert_eq!(
            lost,
            Lost {
                files: 2,
                bytes: 6,
                gaps: 0
            }
        );
        assert_eq!(held, 1);
        // Holding nothing: each file is opened only when the reader gets to it.
        let (got, lost, _) = behind_by(6, 0);
        assert_eq!(got, ["f0", "f4", "f5", "f6"]);
        assert_eq!((lost.files, lost.gaps), (3, 0));
    }

    #[test]
    fn a_file_on_the_inode_of_one_seen_before_is_not_taken_for_it() {
        // Hold 0, the reader still in f0. f1 is seen, then rotations with no
        // look: Docker deletes f1 and creates the next file in one rotation,
        // and ext4 gives it f1's freed inode (f3 gets it, and f5 gets f3's).
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        std::fs::write(&base, "f0\n").unwrap();
        let (mut t, _) = Tail::open(&base, None, 0).unwrap();
        rotate(&base, 3);
        append(&base, "f1\n");
        t.look_ahead().unwrap();
        let f1 = inode_of(&base).unwrap();
        let mut reused = false;
        for i in 2..=5 {
            rotate(&base, 3);
            append(&base, &format!("f{i}\n"));
            reused |= inode_of(&base) == Some(f1);
        }
        // Whether or not this filesystem reused the inode, the reader reads
        // what is left and counts f1 lost and the unseen f2 as a gap.
        assert_eq!(
            drain(&mut t).0,
            ["f0", "f3", "f4", "f5"],
            "inode reused: {reused}"
        );
        assert_eq!(
            (t.lost().files, t.lost().gaps),
            (1, 1),
            "inode reused: {reused}"
        );
    }

    #[test]
    fn files_gone_before_any_look_are_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        std::fs::write(&base, "f0\n").unwrap();
        let (mut t, _) = Tail::open(&base, None, 0).unwrap();
        // Read f0, then five rotations with no look in between: f1 and f2 go
        // unseen (how many is not known to the reader).
        assert_eq!(drain(&mut t).0, ["f0"]);
        for i in 1..=5 {
            rotate(&base, 3);
            append(&base, &format!("f{i}\n"));
        }
        assert_eq!(drain(&mut t).0, ["f3", "f4", "f5"]);
        assert_eq!(t.lost().gaps, 1);
        assert_eq!(t.lost().files, 0);
    }
}
