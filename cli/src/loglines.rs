//! Whole lines out of log chunks. A stage's output arrives in chunks cut wherever a read or a
//! batch ended, so a line (or a multi-byte character) may be split across chunks: the start
//! waits here for the rest from the next chunk of the same stage attempt and stream.

use std::collections::BTreeMap;

use vishwa_proto::v1 as pb;

/// A line with no end in sight is shown in pieces of this size, so a stage printing without
/// newlines cannot make the CLI hold its whole output.
const MAX_PENDING: usize = 64 << 10;

/// One complete line (without its newline) of a stage's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) stage: String,
    pub(crate) stream: i32,
    pub(crate) text: String,
}

/// Joins chunks into lines, per stage, attempt and stream.
#[derive(Default)]
pub(crate) struct LineJoiner {
    pending: BTreeMap<(String, u32, i32), Vec<u8>>,
}

impl LineJoiner {
    /// The lines `chunk` completes, in order; what follows its last newline waits.
    pub(crate) fn push(&mut self, chunk: &pb::LogLine) -> Vec<Line> {
        let key = (chunk.stage.clone(), chunk.attempt, chunk.stream);
        let pending = self.pending.entry(key).or_default();
        let mut lines = Vec::new();
        let mut rest: &[u8] = &chunk.data;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            pending.extend_from_slice(&rest[..end]);
            lines.push(take_line(chunk, pending));
            rest = &rest[end + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() >= MAX_PENDING {
            lines.push(take_line(chunk, pending));
        }
        lines
    }

    /// What is left without a final newline, once the stream has ended.
    pub(crate) fn finish(&mut self) -> Vec<Line> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|(_, bytes)| !bytes.is_empty())
            .map(|((stage, _, stream), bytes)| Line {
                stage,
                stream,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })
            .collect()
    }
}

fn take_line(chunk: &pb::LogLine, pending: &mut Vec<u8>) -> Line {
    let bytes = std::mem::take(pending);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
    Line {
        stage: chunk.stage.clone(),
        stream: chunk.stream,
        text: String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stage: &str, stream: pb::LogStream, data: &[u8]) -> pb::LogLine {
        pb::LogLine {
            stage: stage.into(),
            attempt: 1,
            stream: stream as i32,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn texts(lines: Vec<Line>) -> Vec<String> {
        lines.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn a_line_split_across_chunks_is_shown_whole() {
        let mut joiner = LineJoiner::default();
        let out = pb::LogStream::Stdout;
        assert_eq!(
            texts(joiner.push(&chunk("a", out, b"hel"))),
            Vec::<String>::new()
        );
        assert_eq!(
            texts(joiner.push(&chunk("a", out, b"lo wor"))),
            Vec::<String>::new()
        );
        assert_eq!(
            texts(joiner.push(&chunk("a", out, b"ld\nsecond\nthi"))),
            ["hello world", "second"]
        );
        // Another stage and another stream do not join into it.
        assert_eq!(texts(joiner.push(&chunk("b", out, b"b1\n"))), ["b1"]);
        let err = pb::LogStream::Stderr;
        assert_eq!(
            texts(joiner.push(&chunk("a", err, b"oops"))),
            Vec::<String>::new()
        );
        assert_eq!(texts(joiner.push(&chunk("a", out, b"rd\n"))), ["third"]);
        let left = joiner.finish();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].stage.as_str(), left[0].text.as_str()),
            ("a", "oops")
        );
        assert_eq!(left[0].stream, err as i32);
        assert!(joiner.finish().is_empty());
    }

    #[test]
    fn a_character_split_across_chunks_is_not_mangled() {
        let mut joiner = LineJoiner::default();
        let text = "नमस्ते\n".as_bytes();
        let out = pb::LogStream::Stdout;
        assert!(joiner.push(&chunk("a", out, &text[..4])).is_empty());
        assert_eq!(texts(joiner.push(&chunk("a", out, &text[4..]))), ["नमस्ते"]);
    }

    #[test]
    fn output_without_newlines_is_shown_in_bounded_pieces() {
        let mut joiner = LineJoiner::default();
        let out = pb::LogStream::Stdout;
        let mut shown = 0;
        for _ in 0..40 {
            shown += joiner.push(&chunk("a", out, &[b'x'; 4096])).len();
        }
        assert_eq!(
            shown, 2,
            "160 KiB without a newline is shown as two 64 KiB pieces"
        );
        assert_eq!(joiner.finish()[0].text.len(), 40 * 4096 - 2 * MAX_PENDING);
    }
}
