//! What a request body may be, by direction, and how it travels.
//!
//! Reads: empty, or `application/x-www-form-urlencoded`, which is read whole (behind `-maxFormBodySize`)
//! so smuggled `extra_label` / `extra_filters` can be stripped; anything else could hide such arguments
//! from us (VictoriaMetrics also reads multipart forms), so it is 415. Writes stream through behind
//! `-maxRequestBodySize`. VictoriaMetrics reads a write's `extra_label` from the URL only
//! (`lib/protoparser/protoparserutil/extra_labels.go` uses `req.URL.Query()`), so a form-typed write body
//! is data, not arguments, and is forwarded: its own documentation imports with `curl -d`, which sends
//! that type. Multipart write bodies are still refused: no sender produces them, and a backend that
//! parses them as forms is one tenantgate does not know.

use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

use crate::client_body::ClientBody;

use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Metrics;
use crate::proxy::RequestBody;
use crate::rewrite;

/// The form media type: the one read body tenantgate reads.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// A write body: streamed behind the size limit. Multipart is refused.
pub fn write_body(
    headers: &http::HeaderMap,
    body: ClientBody,
    max: u64,
    metrics: &Metrics,
) -> Result<RequestBody, GatewayError> {
    if let Some(media) = media_type(headers)? {
        if media.eq_ignore_ascii_case("multipart/form-data") {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "multipart bodies are not accepted on write paths; send the data with its own content type (e.g. curl --data-binary)",
            ));
        }
        if media.eq_ignore_ascii_case(FORM) {
            metrics.form_write();
        }
    }
    check_declared_length(&body, max)?;
    Ok(RequestBody::Stream(Limited::new(body, max as usize)))
}

/// A write body read whole behind the size limit, for receivers whose bodies tenantgate rewrites.
/// Multipart is refused as in [`write_body`].
pub async fn whole_write_body(
    headers: &http::HeaderMap,
    body: ClientBody,
    max: u64,
) -> Result<Bytes, GatewayError> {
    if media_type(headers)?.is_some_and(|m| m.eq_ignore_ascii_case("multipart/form-data")) {
        return Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType,
            "multipart bodies are not accepted on write paths",
        ));
    }
    check_declared_length(&body, max)?;
    read_whole(Limited::new(body, max as usize)).await
}

/// A streamed write body that declared `declared` bytes, read whole behind its size limit: held for a
/// retry on another backend. A body that came in one frame is kept as it came; several frames are
/// copied into one buffer of the declared size. Keeping frames instead would hold more than
/// `-maxRetryBufferSize` counted: each shares the (larger) read buffer it was cut from, and an
/// HTTP/2 body of many small DATA frames costs far more than its bytes. Copying 1 MiB takes ~0.1 ms.
pub async fn read_held(
    mut stream: Limited<ClientBody>,
    declared: u64,
) -> Result<Bytes, GatewayError> {
    // The usual case, a body in one frame, is kept as it came.
    let mut first = Bytes::new();
    let mut copied: Option<BytesMut> = None;
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(|e| body_error(&*e))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded
        };
        if first.is_empty() && copied.is_none() {
            first = data;
            continue;
        }
        let buffer = copied.get_or_insert_with(|| {
            let mut buffer = BytesMut::with_capacity(declared as usize);
            buffer.extend_from_slice(&first);
            buffer
        });
        // HTTP framing ends a body at its declared length; never hold more than was counted.
        if (buffer.len() + data.len()) as u64 > declared {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                "request body is longer than its Content-Length",
            ));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(copied.map_or(first, BytesMut::freeze))
}

/// A streamed write body read whole into one buffer, behind its size limit.
async fn read_whole(stream: Limited<ClientBody>) -> Result<Bytes, GatewayError> {
    stream
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| body_error(&*e))
}

fn body_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> GatewayError {
    if e.is::<http_body_util::LengthLimitError>() {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            "request body is larger than -maxRequestBodySize",
        )
    } else {
        GatewayError::new(ErrorKind::BadRequest, "could not read the request body")
    }
}

/// A read body: empty (streamed as is) or an urlencoded form, read whole and stripped.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: ClientBody,
    max_form: u64,
    metrics: &Metrics,
) -> Result<RequestBody, GatewayError> {
    let form = media_type(headers)?.is_some_and(|media| media.eq_ignore_ascii_case(FORM));
    if body.is_end_stream() && !form {
        return Ok(RequestBody::Empty);
    }
    if !form {
        return Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType,
            "read requests may only carry application/x-www-form-urlencoded bodies",
        ));
    }
    let limit = max_form as usize;
    if body.size_hint().lower() > limit as u64 {
        return Err(form_too_large());
    }
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                form_too_large()
            } else {
                GatewayError::new(ErrorKind::BadRequest, "could not read the request body")
            }
        })?
        .to_bytes();
    let (stripped, dropped) = rewrite::strip_form_body(&bytes)
        .map_err(|_| GatewayError::new(ErrorKind::BadRequest, "form body is not valid UTF-8"))?;
    metrics.stripped(dropped);
    Ok(RequestBody::Full(Bytes::from(stripped)))
}

fn check_declared_length(body: &ClientBody, max: u64) -> Result<(), GatewayError> {
    if body.size_hint().lower() > max {
        return Err(GatewayError::new(
            ErrorKind::PayloadTooLarge,
            "request body is larger than -maxRequestBodySize",
        ));
    }
    Ok(())
}

fn form_too_large() -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        "form body is larger than -maxFormBodySize",
    )
}

/// The media type of the body, without parameters, as sent: compare it ignoring ASCII case. Several
/// Content-Type headers are refused: servers disagree on which one counts.
pub fn media_type(headers: &http::HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "more than one Content-Type header",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| GatewayError::new(ErrorKind::BadRequest, "Content-Type is not ASCII"))?;
    Ok(Some(text.split(';').next().unwrap_or("").trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn media_types() {
        let mut h = http::HeaderMap::new();
        assert_eq!(media_type(&h).unwrap(), None);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        let media = media_type(&h).unwrap().unwrap();
        assert_eq!(media, "Application/X-WWW-Form-Urlencoded");
        assert!(media.eq_ignore_ascii_case(FORM));
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(media_type(&h).is_err());
    }
}
