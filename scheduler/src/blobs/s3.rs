//! The S3 backend of the blob store: blobs are objects keyed `PREFIX/sha256/ab/cdef…` in one
//! bucket. The scheduler never moves their bytes: it hands workers short-lived presigned URLs
//! (one PUT, or one per part of a multipart upload it opens and completes), checks an upload
//! with a HEAD (size) before it is accepted, lists and deletes for retention. Consumers re-hash
//! what they download, so a tampered object fails the attempt that reads it.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{ObjectStore, ObjectStoreExt};

use super::{BlobError, check_digest};

/// How long a presigned URL stays valid.
pub const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Outputs larger than this are uploaded in parts of this size (S3 allows 10,000 parts).
pub const PART_BYTES: u64 = 64 << 20;

/// Where a worker moves an upload's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadPlan {
    /// The object is already there with the right size.
    Exists,
    /// One PUT to this URL.
    Single(String),
    /// A multipart upload: its id, the part size, one PUT URL per part.
    Multipart {
        upload_id: String,
        part_bytes: u64,
        urls: Vec<String>,
    },
}

/// A bucket and key prefix, parsed from `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<S3Location, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
        if !valid_bucket {
            return Err(format!(
                "`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, `-` or `.`)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!(
                "the key prefix `{prefix}` may not contain `.` or `..`"
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// How to reach S3: the usual `AWS_*` variables, or given by an embedding program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`) [default: us-east-1].
    pub region: String,
    /// `AWS_ENDPOINT_URL`, for an S3-compatible server.
    pub endpoint: Option<String>,
}

impl S3Settings {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` and
    /// `AWS_ENDPOINT_URL` from the environment.
    pub fn from_env() -> S3Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Settings {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint: var("AWS_ENDPOINT_URL"),
        }
    }
}

/// Blobs as objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    store: std::sync::Arc<AmazonS3>,
    location: S3Location,
}

fn s3_error(what: &str, e: object_store::Error) -> BlobError {
    BlobError::Io(format!("{what}: {e}"))
}

impl S3Blobs {
    /// Connects to the bucket with `settings`.
    pub fn connect(location: S3Location, settings: &S3Settings) -> Result<S3Blobs, BlobError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&settings.region);
        if let (Some(key), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| {
            BlobError::Io(format!(
                "S3 bucket `{}`: {e}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION \
                 (and AWS_ENDPOINT_URL for an S3-compatible server)",
                location.bucket
            ))
        })?;
        Ok(S3Blobs {
            store: std::sync::Arc::new(store),
            location,
        })
    }

    /// The object key of `digest`: `PREFIX/sha256/ab/cdef…`.
    pub fn key(&self, digest: &str) -> Path {
        let tail = format!("sha256/{}/{}", &digest[..2], &digest[2..]);
        if self.location.prefix.is_empty() {
            Path::from(tail)
        } else {
            Path::from(format!("{}/{tail}", self.location.prefix))
        }
    }

    /// `s3://BUCKET/KEY` of `digest`, for messages.
    pub fn describe(&self, digest: &str) -> String {
        format!("s3://{}/{}", self.location.bucket, self.key(digest))
    }

    /// The size of the object `digest`, or `None` if it is not there.
    pub async fn size(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        check_digest(digest)?;
        match self.store.head(&self.key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(&format!("HEAD {}", self.describe(digest)), e)),
        }
    }

    /// Deletes the object `digest`; a missing one is not an error.
    pub async fn remove(&self, digest: &str) -> Result<(), BlobError> {
        check_digest(digest)?;
        match self.store.delete(&self.key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(&format!("deleting {}", self.describe(digest)), e)),
        }
    }

    /// Every blob under the prefix: digest, last write time and size, sorted by digest.
    pub async fn list(&self) -> Result<Vec<(String, SystemTime, u64)>, BlobError> {
        let root = if self.location.prefix.is_empty() {
            Path::from("sha256")
        } else {
            Path::from(format!("{}/sha256", self.location.prefix))
        };
        let metas: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| s3_error("listing the bucket", e))?;
        let mut found: Vec<_> = metas
            .into_iter()
            .filter_map(|meta| {
                let mut parts: Vec<_> = meta.location.parts().collect();
                let tail = parts.pop()?;
                let shard = parts.pop()?;
                let digest = format!("{}{}", shard.as_ref(), tail.as_ref());
                check_digest(&digest).ok()?;
                Some((digest, SystemTime::from(meta.last_modified), meta.size))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The bytes of the object `digest`, streamed (for `vishwa artifacts get`, which goes
    /// through the scheduler; workers download through presigned URLs).
    pub async fn get(
        &self,
        digest: &str,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, BlobError>>,
        ),
        BlobError,
    > {
        check_digest(digest)?;
        let got = match self.store.get(&self.key(digest)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::Missing {
                    digest: digest.to_owned(),
                });
            }
            Err(e) => return Err(s3_error(&format!("GET {}", self.describe(digest)), e)),
        };
        let size = got.meta.size;
        let stream = got
            .into_stream()
            .map_err(|e| s3_error("reading the object", e));
        Ok((size, Box::pin(stream)))
    }

    /// A presigned GET of the object `digest`.
    pub async fn download_url(&self, digest: &str) -> Result<String, BlobError> {
        check_digest(digest)?;
        let url = self
            .store
            .signed_url(Method::GET, &self.key(digest), URL_LIFETIME)
            .await
            .map_err(|e| s3_error("presigning a download", e))?;
        Ok(url.to_string())
    }

    /// Where to upload `size` bytes of `digest`: nothing if the object is there, one presigned
    /// PUT for a small blob, a multipart upload with one presigned PUT per part for a big one.
    pub async fn plan_upload(&self, digest: &str, size: u64) -> Result<UploadPlan, BlobError> {
        if self.size(digest).await? == Some(size) {
            return Ok(UploadPlan::Exists);
        }
        let key = self.key(digest);
        if size <= PART_BYTES {
            let url = self
                .store
                .signed_url(Method::PUT, &key, URL_LIFETIME)
                .await
                .map_err(|e| s3_error("presigning an upload", e))?;
            return Ok(UploadPlan::Single(url.to_string()));
        }
        let upload_id = self
            .store
            .create_multipart(&key)
            .await
            .map_err(|e| s3_error(&format!("opening a multipart upload of {key}"), e))?;
        let parts = size.div_ceil(PART_BYTES);
        let mut urls = Vec::with_capacity(parts as usize);
        for n in 1..=parts {
            let options = SignedUrlOptions::new().with_query([
                ("partNumber", n.to_string()),
                ("uploadId", upload_id.clone()),
            ]);
            let url = self
                .store
                .signed_url_opts(Method::PUT, &key, URL_LIFETIME, &options)
                .await
                .map_err(|e| s3_error("presigning an upload part", e))?;
            urls.push(url.to_string());
        }
        Ok(UploadPlan::Multipart {
            upload_id,
            part_bytes: PART_BYTES,
            urls,
        })
    }

    /// Completes the multipart upload `upload_id` of `digest` with its parts' ETags.
    pub async fn complete(
        &self,
        digest: &str,
        upload_id: &str,
        etags: Vec<String>,
    ) -> Result<(), BlobError> {
        check_digest(digest)?;
        let key = self.key(digest);
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.store
            .complete_multipart(&key, &upload_id.to_owned(), parts)
            .await
            .map(|_| ())
            .map_err(|e| s3_error(&format!("completing the multipart upload of {key}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_bucket_and_prefix_and_refuse_bad_ones() {
        let l = S3Location::parse("s3://ml-artifacts/vishwa/prod/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("ml-artifacts", "vishwa/prod")
        );
        let l = S3Location::parse("s3://bucket").unwrap();
        assert_eq!(l.prefix, "");
        for bad in [
            "file:/x",
            "s3://",
            "s3://Bad_Bucket/x",
            "s3://ok-bucket/a/../b",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }
}
