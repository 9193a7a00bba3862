//! The control API's request parser. (l4lb::fuzz::control)
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| l4lb::fuzz::control(data));
