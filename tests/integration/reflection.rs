//! What grpcurl does with no proto files at hand: list the services through reflection, fetch the
//! descriptors, and call `PatternLauncher/Health` with a message built from them.

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha;

use crate::harness::*;

/// Asks the v1 reflection service one question.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    question: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("one answer")
        .message_response
        .expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_can_list_the_services_and_call_health_through_reflection() {
    let mut launcher = TestLauncher::start();
    let channel = launcher.channel().await;
    let mut reflection = ServerReflectionClient::new(channel.clone());

    let MessageResponse::ListServicesResponse(list) =
        ask(&mut reflection, MessageRequest::ListServices(String::new())).await
    else {
        panic!("list_services answered something else");
    };
    let mut services: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "prism.ControlPlane",
            "prism.launcher.PatternLauncher",
            "prism.launcher.v1.LauncherAdmin",
        ]
    );

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &mut reflection,
        MessageRequest::FileContainingSymbol("prism.launcher.PatternLauncher".to_string()),
    )
    .await
    else {
        panic!("file_containing_symbol answered something else");
    };
    let mut pool = DescriptorPool::new();
    for file in files.file_descriptor_proto {
        pool.decode_file_descriptor_proto(file.as_slice())
            .expect("a valid descriptor");
    }
    let service = pool
        .get_service_by_name("prism.launcher.PatternLauncher")
        .expect("the service is described");
    let methods: Vec<String> = service
        .methods()
        .map(|method| method.name().to_string())
        .collect();
    assert_eq!(
        methods,
        [
            "LaunchPattern",
            "ListPatterns",
            "TerminatePattern",
            "Health",
            "GetProcessStatus"
        ]
    );
    let health = service
        .methods()
        .find(|method| method.name() == "Health")
        .expect("Health is described");

    // Build the request from the descriptor alone, as grpcurl does from `-d '{...}'`.
    let mut request = DynamicMessage::new(health.input());
    request.set_field_by_name("include_processes", Value::Bool(true));
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the channel is ready");
    let path = "/prism.launcher.PatternLauncher/Health"
        .parse()
        .expect("a method path");
    let answer = grpc
        .unary(tonic::Request::new(request.encode_to_vec()), path, RawCodec)
        .await
        .expect("Health answers")
        .into_inner();
    let answer = DynamicMessage::decode(health.output(), answer.as_slice()).expect("decodes");
    assert_eq!(
        answer.get_field_by_name("healthy").as_deref(),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        answer.get_field_by_name("total_processes").as_deref(),
        Some(&Value::I32(0))
    );

    // The older v1alpha protocol, which some grpcurl versions still use, answers the same list.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let answer = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner()
        .message()
        .await
        .expect("an answer")
        .expect("one answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("v1alpha list_services answered something else");
    };
    assert_eq!(list.service.len(), services.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_grpc_health_service_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut launcher = TestLauncher::start();
    let mut client = HealthClient::new(launcher.channel().await);
    for service in [
        "",
        "prism.launcher.PatternLauncher",
        "prism.launcher.v1.LauncherAdmin",
    ] {
        let answer = client
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(answer.status, 1, "{service:?} is SERVING");
    }
}

/// A codec that passes message bytes through, for calls built from descriptors.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}
