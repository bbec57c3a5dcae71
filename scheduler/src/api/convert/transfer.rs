//! Direct artifact transfers (S3): where a worker moves an artifact's bytes, and the end of a
//! direct upload.

use vishwa_proto::v1 as pb;

use crate::artifacts::transfer::{CompletedUpload, Transfer, TransferRequest};
use crate::blobs::s3::UploadPlan;
use crate::engine::EngineError;

fn required(field: &'static str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(EngineError::invalid(field, "must not be empty".to_owned()));
    }
    Ok(())
}

impl TryFrom<pb::ArtifactTransferRequest> for TransferRequest {
    type Error = EngineError;

    fn try_from(r: pb::ArtifactTransferRequest) -> Result<Self, EngineError> {
        required("attempt_id", &r.attempt_id)?;
        required("worker_id", &r.worker_id)?;
        required("digest", &r.digest)?;
        Ok(TransferRequest {
            attempt: r.attempt_id,
            worker: r.worker_id,
            name: r.name,
            digest: r.digest,
            size: r.size,
            upload: r.upload,
        })
    }
}

impl From<Transfer> for pb::ArtifactTransferResponse {
    fn from(t: Transfer) -> Self {
        let mut out = pb::ArtifactTransferResponse::default();
        match t {
            Transfer::ThroughScheduler => {}
            Transfer::Download(url) => {
                out.direct = true;
                out.url = url;
            }
            Transfer::Upload(UploadPlan::Exists) => {
                out.direct = true;
                out.exists = true;
            }
            Transfer::Upload(UploadPlan::Single(url)) => {
                out.direct = true;
                out.url = url;
            }
            Transfer::Upload(UploadPlan::Multipart {
                upload_id,
                part_bytes,
                urls,
            }) => {
                out.direct = true;
                out.upload_id = upload_id;
                out.part_bytes = part_bytes;
                out.part_urls = urls;
            }
        }
        out
    }
}

impl TryFrom<pb::CompleteArtifactUploadRequest> for CompletedUpload {
    type Error = EngineError;

    fn try_from(r: pb::CompleteArtifactUploadRequest) -> Result<Self, EngineError> {
        required("attempt_id", &r.attempt_id)?;
        required("worker_id", &r.worker_id)?;
        required("name", &r.name)?;
        required("digest", &r.digest)?;
        let multipart = if r.upload_id.is_empty() {
            None
        } else {
            if r.part_etags.is_empty() {
                return Err(EngineError::invalid(
                    "part_etags",
                    "a multipart upload needs its parts' ETags".to_owned(),
                ));
            }
            Some((r.upload_id, r.part_etags))
        };
        Ok(CompletedUpload {
            attempt: r.attempt_id,
            worker: r.worker_id,
            name: r.name,
            digest: r.digest,
            size: r.size,
            multipart,
        })
    }
}
