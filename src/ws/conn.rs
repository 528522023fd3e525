//! One WebSocket connection: the reader (this task) and the writer (a task of its own, the only
//! one that writes to the socket).
//!
//! Ordering and exactly-once: a subscription is registered with the hub *before* the log is read
//! for its replay, so every event is either in the replay, in the live queue, or both; the writer
//! passes each frame through a per-stream gate (highest seq delivered) that drops the second copy.
//!
//! A replay is a step of the writer's loop, not one long call: a page of the log read on the
//! blocking pool (never on a runtime thread), then written, which waits for the client to read it;
//! between two pages the writer looks at the reader's requests first. So one replay runs at a time
//! per connection, a later subscribe cancels it, and it starts after what the gate would drop anyway
//! (repeating `since: 0` re-reads nothing already sent). The live frames of a subscription wait in
//! its outbox until its replay is written, as the gate needs.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Role, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Subscription;
use super::gate::Gate;
use super::protocol::{Assembler, ClientOp, CloseCode, answer_to_close, close_for};
use super::{
    BYTES_SENT, DELIVERY_SECONDS, FRAMES_SENT, REPLAY_READ_EVENTS, REPLAYED_EVENTS,
    SLOW_CONSUMER_CLOSES, WsContext, frame,
};
use crate::domain::{Id, now_micros};
use crate::events::hub::{Outbox, Queued};
use crate::http::ErrorCode;
use crate::json::object;

type Io = TokioIo<Upgraded>;

/// How long the reader keeps listening for the client's close after the writer sent one.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Events read from the log per replay step.
const REPLAY_PAGE: usize = 256;
/// About how many bytes of live frames one write takes from the outbox. The rest stays queued,
/// where a lag (its own bound or the global budget) can drop it at once; a write blocked on a
/// stalled client holds no more than this.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// What the reader asks of the writer.
enum Control {
    /// A pre-encoded frame: pongs, answers to client messages, echoes.
    Send(Bytes),
    Subscribe(Subscription),
    Unsubscribe {
        project: Option<Id>,
    },
    /// Close with this code and reason, then stop.
    Close(CloseCode, String),
}

pub(super) async fn run(ctx: Arc<WsContext>, ws: WebSocket<Io>, subscription: Subscription) {
    let (read, write) = tokio::io::split(ws.into_inner());
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
    reader.set_auto_close(false);
    reader.set_auto_pong(true);
    let max_message = if ctx.config.echo {
        64 << 20
    } else {
        ctx.config.max_message_bytes
    };
    reader.set_max_message_size(max_message + 1);

    let outbox = Outbox::new(ctx.config.queue_bytes, ctx.hub.budget().clone());
    let member = ctx.hub.join(outbox.clone());
    let (control, controls) = mpsc::channel::<Control>(64);
    let missed_pongs = Arc::new(AtomicU32::new(0));
    let writer_done = CancellationToken::new();

    let writer = Writer {
        ctx: ctx.clone(),
        sink: write,
        outbox,
        member,
        gate: Gate::default(),
        last_written: subscription.since.unwrap_or_else(|| ctx.store.latest_seq()),
        missed_pongs: missed_pongs.clone(),
        replay: None,
    };
    if !ctx.config.echo {
        // The URL's subscription goes first; the reader cannot have sent anything yet.
        let _ = control.try_send(Control::Subscribe(subscription));
    }
    let done = writer_done.clone();
    let writer_task = tokio::spawn(async move {
        writer.run(controls).await;
        done.cancel();
    });

    let mut reading = Reading {
        ctx: &ctx,
        control: &control,
        assembler: Assembler::new(max_message),
    };
    reading.run(&mut reader, &writer_done, &missed_pongs).await;
    drop(control);
    let _ = writer_task.await;
    ctx.hub.leave(member);
}

/// The reader side: client messages in, control requests to the writer out.
struct Reading<'a> {
    ctx: &'a WsContext,
    control: &'a mpsc::Sender<Control>,
    assembler: Assembler,
}

