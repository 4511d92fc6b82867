//! What the agent gateway's desktops are told (seed 03), checked event by event: each agent's
//! phone (alerting, off-hook, released), its conference (invited, in, out) and its state
//! (busy, ready) must follow one another as a desktop can follow them — a phone released that
//! was never called, a conference left that was never joined, `AgentState_Ready` with the
//! phone still up, an event about a conference the agent is not in — and by the end every
//! agent must have been told its phone is down and it is in no conference.

use std::collections::BTreeMap;

use crate::agent_gateway::events::{event_type as t, AgentEvent};
use crate::agent_gateway::AgentId;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phone {
    #[default]
    Idle,
    Alerting,
    Offhook,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Conf {
    #[default]
    None,
    Invited(u64),
    In(u64),
}

/// One desktop's view.
#[derive(Debug, Default, Clone, Copy)]
struct Desktop {
    phone: Phone,
    conf: Conf,
    busy: bool,
}

/// Every agent's desktop, as its events left it.
#[derive(Debug, Default)]
pub(super) struct Desktops {
    agents: BTreeMap<AgentId, Desktop>,
}

impl Desktops {
    /// The agent events since the last read, in order.
    pub(super) fn read(&mut self, events: &[(AgentId, AgentEvent)]) -> Result<(), String> {
        for (agent, event) in events {
            let desktop = self.agents.entry(*agent).or_default();
            apply(desktop, event).map_err(|e| {
                format!("agent {agent}: {} {}: {e}", event.event_type, event.content)
            })?;
        }
        Ok(())
    }

    /// Once everything has ended: no phone up, no conference, no invitation left.
    pub(super) fn all_told_ended(&self) -> Result<(), String> {
        for (agent, desktop) in &self.agents {
            if desktop.phone != Phone::Idle || desktop.conf != Conf::None || desktop.busy {
                return Err(format!("agent {agent}'s desktop was left with {desktop:?}"));
            }
        }
        Ok(())
    }
}

fn apply(desktop: &mut Desktop, event: &AgentEvent) -> Result<(), String> {
    let conf_id = event.content.get("confId").and_then(|c| c.as_u64());
    let in_it = |desktop: &Desktop| match (desktop.conf, conf_id) {
        (Conf::In(x), Some(y)) if x == y => Ok(()),
        (conf, _) => Err(format!("not in that conference ({conf:?})")),
    };
    match event.event_type {
        t::AGENT_STATE_BUSY => desktop.busy = true,
        t::AGENT_STATE_READY => {
            if desktop.phone != Phone::Idle || matches!(desktop.conf, Conf::In(_)) {
                return Err(format!("ready while {desktop:?}"));
            }
            desktop.busy = false;
            // An invitation answered no (or gone with its conference) ends in Ready.
            desktop.conf = Conf::None;
        }
        t::PHONE_ALERTING => {
            if desktop.phone != Phone::Idle {
                return Err(format!("the phone is already {:?}", desktop.phone));
            }
            desktop.phone = Phone::Alerting;
        }
        t::PHONE_OFFHOOK => {
            if desktop.phone != Phone::Alerting {
                return Err(format!("the phone was {:?}", desktop.phone));
            }
            desktop.phone = Phone::Offhook;
        }
        t::PHONE_RELEASE => {
            if desktop.phone == Phone::Idle {
                return Err("the phone had no call".into());
            }
            desktop.phone = Phone::Idle;
        }
        t::CONF_SELF_JOIN_RESULT => {
            if matches!(desktop.conf, Conf::In(_)) || desktop.phone != Phone::Offhook {
                return Err(format!("joined while {desktop:?}"));
            }
            desktop.conf = Conf::In(conf_id.ok_or("no confId")?);
        }
        t::CONF_REQUEST_SUCCESS
        | t::CONF_TIMEOUT
        | t::CONF_PRESIDENT_CHANGED
        | t::CONF_PARTICIPANT_CHANGED => in_it(desktop)?,
        t::CONF_REQUEST_FAILED if desktop.conf != Conf::None => {
            return Err(format!("failed while {desktop:?}"));
        }
        t::CONF_SELF_LEAVE_RESULT => {
            in_it(desktop)?;
            desktop.conf = Conf::None;
        }
        t::CONF_RINGING => {
            if matches!(desktop.conf, Conf::In(_)) {
                return Err(format!("invited while {desktop:?}"));
            }
            desktop.conf = Conf::Invited(conf_id.ok_or("no confId")?);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check fails where it should: ready with the phone still alerting, a phone
    /// off-hook that never rang, a conference left that was never joined, a desktop left with
    /// its phone up.
    #[test]
    fn the_desktop_check_finds_what_it_is_for() {
        let a = AgentId::new(1001).expect("an agent id");
        let mut desktops = Desktops::default();
        desktops
            .read(&[
                (a, AgentEvent::busy(a, 0)),
                (a, AgentEvent::phone_alerting(a, 0)),
            ])
            .unwrap();
        assert!(
            desktops.all_told_ended().is_err(),
            "the phone is still alerting"
        );
        assert!(desktops.read(&[(a, AgentEvent::ready(a, 0))]).is_err());

        let mut desktops = Desktops::default();
        assert!(desktops
            .read(&[(a, AgentEvent::phone_offhook(a, 0))])
            .is_err());
        let mut desktops = Desktops::default();
        assert!(desktops
            .read(&[(a, AgentEvent::conf_self_leave(a, 0, 7))])
            .is_err());

        let mut desktops = Desktops::default();
        desktops
            .read(&[
                (a, AgentEvent::busy(a, 0)),
                (a, AgentEvent::phone_alerting(a, 0)),
                (a, AgentEvent::phone_offhook(a, 0)),
                (a, AgentEvent::conf_self_join(a, 0, 7)),
                (a, AgentEvent::conf_request_success(a, 0, 7)),
                (
                    a,
                    AgentEvent::phone_release(
                        a,
                        0,
                        crate::agent_gateway::events::PhoneReleasedBy::Platform,
                    ),
                ),
                (a, AgentEvent::conf_self_leave(a, 0, 7)),
                (a, AgentEvent::ready(a, 0)),
            ])
            .unwrap();
        desktops.all_told_ended().unwrap();
    }
}
