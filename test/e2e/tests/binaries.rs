//! Both binaries, as built: flags and environment, JSON or text logs, the admin
//! endpoint (`/healthz`, `/livez`, `/readyz`, `/metrics`) and a clean exit on
//! SIGTERM. The controller runs against the real control plane, where it
//! becomes ready once our CRDs are served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use vmm_testkit::process::free_port;
use vmm_testkit::{ControlPlane, ProcessBuilder, workspace_binary};

/// `(status line, body)` of a plain HTTP/1.0 GET on loopback.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[test]
fn binaries_serve_health_and_metrics_log_json_and_stop_on_sigterm() {
    let cp = ControlPlane::shared();
    let serving = cp
        .pki()
        .issue_aggregated_serving("vmm-apiserver", "binaries-test")
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let apiserver_env = [
        ("VMM_LISTEN_ADDR", listen.as_str()),
        ("VMM_TLS_CERT_FILE", serving.cert_path.to_str().unwrap()),
        (
            "VMM_TLS_PRIVATE_KEY_FILE",
            serving.key_path.to_str().unwrap(),
        ),
    ];
    let disk_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let disk_url = format!("http://{disk_addr}");
    let controller_env = [
        ("VMM_DISK_LISTEN_ADDR", disk_addr.as_str()),
        ("VMM_DISK_URL", disk_url.as_str()),
    ];
    for (binary, component, extra_env) in [
        ("vmm-controller", "controller", &controller_env[..]),
        ("vmm-apiserver", "apiserver", &apiserver_env[..]),
    ] {
        let port = free_port().unwrap();
        let log = cp.dir().join(format!("{binary}-binaries-test.log"));
        // Flags by environment, as the chart sets them.
        let mut server = ProcessBuilder::new(binary, workspace_binary(binary).unwrap());
        for (key, value) in extra_env {
            server = server.env(key, value);
        }
        let mut server = server
            .env("VMM_ADMIN_ADDR", format!("127.0.0.1:{port}"))
            .env("VMM_LOG_FORMAT", "json")
            .env("KUBECONFIG", cp.kubeconfig_path())
            .log_file(&log)
            .spawn()
            .unwrap();
        server
            .wait_ready(
                "/readyz",
                Duration::from_secs(60),
                Duration::from_millis(100),
                || {
                    Ok(TcpStream::connect(("127.0.0.1", port)).is_ok()
                        && get(port, "/readyz").0.contains(" 200 "))
                },
            )
            .unwrap();

        for path in ["/healthz", "/livez"] {
            assert_eq!(
                get(port, path),
                ("HTTP/1.0 200 OK".into(), "ok".into()),
                "{binary} {path}"
            );
        }
        let (status, metrics) = get(port, "/metrics");
        assert!(status.contains(" 200 "), "{binary} /metrics: {status}");
        assert!(
            metrics.contains(&format!(
                "vmm_build_info{{component=\"{component}\",version=\""
            )),
            "{binary} /metrics lacks vmm_build_info:\n{metrics}"
        );
        assert!(
            metrics.trim_end().ends_with("# EOF"),
            "not OpenMetrics:\n{metrics}"
        );

        let exit = server.stop().unwrap();
        assert!(exit.success(), "{binary} exited with {exit} on SIGTERM");

        let lines = std::fs::read_to_string(&log).unwrap();
        assert!(!lines.trim().is_empty(), "{binary} logged nothing");
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{binary} wrote a non-JSON log line ({e}): {line}"));
            assert!(event["level"].is_string(), "{line}");
        }
        assert!(
            lines.contains("shutting down"),
            "{binary} did not log its shutdown:\n{lines}"
        );
    }
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    for binary in ["vmm-controller", "vmm-apiserver"] {
        let out = std::process::Command::new(workspace_binary(binary).unwrap())
            .args(["--log-format", "xml"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{binary}: {stderr}");
        assert!(
            stderr.contains("invalid value 'xml' for '--log-format"),
            "{binary}: {stderr}"
        );
        assert!(
            stderr.contains("[possible values: text, json]"),
            "{binary}: {stderr}"
        );
    }
}
