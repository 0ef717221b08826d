//! Images without a shell as steps: a command run directly, the image's own
//! entrypoint, and the Baton image itself — exit codes, logs and `$BATON_OUTPUT`
//! collected with nothing in the image but the step's program.

#[allow(clippy::wildcard_imports)]
use super::*;

const NOSHELL: &str = "localhost/baton/noshell:latest";

#[tokio::test]
async fn steps_in_images_without_a_shell_keep_logs_exit_codes_and_outputs() {
    in_namespace("job-shell-less", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        apply(&ns, &job("bare", "pool=e2e", serde_json::json!([
            { "name": "direct", "image": NOSHELL, "command": ["/report", "hello"], "args": ["world"],
              "env": [{ "name": "REPORT_KEY", "value": "direct" }] },
            { "name": "own", "image": NOSHELL, "env": [{ "name": "REPORT_KEY", "value": "own" }] },
            { "name": "baton", "image": crate::support::BATON_IMAGE, "command": ["/usr/local/bin/baton", "--version"] },
            { "name": "missing", "image": NOSHELL, "command": ["/no-such-program"], "allowFailure": true },
        ]))?)
        .await?;

        let j = wait_for(&jobs(&ns), "bare", phase_is(JobPhase::Succeeded), 120).await?;
        let st = j.status.context("status")?;
        ensure!(
            st.outputs.get("direct").map(String::as_str) == Some("hello-world"),
            "outputs of a command run without a shell: {:?}",
            st.outputs
        );
        ensure!(
            st.outputs.get("own").map(String::as_str) == Some("from-entrypoint"),
            "outputs of the image's own entrypoint: {:?}",
            st.outputs
        );
        let missing = st.steps.iter().find(|x| x.name == "missing").context("missing")?;
        ensure!(
            missing.phase == StepPhase::Failed && missing.exit_code == Some(127),
            "{missing:?}"
        );

        let reader = sa_token(&ns, "reader", true).await?;
        for (step, want) in [
            ("direct", "report: hello world\n"),
            ("own", "report: from-entrypoint\n"),
            ("baton", "baton "),
            ("missing", "cannot run /no-such-program"),
        ] {
            let (code, body) = read_log(&s.ctl.url, &ns.name, "bare", step, Some(&reader)).await?;
            ensure!(code == 200 && body.contains(want), "{step}: {code} {body:?}");
            ensure!(!body.contains("baton-outputs"), "{step}: the frame leaked: {body:?}");
        }
        Ok(())
    })
    .await;
}
