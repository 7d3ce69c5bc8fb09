//! Traces exported over OTLP/HTTP when `--otlp-endpoint` is set: the
//! `tracing` spans of `agentauth` (the request, client authentication,
//! plugin calls, signing, store writes) become OpenTelemetry spans, batched
//! and sent to the collector from a thread of the exporter's own.

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The spans exported: this server's, down to `debug` (the inner spans:
/// authentication, plugin calls, signing, store writes).
fn exported() -> Targets {
    Targets::new().with_target("agentauth", LevelFilter::DEBUG).with_default(LevelFilter::OFF)
}

/// An exporter started, and the layer that feeds it.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports to the collector at `endpoint` (its base URL; spans go to
    /// `{endpoint}/v1/traces`), in the protocol `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// names.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("--otlp-endpoint must be an http:// or https:// URL: {endpoint:?}");
        }
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Err(_) | Ok("http/protobuf") => Protocol::HttpBinary,
            Ok("http/json") => Protocol::HttpJson,
            Ok(other) => bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: use http/protobuf or http/json"),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_protocol(protocol)
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("starting the OTLP exporter")?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "agentauth".into());
        let resource = Resource::builder().with_service_name(service).build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        Ok(Self { provider })
    }

    /// The layer that turns this server's spans into exported ones.
    pub fn layer<S>(self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = self.provider.tracer("agentauth");
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(exported()).boxed()
    }

    /// The exporter, to flush it at the end.
    pub fn provider(&self) -> SdkTracerProvider {
        self.provider.clone()
    }
}

/// Sends the spans still batched, and stops the exporter.
pub fn shut_down(provider: &SdkTracerProvider) {
    if let Err(e) = provider.shutdown() {
        eprintln!("agentauth: exporting the last traces: {e}");
    }
}