impl Reading<'_> {
    async fn run(
        &mut self,
        reader: &mut fastwebsockets::WebSocketRead<ReadHalf<Io>>,
        writer_done: &CancellationToken,
        missed_pongs: &AtomicU32,
    ) {
        let control = self.control.clone();
        let mut obligated = move |f: Frame<'_>| {
            let bytes = frame::encode(f.opcode as u8, &f.payload);
            let control = control.clone();
            async move {
                control
                    .send(Control::Send(bytes))
                    .await
                    .map_err(|_| "the writer has stopped")
            }
        };
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let read = tokio::select! {
                read = reader.read_frame(&mut obligated) => read,
                () = writer_done.cancelled(), if grace.is_none() => {
                    // The writer closed: listen a little longer for the client's close, then stop.
                    grace = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    continue;
                }
                () = sleep_until(grace), if grace.is_some() => return,
            };
            let frame = match read {
                Ok(frame) => frame,
                Err(e) => {
                    if let Some((code, reason)) = close_for(&e) {
                        self.close(code, reason).await;
                    }
                    return;
                }
            };
            if grace.is_some() {
                if frame.opcode == OpCode::Close {
                    return;
                }
                continue;
            }
            match frame.opcode {
                OpCode::Close => {
                    let (code, reason) = answer_to_close(&frame.payload);
                    self.close(code, reason).await;
                    return;
                }
                OpCode::Pong => missed_pongs.store(0, Ordering::Relaxed),
                OpCode::Ping => {}
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    match self.assembler.push(frame.opcode, frame.fin, &frame.payload) {
                        Ok(Some((opcode, message))) => {
                            if !self.on_message(opcode, message).await {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err((code, reason)) => {
                            self.close(code, reason).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn close(&self, code: CloseCode, reason: &str) {
        let _ = self
            .control
            .send(Control::Close(code, reason.to_string()))
            .await;
    }

    /// Handles one complete message; false when the connection must end.
    async fn on_message(&self, opcode: OpCode, message: Vec<u8>) -> bool {
        if self.ctx.config.echo {
            let echoed = frame::encode(opcode as u8, &message);
            return self.control.send(Control::Send(echoed)).await.is_ok();
        }
        if opcode == OpCode::Binary {
            self.close(
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not accepted",
            )
            .await;
            return false;
        }
        let reply = match ClientOp::decode(&message) {
            Ok(op) => self.on_op(op),
            Err((code, message)) => Err(error_frame(code, &message)),
        };
        let sent = match reply {
            Ok(control) => self.control.send(control).await,
            Err(frame) => self.control.send(Control::Send(frame)).await,
        };
        sent.is_ok()
    }

    fn on_op(&self, op: ClientOp) -> Result<Control, Bytes> {
        match op {
            ClientOp::Subscribe { project_id, since } => {
                let project = self.project(project_id.as_deref())?;
                if let Some(since) = since {
                    super::check_since(&self.ctx.store, since).map_err(|message| {
                        error_frame(ErrorCode::InvalidField, &format!("since: {message}"))
                    })?;
                }
                Ok(Control::Subscribe(Subscription { project, since }))
            }
            ClientOp::Unsubscribe { project_id } => Ok(Control::Unsubscribe {
                project: self.project(project_id.as_deref())?,
            }),
            ClientOp::Ping => Ok(Control::Send(frame::text(br#"{"op":"pong"}"#))),
        }
    }

    /// A message's `project_id`: none, or a project that exists.
    fn project(&self, text: Option<&str>) -> Result<Option<Id>, Bytes> {
        let Some(text) = text else {
            return Ok(None);
        };
        let id = Id::parse(text).ok_or_else(|| {
            error_frame(
                ErrorCode::InvalidId,
                &format!("project_id `{text}` is not a UUID"),
            )
        })?;
        if self.ctx.store.summary(&id).is_none() {
            return Err(error_frame(
                ErrorCode::ProjectNotFound,
                &format!("project {id} not found"),
            ));
        }
        Ok(Some(id))
    }
}

fn error_frame(code: ErrorCode, message: &str) -> Bytes {
    let body = object(|o| {
        o.str("event_type", "error").object("data", |d| {
            d.str("code", code.as_str()).str("message", message);
        });
    });
    frame::text(&body)
}

#[cfg(feature = "fuzzing")]
/// The client-message parser and the close-frame validation: the entry point of the WebSocket
/// fuzzer. Bad input must give an error frame or a close code, never a panic.
#[doc(hidden)]
pub fn fuzz_client_input(bytes: &[u8]) {
    let _ = ClientOp::decode(bytes);
    let (code, _) = answer_to_close(bytes);
    assert!(code.valid_on_the_wire(), "close code {code:?}");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The writer side: the only code that writes to the socket.
struct Writer {
    ctx: Arc<WsContext>,
    sink: WriteHalf<Io>,
    outbox: Arc<Outbox>,
    member: u64,
    /// What the subscriptions want, and what was written of it.
    gate: Gate,
    /// The seq of the last event frame written: what a client resumes from.
    last_written: u64,
    missed_pongs: Arc<AtomicU32>,
    /// The replay under way, if any.
    replay: Option<Replay>,
}

/// A subscription's replay from the log, one page per step of the writer's loop.
struct Replay {
    project: Option<Id>,
    /// The seq of the last event read.
    cursor: u64,
}

/// Why the writer stopped writing.
enum Stop {
    /// A close frame with this code and reason is sent.
    Close(CloseCode, String),
    /// The socket is unusable: nothing more can be sent.
    Gone,
}

impl Writer {
    async fn run(mut self, mut controls: mpsc::Receiver<Control>) {
        let period = self.ctx.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let shutdown = self.ctx.shutdown.clone();
        let stop = loop {
            let replaying = self.replay.is_some();
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    Err(Stop::Close(CloseCode::GOING_AWAY, format!("server shutting down; resume since={}", self.last_written)))
                }
                control = controls.recv() => match control {
                    Some(control) => self.on_control(control).await,
                    None => Err(Stop::Gone),
                },
                // A replay goes before live frames (the gate needs it) and pings.
                () = std::future::ready(()), if replaying => self.replay_step().await,
                () = self.outbox.wait(), if !replaying => self.deliver_live().await,
                _ = ping.tick() => self.heartbeat().await,
            };
            if let Err(stop) = step {
                break stop;
            }
        };
        // A lagged client whose last write never completed (it stopped reading) is closed for
        // falling behind too, though no close frame can reach it.
        let lagged = match &stop {
            Stop::Close(code, _) => *code == CloseCode::LAGGED,
            Stop::Gone => self.outbox.lagged(),
        };
        if lagged {
            metrics::counter!(SLOW_CONSUMER_CLOSES).increment(1);
            self.ctx.monitor.observe_slow_consumer_close();
        }
        if let Stop::Close(code, reason) = stop {
            let _ = self.write(vec![frame::close(code.0, &reason)]).await;
            let _ = self.sink.shutdown().await;
        }
    }

    async fn on_control(&mut self, control: Control) -> Result<(), Stop> {
        match control {
            Control::Send(bytes) => self.write(vec![bytes]).await,
            Control::Subscribe(subscription) => self.subscribe(subscription).await,
            Control::Unsubscribe { project } => {
                if self.replay.as_ref().is_some_and(|r| r.project == project) {
                    self.replay = None;
                }
                self.ctx.hub.unsubscribe(self.member, project);
                self.gate.unsubscribe(project);
                let ack = object(|o| {
                    o.str("op", "unsubscribed").opt_id("project_id", project);
                });
                self.write(vec![frame::text(&ack)]).await
            }
            Control::Close(code, reason) => Err(Stop::Close(code, reason)),
        }
    }

    fn pass(&mut self, seq: u64, project: Option<Id>) -> bool {
        self.gate.pass(seq, project)
    }

    /// Registers with the hub first, then replays from the log: no gap, and the gate drops the
    /// frames that arrive both ways. A replay under way is cancelled: for the same subscription
    /// the new one takes over; another subscription's is ended (unsubscribed, with where to
    /// resume), so that it never misses events silently.
    async fn subscribe(&mut self, subscription: Subscription) -> Result<(), Stop> {
        let Subscription { project, since } = subscription;
        if let Some(cancelled) = self.replay.take()
            && cancelled.project != project
        {
            let resume = self.gate.written(cancelled.project);
            self.ctx.hub.unsubscribe(self.member, cancelled.project);
            self.gate.unsubscribe(cancelled.project);
            let notice = object(|o| {
                o.str("op", "unsubscribed")
                    .opt_id("project_id", cancelled.project)
                    .str("reason", "replay cancelled by a later subscribe")
                    .u64("resume_since", resume);
            });
            self.write(vec![frame::text(&notice)]).await?;
        }
        self.ctx.hub.subscribe(self.member, project);
        self.gate.subscribe(project);
        let Some(since) = since else {
            return self.subscribed(project).await;
        };
        self.gate.resume_after(project, since);
        let oldest = self
            .ctx
            .store
            .oldest_seq()
            .map_err(|_| Stop::Close(CloseCode::INTERNAL_ERROR, "store unavailable".into()))?;
        // What the gate would drop is not read again.
        let mut cursor = self.gate.written(project).max(since);
        if oldest > 0 && cursor.saturating_add(1) < oldest {
            let notice = object(|o| {
                o.str("event_type", "resync_required")
                    .opt_id("project_id", project)
                    .object("data", |d| {
                        d.u64("oldest_seq", oldest).u64("requested_since", since);
                    });
            });
            self.write(vec![frame::text(&notice)]).await?;
            cursor = oldest - 1;
        }
        self.replay = Some(Replay { project, cursor });
        Ok(())
    }

    /// `{"op":"subscribed", project_id, latest_seq}`: every event after `latest_seq` reaches the
    /// subscription (a client that starts live resumes from there after a disconnect).
    async fn subscribed(&mut self, project: Option<Id>) -> Result<(), Stop> {
        let latest = self.ctx.store.latest_seq();
        let ack = object(|o| {
            o.str("op", "subscribed")
                .opt_id("project_id", project)
                .u64("latest_seq", latest);
        });
        self.write(vec![frame::text(&ack)]).await
    }

    /// One page of the replay under way: read on the blocking pool, then written.
    async fn replay_step(&mut self) -> Result<(), Stop> {
        let Some((project, cursor)) = self.replay.as_ref().map(|r| (r.project, r.cursor)) else {
            return Ok(());
        };
        let store = self.ctx.store.clone();
        let unavailable = || Stop::Close(CloseCode::INTERNAL_ERROR, "store unavailable".into());
        let (events, more) = tokio::task::spawn_blocking(move || {
            store.replay(project.as_ref(), cursor, REPLAY_PAGE)
        })
        .await
        .map_err(|_| unavailable())?
        .map_err(|_| unavailable())?;
        let mut frames = Vec::with_capacity(events.len());
        let mut last = None;
        let mut read = cursor;
        for event in &events {
            read = event.seq;
            if self.pass(event.seq, event.project_id) {
                frames.push(frame::text(event.json.as_bytes()));
                last = Some(event.seq);
            }
        }
        if let Some(replay) = self.replay.as_mut() {
            replay.cursor = read;
        }
        metrics::counter!(REPLAY_READ_EVENTS).increment(events.len() as u64);
        metrics::counter!(REPLAYED_EVENTS).increment(frames.len() as u64);
        if !frames.is_empty() {
            self.write(frames).await?;
        }
        if let Some(seq) = last {
            self.last_written = seq;
        }
        if !more {
            self.replay = None;
            return self.subscribed(project).await;
        }
        Ok(())
    }

    async fn deliver_live(&mut self) -> Result<(), Stop> {
        let (queued, lagged) = self.outbox.take(WRITE_BATCH_BYTES);
        let mut frames = Vec::with_capacity(queued.len());
        let mut delivered: Vec<&Queued> = Vec::with_capacity(queued.len());
        for item in &queued {
            if item.seq == 0 {
                // Ephemeral (task progress): wanted or not, never gated, never counted.
                if self.gate.wants(item.project) {
                    frames.push(item.frame.clone());
                }
            } else if self.pass(item.seq, item.project) {
                frames.push(item.frame.clone());
                delivered.push(item);
            }
        }
        let written = match frames.is_empty() {
            true => Ok(()),
            false => self.write(frames).await,
        };
        // Written or never to be: either way the taken frames no longer count.
        self.outbox.written();
        written?;
        if !delivered.is_empty() {
            let now = now_micros();
            let histogram = metrics::histogram!(DELIVERY_SECONDS);
            for item in &delivered {
                let micros = (now - item.committed_at).max(0) as u64;
                histogram.record(micros as f64 / 1e6);
                self.ctx.monitor.observe_delivery(micros);
            }
            if let Some(item) = delivered.last() {
                self.last_written = item.seq;
            }
        }
        if lagged {
            return Err(Stop::Close(
                CloseCode::LAGGED,
                format!("lagged; resume since={}", self.last_written),
            ));
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), Stop> {
        if self.missed_pongs.fetch_add(1, Ordering::Relaxed) >= 2 {
            return Err(Stop::Close(
                CloseCode::HEARTBEAT,
                "no pong to two pings".into(),
            ));
        }
        self.write(vec![frame::encode(frame::OP_PING, b"")]).await
    }

    /// Writes frames in as few syscalls as the kernel allows, within the write timeout.
    async fn write(&mut self, frames: Vec<Bytes>) -> Result<(), Stop> {
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let timeout = self.ctx.config.write_timeout;
        let mut writing = std::pin::pin!(write_all_vectored(&mut self.sink, &frames));
        // Most writes complete at once; only one that has to wait arms the timeout timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => tokio::time::timeout(timeout, writing).await,
        };
        match outcome {
            Ok(Ok(())) => {
                metrics::counter!(FRAMES_SENT).increment(frames.len() as u64);
                metrics::counter!(BYTES_SENT).increment(bytes as u64);
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(Stop::Gone),
        }
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    sink: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[index..]
            .iter()
            .take(128)
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { &f[offset..] } else { &f[..] }))
            .collect();
        let mut written = sink.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 && index < frames.len() {
            let left = frames[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    sink.flush().await
}
