//! Two workers on a drawn forwarding state: frames, bursts, sweeps, a swap. (l4lb::fuzz::pipeline)
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| l4lb::fuzz::pipeline(data));
