//! A TCP relay a test can cut or hold: cut, every connection through it is dropped and new ones
//! are refused until it is mended; held, connections stay open but no byte goes through either
//! way (a wedged server or network). It stands between one service and Redis (or the broker) so
//! that service alone loses it, while the rest of the machine's tests go on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Held,
    Cut,
}

/// A relay from a local port to `upstream`.
pub struct CutRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<watch::Sender<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutRelay {
    /// Relays 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let state = Arc::new(watch::Sender::new(State::Open));
        let watching = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watching.borrow() == State::Cut {
                    continue; // refused: dropped at once
                }
                tokio::spawn(relay(inbound, upstream, watching.subscribe()));
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    /// Keeps connections open but lets no byte through, either way.
    pub fn hold(&self) {
        self.state.send_replace(State::Held);
    }

    /// Lets connections (and the bytes held) through again.
    pub fn mend(&self) {
        self.state.send_replace(State::Open);
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.state.send_replace(State::Cut);
        self.accept.abort();
    }
}

async fn relay(inbound: TcpStream, upstream: SocketAddr, state: watch::Receiver<State>) {
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = pump(in_read, out_write, state.clone()) => {}
        _ = pump(out_read, in_write, state.clone()) => {}
    }
}

/// Copies one way, waiting while held; ends when either side closes or the relay is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let open = state.wait_for(|s| *s != State::Held).await.map(|s| *s);
        if !matches!(open, Ok(State::Open)) {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = state.wait_for(|s| *s == State::Cut) => return,
        };
        // Bytes read just before a hold are held too.
        if !matches!(
            state.wait_for(|s| *s != State::Held).await.map(|s| *s),
            Ok(State::Open)
        ) {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
