//! Service steps as local processes: up once every declared port accepts a TCP
//! connection on loopback, where dependents reach them.

use std::time::Duration;

use tokio::net::TcpStream;

/// Where local services are reached.
pub const LOOPBACK: &str = "127.0.0.1";
/// Between two rounds of connection attempts.
const POLL: Duration = Duration::from_millis(100);
/// One connection attempt at most.
const CONNECT: Duration = Duration::from_secs(1);

/// Returns once each of `ports` accepts a connection on loopback (at once with
/// none). Waits for as long as it takes: the caller races it with the step's end.
pub async fn wait_listening(ports: &[u16]) {
    let mut open = vec![false; ports.len()];
    while !open.iter().all(|o| *o) {
        for (port, open) in ports.iter().zip(open.iter_mut()) {
            if !*open {
                let attempt = tokio::time::timeout(CONNECT, TcpStream::connect((LOOPBACK, *port)));
                *open = matches!(attempt.await, Ok(Ok(_)));
            }
        }
        if !open.iter().all(|o| *o) {
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_every_port_listens() {
        assert!(
            tokio::time::timeout(Duration::from_secs(1), wait_listening(&[]))
                .await
                .is_ok(),
            "no ports: up at once"
        );
        let first = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        // A port nobody listens on yet: bind, note, drop, and bind again later.
        let later = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        let later_port = later.local_addr().unwrap().port();
        drop(later);
        let ports = [first.local_addr().unwrap().port(), later_port];
        let waiting = tokio::spawn(async move { wait_listening(&ports).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "one port is still closed");
        let _listening = tokio::net::TcpListener::bind((LOOPBACK, later_port))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
