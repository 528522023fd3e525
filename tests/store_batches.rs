//! Model-based property test of the writer's group commit: commands are submitted many at a time,
//! without waiting, so the writer takes them into shared transactions, and refused commands (an
//! illegal transition, an unknown task) sit inside batches that commit. Every answer must be the
//! model's for that command in submission order, a refused command must leave nothing behind, and
//! afterwards the store must hold exactly the model's tasks with a gap-free event log and pass the
//! consistency check.

use std::collections::BTreeMap;

use flightdeck::domain::{AgentType, Id, TaskStatus, Vocabulary, task_transition};
use flightdeck::events::no_publisher;
use flightdeck::store::{Durability, Store, StoreConfig, StoreError, Task, TaskFilter, command};
use proptest::prelude::*;

/// One command of a round: a new task of the round's project, or a status change of a task
/// (index into the tasks created so far, possibly past their end: an unknown task).
#[derive(Debug, Clone)]
enum Op {
    Create,
    Set { task: usize, status: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        // Pending, working, completed or cancelled: failures would start retry timers, which this
        // test leaves to the store model test.
        3 => (0usize..40, prop::sample::select(vec![0usize, 1, 2, 4]))
            .prop_map(|(task, status)| Op::Set { task, status }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn batched_commands_answer_as_if_applied_one_by_one(
        rounds in prop::collection::vec(prop::collection::vec(op(), 1..40), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        let store = Store::open(&config, no_publisher()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let project = store
            .write_blocking(command::CreateProject {
                name: "batches".into(),
                description: None,
            })
            .unwrap();
        let mut events = 1u64;
        // The model: each task's status, in creation order.
        let mut tasks: Vec<Id> = Vec::new();
        let mut status: BTreeMap<Id, TaskStatus> = BTreeMap::new();
        let unknown = Id([0xee; 16]);
        for round in &rounds {
            // The ids a round's status changes name are fixed before it is submitted.
            let targets: Vec<Option<Id>> = round
                .iter()
                .map(|op| match op {
                    Op::Create => None,
                    Op::Set { task, .. } => tasks.get(*task).copied(),
                })
                .collect();
            // Every write is submitted on its first poll, in order, before any answer is awaited.
            let replies: Vec<Result<Task, StoreError>> = runtime.block_on(async {
                type Answer<'a> =
                    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Task, StoreError>> + 'a>>;
                let mut futures: Vec<Answer<'_>> = round
                    .iter()
                    .map(|op| -> Answer<'_> {
                        match op {
                            Op::Create => Box::pin(store.write(command::CreateTask {
                                project_id: project.id,
                                agent_type: AgentType::CODER,
                                instructions: "x".into(),
                                context_ids: Vec::new(),
                                priority: 3,
                            })),
                            Op::Set { task, status } => Box::pin(store.write(command::SetTaskStatus {
                                task_id: tasks.get(*task).copied().unwrap_or(unknown),
                                status: TaskStatus::ALL[*status],
                                output: None,
                                error_message: None,
                                lease_id: None,
                            })),
                        }
                    })
                    .collect();
                // Poll each once (that submits it), then await the ones not answered yet.
                let mut early = Vec::with_capacity(futures.len());
                for f in futures.iter_mut() {
                    early.push(match poll_once(f).await {
                        std::task::Poll::Ready(reply) => Some(reply),
                        std::task::Poll::Pending => None,
                    });
                }
                let mut replies = Vec::with_capacity(futures.len());
                for (f, answered) in futures.into_iter().zip(early) {
                    replies.push(match answered {
                        Some(reply) => reply,
                        None => f.await,
                    });
                }
                replies
            });
            for ((op, target), reply) in round.iter().zip(targets).zip(replies) {
                match op {
                    Op::Create => {
                        let Ok(t) = reply else {
                            panic!("create: {reply:?}")
                        };
                        prop_assert_eq!(t.status, TaskStatus::Pending);
                        tasks.push(t.id);
                        status.insert(t.id, TaskStatus::Pending);
                        events += 1;
                    }
                    Op::Set { status: to, .. } => {
                        let to = TaskStatus::ALL[*to];
                        let Some(id) = target else {
                            // Unknown at submission time (a task created later in the round does
                            // not count): refused.
                            prop_assert!(reply.is_err(), "unknown task accepted: {reply:?}");
                            continue;
                        };
                        let from = status[&id];
                        match (task_transition(from, to), reply) {
                            (Ok(_), Ok(t)) => {
                                prop_assert_eq!(t.status, to);
                                status.insert(id, to);
                                // The task's event, and the agent's when the task starts or
                                // stops working.
                                events += 1;
                                if to == TaskStatus::Working || from == TaskStatus::Working {
                                    events += 1;
                                }
                            }
                            (Err(_), Err(StoreError::Domain(_))) => {}
                            (want, got) => {
                                prop_assert!(false, "{from} -> {to}: model {want:?}, store {got:?}")
                            }
                        }
                    }
                }
            }
        }
        // The store holds the model's tasks, and nothing a refused command might have left.
        let page = store.project_tasks(&project.id, TaskFilter::default(), None, 1000).unwrap();
        let stored: Vec<(Id, TaskStatus)> = page.items.iter().map(|t| (t.id, t.status)).collect();
        let want: Vec<(Id, TaskStatus)> = tasks.iter().map(|id| (*id, status[id])).collect();
        prop_assert_eq!(stored, want);
        let (log, _) = store.events(None, 0, 100_000).unwrap();
        let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
        prop_assert_eq!(store.latest_seq(), events, "one event per change, none for refusals");
        let report = store.check().unwrap();
        prop_assert!(report.is_consistent(), "{report:?}");
        store.close();
    }
}

/// Polls a future once, so a write submits itself to the writer's queue.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}
