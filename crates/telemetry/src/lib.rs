//! OpenTelemetry set-up for celeriac's binaries: read the standard `OTEL_*` variables, install a tracer provider that
//! exports spans by OTLP over HTTP/protobuf (through a small `ureq` client), install the W3C trace-context and
//! baggage propagators, and flush on shutdown. Off unless an exporter or an endpoint is set.
//!
//! The only crate that knows the SDK and the exporter: the worker runtime and the client use the `opentelemetry`
//! API crate alone (see `docs/tracing.md`).

mod http_client;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;

/// Why tracing could not be set up from the environment.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}={value:?} is not supported: {why}")]
    Unsupported {
        var: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{var}={value:?} is not a number of milliseconds")]
    BadTimeout { var: &'static str, value: String },
    #[error("could not build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the `OTEL_*` variables ask for; [`Settings::from_env`] reads them, [`Settings::from_lookup`] reads any map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub default_service_name: Option<String>,
    /// The exporter's request timeout (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout: Duration,
}

impl Settings {
    /// `None` when tracing is off: `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`, or neither
    /// `OTEL_TRACES_EXPORTER` nor an OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) set. The endpoint, headers and compression are read by the exporter itself.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
        service_name: &str,
    ) -> Result<Option<Settings>, TelemetryError> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            Some("none") => return Ok(None),
            Some("otlp") => {}
            Some(other) => {
                return Err(TelemetryError::Unsupported {
                    var: "OTEL_TRACES_EXPORTER",
                    value: other.to_string(),
                    why: "celeriac exports traces by OTLP only (`otlp` or `none`)",
                });
            }
            None => {
                if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
                    && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
                {
                    return Ok(None);
                }
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = set(name) {
                if p != "http/protobuf" {
                    return Err(TelemetryError::Unsupported {
                        var: if name.contains("TRACES") {
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                        } else {
                            "OTEL_EXPORTER_OTLP_PROTOCOL"
                        },
                        value: p,
                        why: "celeriac speaks OTLP over HTTP with protobuf only (`http/protobuf`)",
                    });
                }
                break;
            }
        }
        let mut timeout = Duration::from_secs(10);
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ] {
            if let Some(t) = set(name) {
                let ms: u64 = t.parse().map_err(|_| TelemetryError::BadTimeout {
                    var: if name.contains("TRACES") {
                        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
                    } else {
                        "OTEL_EXPORTER_OTLP_TIMEOUT"
                    },
                    value: t.clone(),
                })?;
                timeout = Duration::from_millis(ms);
                break;
            }
        }
        let named = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.split('=').next().map(str::trim) == Some("service.name"))
            });
        Ok(Some(Settings {
            default_service_name: (!named).then(|| service_name.to_string()),
            timeout,
        }))
    }

    /// [`Settings::from_lookup`] over the process environment.
    pub fn from_env(service_name: &str) -> Result<Option<Settings>, TelemetryError> {
        Settings::from_lookup(|k| std::env::var(k).ok(), service_name)
    }
}

/// Keeps the tracer provider alive; dropping it (or [`Guard::shutdown`]) flushes the spans still queued.
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Flush and stop the exporter now.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "could not flush the last spans to the OTLP endpoint");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Turn tracing on as the `OTEL_*` variables say: `Ok(None)` when they leave it off (nothing is installed, so
/// nothing is created or sent), a [`Guard`] to keep until shutdown when on. `service_name` is the default
/// `service.name` (`OTEL_SERVICE_NAME` wins).
pub fn init_from_env(service_name: &str) -> Result<Option<Guard>, TelemetryError> {
    let Some(settings) = Settings::from_env(service_name)? else {
        return Ok(None);
    };
    init(&settings).map(Some)
}

/// Install the global tracer provider and propagators for these settings.
pub fn init(settings: &Settings) -> Result<Guard, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .with_http_client(http_client::UreqClient::new(settings.timeout))
        .build()?;
    let mut resource = Resource::builder();
    if let Some(name) = &settings.default_service_name {
        resource = resource.with_service_name(name.clone());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    Ok(Guard {
        provider: Some(provider),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned(), "celeriac-worker")
    }

    #[test]
    fn off_unless_an_exporter_or_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(),
            None
        );
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(on.default_service_name.as_deref(), Some("celeriac-worker"));
        assert_eq!(on.timeout, Duration::from_secs(10));
        assert!(
            settings(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://h:4318/v1/traces"
            )])
            .unwrap()
            .is_some()
        );
        assert!(
            settings(&[("OTEL_TRACES_EXPORTER", "otlp")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn disabled_and_none_win_over_an_endpoint() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(
            settings(&[ep, ("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[ep, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(
            settings(&[ep, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn service_name_and_timeout_from_the_environment() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let s = settings(&[ep, ("OTEL_SERVICE_NAME", "w1")])
            .unwrap()
            .unwrap();
        assert_eq!(s.default_service_name, None);
        let s = settings(&[ep, ("OTEL_RESOURCE_ATTRIBUTES", "a=b, service.name=w2")])
            .unwrap()
            .unwrap();
        assert_eq!(s.default_service_name, None);
        let s = settings(&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn unsupported_settings_are_named() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let e = settings(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\""),
            "{e}"
        );
        let e = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_EXPORTER"), "{e}");
        let e = settings(&[ep, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")]).unwrap_err();
        assert!(
            e.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
            "{e}"
        );
        // The signal's own protocol wins over the general one.
        assert!(
            settings(&[
                ep,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ])
            .unwrap()
            .is_some()
        );
    }
}
