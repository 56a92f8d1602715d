//! etcd's strict reconfiguration checks (`--strict-reconfig-check`, on by
//! default): a membership change is refused up front when the cluster could
//! not carry it, rather than proposed and left to stall the cluster.
//!
//! "Started" members are those that have published their name, as in etcd;
//! "connected" ones are those this member has had a working peer connection
//! to for at least [`HEALTH_INTERVAL`].

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::membership::Member;
use crate::peer::PeerActivity;

/// How long a peer connection must have been up to count, as etcd's.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The member list and connectivity as seen by the member asked.
pub struct ReconfigCheck<'a> {
    members: Vec<Member>,
    local_id: u64,
    activity: &'a PeerActivity,
    strict: bool,
    now: Instant,
}

fn started(m: &Member) -> bool {
    !m.name.is_empty()
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

impl<'a> ReconfigCheck<'a> {
    pub fn new(member: &'a super::Member) -> Self {
        let membership = member.membership();
        ReconfigCheck {
            members: membership.table.list(),
            local_id: membership.local_id,
            activity: member.activity(),
            strict: membership.strict_reconfig,
            now: Instant::now(),
        }
    }

    fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    fn connected(&self, id: u64) -> bool {
        id == self.local_id
            || self
                .activity
                .active_since(id)
                .is_some_and(|since| since + HEALTH_INTERVAL < self.now)
    }

    /// `MemberAdd`: a new voter must leave enough started voters for a
    /// quorum, and this member must have been connected to every voter.
    pub fn may_add(&self, learner: bool) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        if !learner {
            let voters = self.voters().count() + 1;
            let started = self.voters().filter(|m| started(m)).count();
            // Adding a second member to a one-member cluster is how a
            // cluster is grown back from a backup: allowed.
            let growing_single = started == 1 && voters == 2;
            if !growing_single && started < quorum(voters) {
                return Err(Error::NotEnoughStartedMembers);
            }
        }
        if !self.voters().all(|m| self.connected(m.id)) {
            return Err(Error::Unhealthy);
        }
        Ok(())
    }

    /// `MemberRemove`: the voters left must include a started quorum, and
    /// removing a member this one reaches must not leave fewer connected
    /// voters than a quorum. A learner, or a voter that is down, goes freely.
    pub fn may_remove(&self, id: u64) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        if self.members.iter().any(|m| m.id == id && m.is_learner) {
            return Ok(());
        }
        let remaining: Vec<&Member> = self.voters().filter(|m| m.id != id).collect();
        let started = remaining.iter().filter(|m| started(m)).count();
        if started < quorum(remaining.len()) {
            return Err(Error::NotEnoughStartedMembers);
        }
        if id != self.local_id && self.activity.active_since(id).is_none() {
            return Ok(());
        }
        let voters = self.voters().count();
        let active = self.voters().filter(|m| self.connected(m.id)).count();
        if active.saturating_sub(1) < 1 + voters.saturating_sub(1) / 2 {
            return Err(Error::Unhealthy);
        }
        Ok(())
    }

    /// `MemberPromote` of a learner already found in sync: counted as a
    /// started voter, it must complete a started quorum.
    pub fn may_promote(&self) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        let voters = self.voters().count() + 1;
        let started = self.voters().filter(|m| started(m)).count() + 1;
        if started < quorum(voters) {
            return Err(Error::NotEnoughStartedMembers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: u64 = 1;

    /// Name, members, long connected, recently connected, adding a learner, outcome.
    type AddCase = (&'static str, Vec<Member>, &'static [u64], &'static [u64], bool, &'static str);
    /// Name, members, connected, member removed, outcome.
    type RemoveCase = (&'static str, Vec<Member>, &'static [u64], u64, &'static str);

    /// A member: `started` ones have published their name.
    fn member(id: u64, started: bool, is_learner: bool) -> Member {
        Member {
            id,
            name: if started { format!("m{id}") } else { String::new() },
            peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
            client_urls: Vec::new(),
            is_learner,
        }
    }

    fn voter(id: u64) -> Member {
        member(id, true, false)
    }

    /// The check as member [`LOCAL`] makes it, connected (for longer than
    /// [`HEALTH_INTERVAL`]) to `connected` and, for less long, to `recent`.
    fn check<'a>(members: Vec<Member>, activity: &'a PeerActivity, connected: &[u64], recent: &[u64]) -> ReconfigCheck<'a> {
        for id in connected.iter().chain(recent) {
            activity.activate(*id);
        }
        let mut check = ReconfigCheck {
            members,
            local_id: LOCAL,
            activity,
            strict: true,
            now: Instant::now() + HEALTH_INTERVAL + Duration::from_secs(1),
        };
        if !recent.is_empty() {
            // Those connected just now have not been up long enough.
            check.now = Instant::now();
        }
        check
    }

    fn outcome(result: Result<()>) -> &'static str {
        match result {
            Ok(()) => "ok",
            Err(Error::NotEnoughStartedMembers) => "not enough started",
            Err(Error::Unhealthy) => "unhealthy",
            Err(_) => "other error",
        }
    }

    #[test]
    fn adding_members() {
        let cases: Vec<AddCase> = vec![
            (
                "three started, all connected",
                vec![voter(1), voter(2), voter(3)],
                &[2, 3],
                &[],
                false,
                "ok",
            ),
            ("growing a single member", vec![voter(1)], &[], &[], false, "ok"),
            (
                "too few started for the new quorum",
                vec![voter(1), member(2, false, false), member(3, false, false)],
                &[2, 3],
                &[],
                false,
                "not enough started",
            ),
            (
                "a learner needs no started quorum",
                vec![voter(1), member(2, false, false), member(3, false, false)],
                &[2, 3],
                &[],
                true,
                "ok",
            ),
            (
                "a voter not connected",
                vec![voter(1), voter(2), voter(3)],
                &[2],
                &[],
                false,
                "unhealthy",
            ),
            (
                "a learner needs every voter connected",
                vec![voter(1), voter(2)],
                &[],
                &[],
                true,
                "unhealthy",
            ),
            (
                "connected too recently",
                vec![voter(1), voter(2), voter(3)],
                &[],
                &[2, 3],
                false,
                "unhealthy",
            ),
        ];
        for (name, members, connected, recent, learner, want) in cases {
            let activity = PeerActivity::default();
            let got = outcome(check(members, &activity, connected, recent).may_add(learner));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn removing_members() {
        let cases: Vec<RemoveCase> = vec![
            ("a connected voter of three", vec![voter(1), voter(2), voter(3)], &[2, 3], 2, "ok"),
            ("a voter that is down", vec![voter(1), voter(2), voter(3)], &[2], 3, "ok"),
            (
                "a connected voter while another is down",
                vec![voter(1), voter(2), voter(3)],
                &[2],
                2,
                "unhealthy",
            ),
            (
                "leaving too few started",
                vec![voter(1), voter(2), member(3, false, false)],
                &[2, 3],
                2,
                "not enough started",
            ),
            (
                "a learner goes freely",
                vec![voter(1), member(2, false, false), member(3, true, true)],
                &[],
                3,
                "ok",
            ),
        ];
        for (name, members, connected, id, want) in cases {
            let activity = PeerActivity::default();
            let got = outcome(check(members, &activity, connected, &[]).may_remove(id));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn promoting_learners() {
        let cases: Vec<(&str, Vec<Member>, &str)> = vec![
            ("to a single voter", vec![voter(1), member(2, true, true)], "ok"),
            (
                "to three started voters",
                vec![voter(1), voter(2), voter(3), member(4, true, true)],
                "ok",
            ),
            (
                "without a started quorum",
                vec![voter(1), member(2, false, false), member(3, false, false), member(4, true, true)],
                "not enough started",
            ),
        ];
        for (name, members, want) in cases {
            let activity = PeerActivity::default();
            let got = outcome(check(members, &activity, &[], &[]).may_promote());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn nothing_is_refused_unless_strict() {
        let activity = PeerActivity::default();
        let mut lax = check(
            vec![voter(1), member(2, false, false), member(3, false, false)],
            &activity,
            &[],
            &[],
        );
        lax.strict = false;
        assert_eq!(outcome(lax.may_add(false)), "ok");
        assert_eq!(outcome(lax.may_remove(LOCAL)), "ok");
        assert_eq!(outcome(lax.may_promote()), "ok");
        lax.strict = true;
        assert_eq!(outcome(lax.may_add(false)), "not enough started");
    }
}
