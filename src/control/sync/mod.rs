//! Flow sync between the boxes of a fleet (`[sync]`): each box sends its
//! peers the flows it tracks whose backend the tables would not choose now
//! (they started before a backend change), and installs what its peers send
//! in the table its workers consult when a flow is not theirs
//! (`balancer::synced`), so a flow the router moves between boxes keeps its
//! backend. The wire format: `wire.rs`.

pub mod wire;
