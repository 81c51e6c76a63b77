//! A reader of a shared file from an offset, by positioned reads (`pread`): many readers
//! share one descriptor and none seeks it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

pub struct ReadAt {
    file: Arc<File>,
    pos: u64,
}

impl ReadAt {
    pub fn new(file: Arc<File>, pos: u64) -> Self {
        ReadAt { file, pos }
    }
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
