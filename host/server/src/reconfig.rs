//! etcd's strict reconfiguration checks (`--strict-reconfig-check`, on by
//! default): a membership change is refused up front when the cluster could
//! not carry it, rather than proposed and left to stall the cluster.
//!
//! "Started" members are those that have published their name, as in etcd;
//! "connected" ones are those this member has had a working peer connection
//! to for at least [`HEALTH_INTERVAL`].

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::membership::{Member, Membership};
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
    pub fn new(membership: &'a Membership) -> Self {
        ReconfigCheck {
            members: membership.table.list(),
            local_id: membership.local_id,
            activity: &membership.activity,
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
