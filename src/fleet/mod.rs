//! Fleets (issue 26): many devices driven through one broker. `sim` runs
//! hollow agents by the thousand in one process, for load tests of the
//! fleet path; `rollout` is the controller that publishes a release to
//! devices in waves and follows their feedback.

pub mod controller;
pub mod rollout;
pub mod sim;

/// The name of simulated device `i`: `sim-0000`, `sim-0001`, … (the
/// prefix's last level, its berth instance and its MQTT client id).
pub fn sim_name(i: usize) -> String {
    format!("sim-{i:04}")
}
