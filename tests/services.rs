//! Service steps over the local backend, with real processes on loopback: the
//! dependents start once the service listens, reach it at `$BATON_SERVICE_<NAME>`,
//! and it is stopped when they ended; a service that ends early fails the Job.
//! The service is a tiny Python TCP server (python3 is on every machine that
//! builds the cluster's images).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use baton::backend::LocalBackend;
use baton::crd::job::{JobPhase, StepPhase};
use support::*;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

const SERVER: &str = "import os,socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((os.environ['BATON_SERVICE_LISTEN'], int(sys.argv[1]))); s.listen()\n\
print('listening on', os.environ['BATON_SERVICE_LISTEN'], flush=True)\n\
while True:\n    c,_=s.accept(); c.sendall(b'pong'); c.close()\n";

const CLIENT: &str = "import os,socket,sys\n\
c=socket.create_connection((os.environ['BATON_SERVICE_DB'], int(sys.argv[1])))\n\
print('got', c.recv(16).decode())\n";

#[tokio::test]
async fn dependents_reach_a_service_that_is_stopped_when_they_end() {
    let root = Root::new("service");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let port = free_port().to_string();
    let spec = spec(&format!(
        r#"
steps:
  - name: db
    image: python
    service: true
    ports: [{{port: {port}}}]
    command: [python3, -c, {server:?}, "{port}"]
  - name: test
    image: python
    dependsOn: [db]
    command: [python3, -c, {client:?}, "{port}"]
  - name: again
    image: python
    dependsOn: [test]
    command: [python3, -c, {client:?}, "{port}"]
  - name: listen
    image: python
    dependsOn: [db]
    command: [python3, -c, "import os; print(os.environ.get('BATON_SERVICE_LISTEN', 'not a service: unset'))"]
"#,
        server = SERVER,
        client = CLIENT,
    ));
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Succeeded, "{:?}", report.steps);
    assert_eq!(rec.log("test"), "got pong\n");
    assert_eq!(
        rec.log("again"),
        "got pong\n",
        "still up for the second dependent"
    );
    assert_eq!(
        rec.log("db"),
        "listening on 127.0.0.1\n",
        "a local service listens on loopback; its log is kept like any step's"
    );
    assert_eq!(rec.log("listen"), "not a service: unset\n");
    assert_eq!(
        phase_and_reason(&report, "db"),
        (StepPhase::Succeeded, Some("ServiceStopped".into()))
    );
}

#[tokio::test]
async fn a_service_that_ends_early_fails_the_job_and_says_why() {
    let root = Root::new("service-early");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let port = free_port();
    let spec = spec(&format!(
        r#"
steps:
  - name: db
    image: busybox
    service: true
    ports: [{{port: {port}}}]
    script: echo crashing; exit 3
  - name: test
    image: busybox
    dependsOn: [db]
    script: echo never
"#
    ));
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Failed);
    let db = step(&report, "db");
    assert_eq!(db.reason.as_deref(), Some("ServiceExited"), "{db:?}");
    assert!(
        db.message.as_deref().unwrap_or("").contains("exit code 3"),
        "{db:?}"
    );
    assert_eq!(
        phase_and_reason(&report, "test"),
        (StepPhase::Skipped, Some("DependencyFailed".into()))
    );
}
