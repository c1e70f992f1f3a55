//! The protobuf codec of every generated service and client: prost's, except that a message
//! that cannot be decoded (invalid UTF-8 in a string, a truncated field, a wrong wire type) is
//! the sender's error, INVALID_ARGUMENT (`errors::decode_status`), where tonic answers INTERNAL,
//! which says the launcher failed (gRPC's status-code guide files parse errors under INTERNAL;
//! for a request, the caller is the one to fix it). The bytes on the wire are prost's,
//! unchanged. The generated clients share the codec, so an answer that cannot be decoded is
//! reported to the launcher's own clients (CLI, admin client) as INVALID_ARGUMENT too.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::errors::decode_status;

/// Named by `build.rs` (`codec_path`) for every generated service and client.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    prost: ProstCodec<T, U>,
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec {
            prost: ProstCodec::default(),
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(self.prost.decoder())
    }
}

/// prost's decoder with its failures mapped by `errors::decode_status`.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(decode_status)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
