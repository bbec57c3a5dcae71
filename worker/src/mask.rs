//! Masking secret values in a stage's output before it leaves the worker.
//!
//! Output arrives in chunks cut anywhere, so a value can straddle two chunks. A [`Masker`]
//! keeps back the end of a chunk while it could still be the start of a secret, and decides
//! once the next chunk (or the end of the stream) shows whether it is.

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"***";

/// Masks the secret values of one output stream.
#[derive(Debug, Clone)]
pub struct Masker {
    /// Values to hide, longest first, so a value that contains another is masked whole.
    secrets: Vec<Vec<u8>>,
    /// Output held back: it may be the start of a secret.
    pending: Vec<u8>,
}

impl Masker {
    /// A masker for `values`; empty values are ignored.
    pub fn new<I, V>(values: I) -> Masker
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .map(|v| v.as_ref().to_vec())
            .filter(|v| !v.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker {
            secrets,
            pending: Vec::new(),
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Masks `data` (following what came before it); returns what can be sent now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(data);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                i += secret.len();
            } else if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // The rest may be the start of a secret: wait for more output.
                self.pending = rest.to_vec();
                break;
            } else {
                out.push(input[i]);
                i += 1;
            }
        }
        out
    }

    /// The end of the stream: what was held back, which turned out to be no secret.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_chunks(secrets: &[&str], chunks: &[&str]) -> String {
        let mut masker = Masker::new(secrets);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.push(chunk.as_bytes()));
        }
        out.extend(masker.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_in_one_chunk_are_masked_every_time() {
        assert_eq!(
            mask_chunks(&["s3cret"], &["token=s3cret and again s3cret\n"]),
            "token=*** and again ***\n"
        );
    }

    #[test]
    fn a_value_split_across_chunks_is_masked() {
        assert_eq!(
            mask_chunks(&["s3cret"], &["token=s3", "cret\n"]),
            "token=***\n"
        );
        assert_eq!(
            mask_chunks(&["s3cret"], &["s", "3", "c", "r", "e", "t", "!"]),
            "***!"
        );
    }

    #[test]
    fn a_held_back_prefix_that_is_no_secret_comes_out_unchanged() {
        assert_eq!(mask_chunks(&["s3cret"], &["say s3c", "ond"]), "say s3cond");
        assert_eq!(
            mask_chunks(&["s3cret"], &["ends with s3c"]),
            "ends with s3c"
        );
    }

    #[test]
    fn output_that_cannot_start_a_secret_is_not_held_back() {
        let mut masker = Masker::new(["s3cret"]);
        assert_eq!(masker.push(b"hello\n"), b"hello\n");
        assert_eq!(masker.push(b"x s"), b"x ");
        assert_eq!(masker.finish(), b"s");
    }

    #[test]
    fn the_longer_of_overlapping_values_is_masked_whole() {
        assert_eq!(
            mask_chunks(&["abc", "abcdef"], &["xabcdefx abcx"]),
            "x***x ***x"
        );
    }

    #[test]
    fn without_secrets_output_passes_through() {
        let mut masker = Masker::new(Vec::<String>::new());
        assert!(masker.is_empty());
        assert_eq!(masker.push(b"anything"), b"anything");
    }
}
