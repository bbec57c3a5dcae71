//! The per-attempt log cap: the first half of the allowed bytes is forwarded as it comes,
//! the last half is held in a ring (older bytes falling out), and when the attempt ends a
//! line says how much was dropped between them, followed by the held tail. The worker applies
//! it because it sees the output in order; the scheduler chooses the size and sends it with
//! each task, so one setting covers every worker.

use std::collections::VecDeque;

use bytes::Bytes;

/// The cap when the task names none.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 100 << 20;

/// A piece of output to forward: its stream and bytes.
pub type Piece = (i32, Bytes);

/// Head and tail of one attempt's output.
pub struct LogCap {
    limit: u64,
    head_left: u64,
    tail_limit: u64,
    tail: VecDeque<Piece>,
    tail_bytes: u64,
    dropped: u64,
    noticed: bool,
}

impl LogCap {
    /// A cap of `limit` bytes (0: the default).
    pub fn new(limit: u64) -> LogCap {
        let limit = if limit == 0 {
            DEFAULT_MAX_LOG_BYTES
        } else {
            limit
        };
        LogCap {
            limit,
            head_left: limit / 2,
            tail_limit: limit - limit / 2,
            tail: VecDeque::new(),
            tail_bytes: 0,
            dropped: 0,
            noticed: false,
        }
    }

    /// Takes a piece of output; returns what to forward now (the head, and once a notice
    /// that the rest is held back). `system` is the stream number for that notice.
    pub fn push(&mut self, stream: i32, mut data: Bytes, system: i32) -> Vec<Piece> {
        let mut now = Vec::new();
        if self.head_left > 0 {
            let take = (data.len() as u64).min(self.head_left) as usize;
            self.head_left -= take as u64;
            now.push((stream, data.split_to(take)));
        }
        if data.is_empty() {
            return now;
        }
        if !self.noticed {
            self.noticed = true;
            let notice = format!(
                "... output past the first {} is held back: the last {} follows when the stage ends (log cap {}) ...\n",
                human(self.limit / 2),
                human(self.tail_limit),
                human(self.limit)
            );
            now.push((system, Bytes::from(notice)));
        }
        self.tail_bytes += data.len() as u64;
        self.tail.push_back((stream, data));
        while self.tail_bytes > self.tail_limit {
            let excess = self.tail_bytes - self.tail_limit;
            let Some((_, front)) = self.tail.front_mut() else {
                break;
            };
            if front.len() as u64 <= excess {
                let len = front.len() as u64;
                self.tail.pop_front();
                self.tail_bytes -= len;
                self.dropped += len;
            } else {
                let _ = front.split_to(excess as usize);
                self.tail_bytes -= excess;
                self.dropped += excess;
            }
        }
        now
    }

    /// When the attempt has ended: the line saying what was dropped (if anything was), then
    /// the held tail, in order.
    pub fn finish(&mut self, system: i32) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            let marker = format!(
                "... {} dropped (log cap {}) ...\n",
                human(self.dropped),
                human(self.limit)
            );
            out.push((system, Bytes::from(marker)));
        }
        out.extend(self.tail.drain(..));
        self.tail_bytes = 0;
        out
    }
}

/// `812.4 MiB`, `100 MiB`, `3 KiB`, `17 bytes`.
fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: i32 = 1;
    const SYS: i32 = 3;

    fn text(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn output_under_the_cap_passes_whole_and_nothing_is_stated() {
        let mut cap = LogCap::new(100);
        let now = cap.push(OUT, Bytes::from_static(b"0123456789"), SYS);
        assert_eq!(text(&now), "0123456789");
        assert!(cap.finish(SYS).is_empty());
    }

    #[test]
    fn the_head_and_the_tail_are_kept_and_the_drop_is_stated() {
        let mut cap = LogCap::new(20);
        let mut forwarded = Vec::new();
        for line in 0..10 {
            let data = Bytes::from(format!("line{line}\n"));
            forwarded.extend(cap.push(OUT, data, SYS));
        }
        forwarded.extend(cap.finish(SYS));
        let all = text(&forwarded);
        // 60 bytes printed: the first 10 and the last 10 kept, 40 dropped.
        assert!(all.starts_with("line0\nline"), "{all}");
        assert!(
            all.contains("output past the first 10 bytes is held back"),
            "{all}"
        );
        assert!(
            all.contains("... 40 bytes dropped (log cap 20 bytes) ...\n"),
            "{all}"
        );
        assert!(all.ends_with("ne8\nline9\n"), "{all}");
        let kept: usize = forwarded
            .iter()
            .filter(|(s, _)| *s == OUT)
            .map(|(_, b)| b.len())
            .sum();
        assert_eq!(kept, 20);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(100 << 20), "100 MiB");
        assert_eq!(human(851_858_637), "812.4 MiB");
        assert_eq!(human(17), "17 bytes");
    }
}
