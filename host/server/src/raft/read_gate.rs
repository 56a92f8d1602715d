//! Linearizable reads share ReadIndex rounds.
//!
//! Every reader takes a ticket; the Ready loop runs one ReadIndex round at a
//! time, covering every ticket taken before the round was sent, and
//! publishes the round's read index with the last ticket it covers. A
//! reader waits for a round that covers its ticket, so the index it uses
//! was confirmed by a quorum after it arrived. Only the first reader after
//! a round starts wakes the loop; the rest just wait, so a burst of reads
//! costs one wake-up and one heartbeat round however many readers it has
//! (etcd batches reads the same way). Nothing here grows with the number of
//! readers: there is no queue to bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

struct Counters {
    /// Tickets handed out so far (the last ticket's number).
    issued: AtomicU64,
    /// Set by the first reader not covered by a started round, cleared by
    /// the loop as it starts one: whether the loop has been woken for reads.
    signaled: AtomicBool,
}

/// The readers' side: cloned into every node handle.
#[derive(Clone)]
pub struct ReadTickets {
    counters: Arc<Counters>,
    /// (the last ticket the last answered round covers, its read index).
    answers: watch::Receiver<(u64, u64)>,
}

/// The loop's side. Dropping it (the node stopped) fails every waiter.
pub struct ReadRounds {
    counters: Arc<Counters>,
    answers: watch::Sender<(u64, u64)>,
}

pub fn read_gate() -> (ReadTickets, ReadRounds) {
    let counters = Arc::new(Counters {
        issued: AtomicU64::new(0),
        signaled: AtomicBool::new(false),
    });
    let (tx, rx) = watch::channel((0, 0));
    (
        ReadTickets {
            counters: counters.clone(),
            answers: rx,
        },
        ReadRounds { counters, answers: tx },
    )
}

/// A reader's place in line, and whether it must wake the loop.
pub struct Ticket {
    number: u64,
    answers: watch::Receiver<(u64, u64)>,
    pub wake_loop: bool,
}

impl ReadTickets {
    pub fn take(&self) -> Ticket {
        // Subscribed before the ticket is taken: no answer covering it can
        // be missed.
        let answers = self.answers.clone();
        let number = self.counters.issued.fetch_add(1, Ordering::SeqCst) + 1;
        // After the ticket: a round starting later clears the flag first and
        // then reads `issued`, so either it covers this ticket or this reader
        // sees the flag cleared and wakes the loop for the next round.
        let wake_loop = !self.counters.signaled.swap(true, Ordering::SeqCst);
        Ticket {
            number,
            answers,
            wake_loop,
        }
    }
}

impl Ticket {
    /// Waits for a round covering this ticket and returns its read index;
    /// `None` when the node stopped.
    pub async fn wait(mut self) -> Option<u64> {
        let number = self.number;
        let answer = self.answers.wait_for(|(covered, _)| *covered >= number).await.ok()?;
        Some(answer.1)
    }
}

impl ReadRounds {
    /// Starts a round, on the loop: returns the last ticket it covers, or
    /// `None` when no ticket came after `answered`, the last one answered.
    pub fn start_round(&self, answered: u64) -> Option<u64> {
        self.counters.signaled.store(false, Ordering::SeqCst);
        let covers = self.counters.issued.load(Ordering::SeqCst);
        (covers > answered).then_some(covers)
    }

    /// Publishes a round's read index to the tickets it covers.
    pub fn answer(&self, covers: u64, index: u64) {
        self.answers.send_replace((covers, index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_round_answers_exactly_the_tickets_taken_before_it() {
        let (tickets, rounds) = read_gate();
        let first = tickets.take();
        let second = tickets.take();
        assert!(first.wake_loop);
        assert!(!second.wake_loop, "one wake-up per round");
        let covers = rounds.start_round(0).expect("tickets to cover");
        assert_eq!(covers, 2);
        let late = tickets.take();
        assert!(late.wake_loop, "a ticket after the round started wakes the loop again");
        rounds.answer(covers, 7);
        assert_eq!(first.wait().await, Some(7));
        assert_eq!(second.wait().await, Some(7));
        let late_wait = tokio::spawn(late.wait());
        tokio::task::yield_now().await;
        assert!(!late_wait.is_finished(), "the first round does not cover a later ticket");
        assert_eq!(rounds.start_round(covers), Some(3));
        assert_eq!(rounds.start_round(3), None, "nothing new to cover");
        rounds.answer(3, 9);
        assert_eq!(late_wait.await.ok().flatten(), Some(9));
    }

    #[tokio::test]
    async fn a_stopped_node_fails_waiting_readers() {
        let (tickets, rounds) = read_gate();
        let ticket = tickets.take();
        drop(rounds);
        assert_eq!(ticket.wait().await, None);
    }
}
