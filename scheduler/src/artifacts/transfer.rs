//! Direct transfers: with S3 artifacts a worker moves an artifact's bytes itself, through
//! presigned URLs the scheduler hands out for the object keyed by the digest; the scheduler
//! opens and completes multipart uploads and accepts an output only once a HEAD shows the
//! object with the announced size. It never reads the bytes, so the consumer re-hashes them.

use super::{ArtifactError, BlobStore, check_digest};
use crate::blobs::s3::UploadPlan;

/// A worker asks where to move an artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub attempt: String,
    pub worker: String,
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub upload: bool,
}

/// Where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// File artifacts: through the scheduler (UploadArtifact, FetchArtifact).
    ThroughScheduler,
    /// A presigned GET.
    Download(String),
    /// Presigned PUTs (or nothing, when the object is there).
    Upload(UploadPlan),
}

/// A worker says a direct upload is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedUpload {
    pub attempt: String,
    pub worker: String,
    pub name: String,
    pub digest: String,
    pub size: u64,
    /// The multipart upload, with its parts' ETags in order; `None` for a single PUT.
    pub multipart: Option<(String, Vec<String>)>,
}

impl BlobStore {
    /// Where `request`'s bytes go.
    pub async fn plan_transfer(
        &self,
        request: &TransferRequest,
    ) -> Result<Transfer, ArtifactError> {
        check_digest(&request.digest)?;
        let Some(s3) = self.s3_backend() else {
            return Ok(Transfer::ThroughScheduler);
        };
        let about = |e| ArtifactError::about(&request.name, e);
        if !request.upload {
            if self.size(&request.digest).await?.is_none() {
                return Err(ArtifactError::Missing {
                    digest: request.digest.clone(),
                });
            }
            return Ok(Transfer::Download(
                s3.download_url(&request.digest).await.map_err(about)?,
            ));
        }
        self.check_size(&request.name, request.size)?;
        Ok(Transfer::Upload(
            s3.plan_upload(&request.digest, request.size)
                .await
                .map_err(about)?,
        ))
    }

    /// Completes a direct upload (multipart) and accepts it only if the object is in the
    /// bucket with the announced size.
    pub async fn complete_upload(&self, done: CompletedUpload) -> Result<(), ArtifactError> {
        check_digest(&done.digest)?;
        let Some(s3) = self.s3_backend() else {
            return Err(ArtifactError::Io(
                "artifacts are kept on the scheduler: upload with UploadArtifact".to_owned(),
            ));
        };
        self.check_size(&done.name, done.size)?;
        if let Some((upload_id, etags)) = done.multipart {
            s3.complete(&done.digest, &upload_id, etags)
                .await
                .map_err(|e| ArtifactError::about(&done.name, e))?;
        }
        match self.size(&done.digest).await? {
            Some(size) if size == done.size => Ok(()),
            Some(actual) => Err(ArtifactError::SizeMismatch {
                name: done.name,
                announced: done.size,
                actual,
            }),
            None => Err(ArtifactError::Io(format!(
                "output `{}` is not in the bucket at {}: the upload did not arrive",
                done.name,
                s3.describe(&done.digest)
            ))),
        }
    }
}
